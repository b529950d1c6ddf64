"""Crash tests at every write step (issue 17).

An operation runs in a subprocess with ``REVSEARCH_CRASH_AT=N`` (:func:`revsearch.safety.crash_point`):
the process stops dead (``os._exit``: no ``finally``, no clean-up, as ``kill -9``) at its N-th write
step. For N = 1, 2, ... until the operation completes, the test checks that what is on disk is
a committed state (the old or the new one), and that running the operation again finishes the
job with nothing lost or doubled and no stray file left.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from revsearch import Index
from revsearch.embedding import Embedder
from revsearch.safety import CRASH_ENV, CRASH_EXIT_CODE

from conftest import write_photos

REPO = Path(__file__).resolve().parents[1]
MAX_STEPS = 400


def _run(code: str, n: int | None, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if n is not None:
        env[CRASH_ENV] = str(n)
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def _every_step(code: str, cwd: Path, reset, check) -> int:
    """Run ``code`` crashing at step 1, 2, ... until it completes; ``reset()`` before, ``check(n)`` after each."""
    for n in range(1, MAX_STEPS):
        reset()
        proc = _run(code, n, cwd)
        if proc.returncode == 0:
            check(n, completed=True)
            return n - 1
        assert proc.returncode == CRASH_EXIT_CODE, proc.stderr[-2000:]
        check(n, completed=False)
    raise AssertionError("the operation never completed")


def _index_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name != ".revsearch.lock"}


def _named(index: Index) -> set[str]:
    m = index.manifest
    names = {"revsearch.json"} | {n for s in m["shards"] for n in s["files"].values()}
    for section in ("ann", "ann_stale"):
        if (m.get(section) or {}).get("file"):
            names.add(m[section]["file"])
    return names


def _spec() -> dict:
    return Embedder("resnet50", weights=None).spec  # no model is loaded: nothing is embedded here


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture()
def indexed(tmp_path: Path) -> dict:
    """A dataset of 6 photos and an index of it whose vectors are known (no model runs)."""
    ds = tmp_path / "ds"
    files = write_photos(ds, 6)
    rel = [p.relative_to(ds).as_posix() for p in files]
    x = _unit(np.random.default_rng(0).standard_normal((len(rel), 2048)))
    vdir = tmp_path / "v"
    Index.from_vectors(vdir, x, rel, _spec(), dataset_dir=ds)
    Index.open(vdir).update(ds, progress=False)  # learns the files' sizes and hashes (nothing embedded)
    digest = {hashlib.sha256((ds / r).read_bytes()).hexdigest(): x[i] for i, r in enumerate(rel)}
    return {"ds": ds, "vdir": vdir, "rel": rel, "x": x, "by_content": digest}


def _snapshot_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_index_update_killed_at_every_step_recovers(indexed: dict, tmp_path: Path) -> None:
    """An update that renames, copies and deletes files (vectors reused, no model), one shard per
    image, killed at each write step; the next update finishes it: every file once, with its vector."""
    ds, vdir = indexed["ds"], indexed["vdir"]
    pristine_ds, pristine_v = tmp_path / "ds0", tmp_path / "v0"
    shutil.copytree(ds, pristine_ds)
    shutil.copytree(vdir, pristine_v)

    def reset() -> None:
        for src, dst in ((pristine_ds, ds), (pristine_v, vdir)):
            shutil.rmtree(dst)
            shutil.copytree(src, dst)
        (ds / "img0000.jpg").rename(ds / "renamed.jpg")
        shutil.copy2(ds / "img0001.jpg", ds / "copy.jpg")
        (ds / "img0002.jpg").unlink()

    code = (
        "from revsearch import Index\n"
        f"Index.open({str(vdir)!r}).update({str(ds)!r}, progress=False, prune=True, checkpoint_every=1)\n"
    )
    before = Index.open(pristine_v)
    expected = sorted(p.relative_to(ds).as_posix() for p in ds.rglob("*.jpg"))

    def check(n: int, completed: bool) -> None:
        index = Index.open(vdir)  # a committed state: the old one, or a checkpoint of the new one
        assert len(set(index.paths)) == len(index.paths)  # nothing doubled
        if not completed:
            report = Index.open(vdir).update(ds, progress=False, prune=True)  # the next run finishes the job
            assert report.embedded == 0, f"a vector was lost (embedded again) after a crash at step {n}"
            index = Index.open(vdir)
        assert sorted(index.paths) == sorted(p.relative_to(ds).as_posix() for p in ds.glob("*.jpg"))
        for row, rel in enumerate(index.paths):  # each file's vector is the one of its content
            want = indexed["by_content"][hashlib.sha256((ds / rel).read_bytes()).hexdigest()]
            np.testing.assert_allclose(index.vectors[row], want, atol=1e-6)
        assert index.complete
        assert _index_files(vdir) == _named(index), f"stray files after a crash at step {n}"

    steps = _every_step(code, tmp_path, reset, check)
    assert steps >= 10  # shards, checkpoints, the merge, housekeeping: every one was a crash point
    assert len(before) == 6 and expected  # the fixture was what the test thinks


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_ann_build_killed_at_every_step_recovers(tmp_path: Path, kind: str) -> None:
    pytest.importorskip("faiss")
    x = _unit(np.random.default_rng(1).standard_normal((600, 32)))
    spec = {"model": "synthetic", "preprocessing": "none", "dim": 32, "weights": "none", "precision": "float32"}
    vdir = tmp_path / "v"
    pristine = tmp_path / "v0"
    Index.from_vectors(pristine, x, [f"{i:04d}.jpg" for i in range(len(x))], spec)
    extra = ", nlist=8, pq_bytes=8, train_size=600" if kind == "ivfpq" else ""
    code = (
        "from revsearch.ann import build_ann\n"
        f"build_ann({str(vdir)!r}, kind={kind!r}, target_recall=None, progress=False{extra})\n"
    )

    def reset() -> None:
        if vdir.exists():
            shutil.rmtree(vdir)
        shutil.copytree(pristine, vdir)

    def check(n: int, completed: bool) -> None:
        index = Index.open(vdir)
        assert len(index) == len(x)
        np.testing.assert_array_equal(index.vectors, x)  # the vectors are never touched
        if not completed:
            ann = index.manifest.get("ann")
            assert ann is None or (vdir / ann["file"]).is_file()  # either no ANN, or a complete one
            proc = _run(code, None, tmp_path)  # the next run builds it
            assert proc.returncode == 0, proc.stderr[-2000:]
            index = Index.open(vdir)
        assert index.manifest["ann"]["kind"] == kind
        got = index.search_vectors(x[:3], 5)
        assert [m[0].row for m in got] == [0, 1, 2]
        assert _index_files(vdir) == _named(index), f"stray files after a crash at step {n}"

    assert _every_step(code, tmp_path, reset, check) >= 3
