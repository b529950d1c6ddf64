"""Crash tests at every write step (issue 17).

An operation runs in a subprocess with ``REVSEARCH_CRASH_AT=N`` (:func:`revsearch.core.safety.crash_point`):
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
from revsearch.models.embedding import Embedder
from revsearch.core.safety import CRASH_ENV, CRASH_EXIT_CODE

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
    return {"revsearch.json"} | index.manifest.file_names()  # shards and every section (ANN, stored augmentation)


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
        "from revsearch.retrieval.ann import build_ann\n"
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


def _dup_collection(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """6 files in two subfolders, three pairs of planted duplicate vectors (synthetic spec)."""
    ds = tmp_path / "ds"
    write_photos(ds / "a", 3, start=0)
    write_photos(ds / "b", 3, start=3)
    rel = sorted(p.relative_to(ds).as_posix() for p in ds.rglob("*.jpg"))
    rng = np.random.default_rng(2)
    base = _unit(rng.standard_normal((3, 32)))
    x = _unit(base[[0, 1, 2, 0, 1, 2]] + 0.001 * rng.standard_normal((6, 32)))
    spec = {"model": "synthetic", "preprocessing": "none", "dim": 32, "weights": "none", "precision": "float32"}
    Index.from_vectors(tmp_path / "v", x, rel, spec, dataset_dir=ds)
    return ds, tmp_path / "v", _snapshot_tree(ds)


MOVE = (
    "from revsearch.duplicates import find_duplicates, move_duplicates\n"
    "move_duplicates(find_duplicates({v!r}, 0.9, mode='similar'), {dest!r}, log={log!r}, update_index=False)\n"
)
UNDO = (
    "import sys\n"
    "from revsearch.duplicates import undo_moves\n"
    "r = undo_moves({log!r}, dataset_dir={ds!r}, update_index=False)\n"
    "sys.exit(1 if r.skipped else 0)\n"
)


@pytest.mark.slow
def test_move_killed_at_every_step_then_undo_puts_everything_back(tmp_path: Path) -> None:
    ds, vdir, before = _dup_collection(tmp_path)
    dest, log = tmp_path / "dups", tmp_path / "dups" / "moves.csv"
    pristine = tmp_path / "ds0"
    shutil.copytree(ds, pristine)
    move = MOVE.format(v=str(vdir), dest=str(dest), log=str(log))
    undo = UNDO.format(log=str(log), ds=str(ds))

    def reset() -> None:
        shutil.rmtree(ds)
        shutil.copytree(pristine, ds)
        shutil.rmtree(dest, ignore_errors=True)

    def check(n: int, completed: bool) -> None:
        moved_now = {k for k in before if not (ds / k).exists()}
        assert all((ds / k).read_bytes() == v for k, v in before.items() if k not in moved_now)
        for _ in range(2):  # undo, then undo again: harmless
            proc = _run(undo, None, tmp_path)
            assert proc.returncode == 0, f"step {n}: {proc.stderr[-2000:]}"
            assert _snapshot_tree(ds) == before  # every file back, byte for byte, once
        left = [p for p in dest.rglob("*") if p.is_file() and p != log] if dest.exists() else []
        assert left == [], f"step {n}: {left} left in the move-to folder"

    assert _every_step(move, tmp_path, reset, check) >= 6  # log line + link + unlink for each of 3 moves


@pytest.mark.slow
def test_undo_killed_at_every_step_then_undo_again_finishes(tmp_path: Path) -> None:
    ds, vdir, before = _dup_collection(tmp_path)
    dest, log = tmp_path / "dups", tmp_path / "dups" / "moves.csv"
    assert _run(MOVE.format(v=str(vdir), dest=str(dest), log=str(log)), None, tmp_path).returncode == 0
    moved_ds, moved_dest = tmp_path / "ds-moved", tmp_path / "dest-moved"
    shutil.copytree(ds, moved_ds)
    shutil.copytree(dest, moved_dest)
    assert _snapshot_tree(ds) != before
    undo = UNDO.format(log=str(log), ds=str(ds))

    def reset() -> None:
        for src, dst in ((moved_ds, ds), (moved_dest, dest)):
            shutil.rmtree(dst)
            shutil.copytree(src, dst)

    def check(n: int, completed: bool) -> None:
        if not completed:
            proc = _run(undo, None, tmp_path)
            assert proc.returncode == 0, f"step {n}: {proc.stderr[-2000:]}"
        assert _snapshot_tree(ds) == before
        assert [p for p in dest.rglob("*") if p.is_file() and p != log] == []

    assert _every_step(undo, tmp_path, reset, check) >= 6
