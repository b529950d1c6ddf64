"""The storage layer (issue 8): only the index's own files are deleted, nothing is read from outside
its folder, a wrong dataset folder cannot wipe an index, a full disk or a concurrent update loses
nothing, damaged folders give one-line errors, and indexes of format 1 open and migrate."""

from __future__ import annotations

import errno
import gc
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_photos

import revsearch.storage.indexing as indexing
from revsearch import cli
from revsearch.storage import store
from revsearch.models.embedding import Embedder
from revsearch.core.errors import (
    IndexDamagedError,
    IndexFormatError,
    StorageFullError,
    UpdateRefusedError,
)
from revsearch import Index
from revsearch.storage.store import MANIFEST_NAME
from revsearch.retrieval.exact import topk_cosine

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


def snapshot_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != store.LOCK_NAME}


def one_line_error(capsys: pytest.CaptureFixture, argv: list[str], *contains: str) -> str:
    assert cli.main([str(a) for a in argv]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("revsearch: warning:")]
    assert len(lines) == 1 and lines[0].startswith("revsearch: error: ") and "Traceback" not in err, err
    for c in contains:
        assert c in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def built12(tmp_path_factory: pytest.TempPathFactory, resnet_random: Embedder) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("store")
    write_photos(base / "ds", 12)
    Index.build(base / "ds", base / "vec", resnet_random, progress=False)
    return base / "ds", base / "vec"


@pytest.fixture()
def work(built12: tuple[Path, Path], tmp_path: Path, resnet_random: Embedder) -> tuple[Path, Path]:
    ds, vec = tmp_path / "ds", tmp_path / "vec"
    shutil.copytree(built12[0], ds)
    shutil.copytree(built12[1], vec)
    Index.build(ds, vec, resnet_random, progress=False)  # record the copy's dataset folder
    return ds, vec


# ---------------------------------------------------------------- 1. housekeeping deletes only its own files


def test_housekeeping_never_deletes_files_it_did_not_write(work: tuple[Path, Path], resnet_random: Embedder) -> None:
    ds, vec = work
    theirs = {
        "paths-notes.txt": b"my notes\n",
        ".draft.tmp": b"draft",
        "vectors-holiday.jpg": (ds / "img0000.jpg").read_bytes(),
        "rows-budget.npy": b"not ours",
        ".vectors-x.npy.tmp": b"",
        "ann-old.faiss": b"someone else's",
    }
    for name, data in theirs.items():
        (vec / name).write_bytes(data)
    (ds / "img0003.jpg").unlink()  # a shard is rewritten, and the old one deleted
    write_photos(ds, 2, start=50)
    idx, report = Index.build(ds, vec, resnet_random, progress=False, checkpoint_every=1, batch_size=1)
    assert report.removed == ["img0003.jpg"] and len(report.added) == 2
    assert all((vec / n).read_bytes() == d for n, d in theirs.items())
    named = {n for s in idx.manifest["shards"] for n in s["files"].values()} | set(idx.manifest["dba"]["files"].values())
    named |= set(idx.manifest.thumb_files)  # the duplicate verifier's thumbnails
    assert {p.name for p in vec.iterdir()} == named | set(theirs) | {MANIFEST_NAME, store.LOCK_NAME}


def test_index_in_the_dataset_folder_keeps_every_photo(tmp_path: Path, resnet_random: Embedder) -> None:
    """``revsearch index D D``: photos named like index files are indexed, never deleted."""
    d = tmp_path / "photos"
    write_photos(d, 3)
    write_photos(d, 2, start=3, prefix="vectors-")
    write_photos(d, 1, start=5, prefix="paths-", ext=".png")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    idx, _ = Index.build(d, d, resnet_random, progress=False)
    assert sorted(idx.paths) == sorted(before)
    (d / "img0001.jpg").unlink()
    del before["img0001.jpg"]
    idx, report = Index.build(d, d, resnet_random, progress=False)
    assert report.removed == ["img0001.jpg"] and sorted(idx.paths) == sorted(before)
    assert all((d / n).read_bytes() == b for n, b in before.items())
    assert cli.main(["index", str(d), str(d), "-q"]) == 0


# ---------------------------------------------------------------- 2. the wrong folder cannot wipe an index


def test_an_update_that_would_remove_every_row_is_refused(
    work: tuple[Path, Path], tmp_path: Path, resnet_random: Embedder, capsys: pytest.CaptureFixture
) -> None:
    ds, vec = work
    empty = tmp_path / "not-mounted-yet"
    empty.mkdir()
    before = snapshot_bytes(vec)
    with pytest.raises(UpdateRefusedError, match=r"12 indexed images would be removed.*Nothing was changed.*prune"):
        Index.build(empty, vec, resnet_random, progress=False)
    assert snapshot_bytes(vec) == before
    line = one_line_error(capsys, ["index", empty, vec, "-q"], "--prune", str(ds.resolve()))
    assert "0 images" in line
    assert snapshot_bytes(vec) == before
    # most of them: 8 of 12 gone is refused as well; 1 of 12 is an ordinary update
    for i in range(8):
        (ds / f"img{i:04d}.jpg").unlink()
    with pytest.raises(UpdateRefusedError, match="8 of the 12"):
        Index.build(ds, vec, resnet_random, progress=False)
    assert snapshot_bytes(vec) == before
    idx, report = Index.build(ds, vec, resnet_random, progress=False, prune=True)
    assert len(report.removed) == 8 and len(idx) == 4
    # confirmed: an explicit --prune empties it
    assert cli.main(["index", str(empty), str(vec), "--prune", "-q"]) == 0
    assert "0 vectors" in capsys.readouterr().out and len(Index.open(vec)) == 0


# ---------------------------------------------------------------- 3. file names that are not UTF-8


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="needs a file system that takes any bytes as a name")
def test_a_file_name_that_is_not_utf8_is_indexed_and_found(
    tmp_path: Path, resnet_random: Embedder, capsys: pytest.CaptureFixture
) -> None:
    ds = tmp_path / "ds"
    write_photos(ds, 3)
    odd = os.path.join(os.fsencode(ds), b"caf\xe9 \xff.jpg")  # Latin-1 bytes, as an old camera or zip leaves them
    shutil.copyfile(ds / "img0001.jpg", odd)
    os.utime(odd, ns=(1, 1))
    idx, report = Index.build(ds, tmp_path / "vec", resnet_random, progress=False)
    name = os.fsdecode(b"caf\xe9 \xff.jpg")
    assert len(idx) == 4 and name in idx.paths and not report.skipped
    m = idx.search_vectors(idx.vectors[idx.paths.index(name)], k=1)[0]
    assert m.relpath == name and m.path.is_file() and os.fsencode(m.path) == odd
    _, again = Index.build(ds, tmp_path / "vec", resnet_random, progress=False)
    assert again.embedded == 0 and len(again.unchanged) == 4
    assert cli.main(["search", os.fsdecode(odd), str(tmp_path / "vec"), "-k", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["relpath"] for r in out["results"]} >= {name}


# ---------------------------------------------------------------- 5. nothing is read from outside the folder


def test_a_manifest_naming_files_outside_the_folder_is_refused(work: tuple[Path, Path], tmp_path: Path) -> None:
    _, vec = work
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    manifest = json.loads((vec / MANIFEST_NAME).read_text())
    for f in manifest["shards"][0]["files"].values():  # a copy of the shard outside the folder
        shutil.copy(vec / f, outside / f)
    good = json.dumps(manifest)
    bad_tokens = [f"../elsewhere/{manifest['shards'][0]['token']}", "/etc/passwd", "a/b", ".."]
    for token in bad_tokens:
        m = json.loads(good)
        m["format_version"] = 1  # format 1 derives names from the token
        m.pop("store_id")
        m["shards"][0]["token"] = token
        (vec / MANIFEST_NAME).write_text(json.dumps(m))
        with pytest.raises(IndexFormatError, match="damaged.*token"):
            Index.open(vec)
    for kind in ("vectors", "rows", "paths"):
        m = json.loads(good)
        m["shards"][0]["files"][kind] = "../elsewhere/" + m["shards"][0]["files"][kind]
        (vec / MANIFEST_NAME).write_text(json.dumps(m))
        with pytest.raises(IndexFormatError, match="names the file"):
            Index.open(vec)
    m = json.loads(good)
    m["ann"] = {"file": "../../x.faiss", "kind": "hnsw", "count": 12}
    (vec / MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="names the file"):
        Index.open(vec)


@pytest.mark.parametrize("hostile", ["/etc/passwd", "../../../../etc/shadow", "a/../../b.jpg", ""])
def test_stored_paths_that_leave_the_dataset_folder_are_refused(
    work: tuple[Path, Path], hostile: str, capsys: pytest.CaptureFixture
) -> None:
    _, vec = work
    (paths_file,) = vec.glob("paths-*.txt")
    lines = paths_file.read_text().split("\n")
    lines[0] = hostile
    paths_file.write_text("\n".join(lines))
    idx = Index.open(vec)
    with pytest.raises(IndexDamagedError, match="damaged.*holds the path"):
        idx.search_vectors(idx.vectors[0], k=3)
    one_line_error(capsys, ["search", vec.parent / "ds" / "img0000.jpg", vec], "damaged", "revsearch index")


# ---------------------------------------------------------------- 8. one-line errors


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.pop("shards"), "'shards' is missing"),
        (lambda m: m.pop("spec"), "'spec' is missing"),
        (lambda m: m["spec"].update(dim="abc"), "'dim' is 'abc'"),
        (lambda m: m["shards"][0].update(count=-3), "count -3"),
        (lambda m: m.update(format_version="two"), "format_version"),
        (lambda m: m.update(store_id="../x"), "store_id"),
        ("list", "JSON list"),
    ],
)
def test_malformed_manifests_give_one_line_errors(
    work: tuple[Path, Path], edit, message: str, capsys: pytest.CaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    _, vec = work
    manifest = json.loads((vec / MANIFEST_NAME).read_text())
    if edit == "list":
        manifest = [manifest]
    else:
        edit(manifest)
    (vec / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match=message):
        Index.open(vec)
    for argv in (["info", vec], ["search", vec.parent / "ds" / "img0000.jpg", vec]):
        one_line_error(capsys, argv, message.split("'")[0] or "damaged")


def test_a_huge_k_returns_every_row_and_allocates_nothing_big(work: tuple[Path, Path], capsys) -> None:  # type: ignore[no-untyped-def]
    ds, vec = work
    idx = Index.open(vec)
    huge = 10**12
    got = idx.search_vectors(idx.vectors[:2], k=huge)
    assert [len(g) for g in got] == [12, 12]
    s, r = topk_cosine(idx.shards, idx.vectors[0], huge)
    assert r.shape == (1, 12) and sorted(r[0].tolist()) == list(range(12))
    assert cli.main(["search", str(ds / "img0004.jpg"), str(vec), "-k", str(huge)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 12 and lines[0].endswith("img0004.jpg")


def test_batch_size_zero_is_refused(work: tuple[Path, Path], resnet_random: Embedder, capsys) -> None:  # type: ignore[no-untyped-def]
    ds, vec = work
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        Index.build(ds, vec, resnet_random, batch_size=0, progress=False)
    with pytest.raises(SystemExit) as e:
        cli.main(["index", str(ds), str(vec), "--batch-size", "0"])
    assert e.value.code == cli.EXIT_USAGE
    assert "--batch-size: must be at least 1, not 0" in capsys.readouterr().err


def test_an_approximate_index_of_another_dimension_falls_back_to_exact(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    faiss = pytest.importorskip("faiss")
    from revsearch.retrieval import ann

    x = np.random.default_rng(0).standard_normal((300, 32)).astype(np.float32)
    spec = {"model": "test", "preprocessing": "none", "dim": 32, "weights": "none", "precision": "float32"}
    idx = Index.from_vectors(tmp_path / "v", x, [f"{i}.jpg" for i in range(300)], spec)
    meta = ann.build_ann(idx, kind="hnsw", progress=False)
    other = faiss.IndexHNSWFlat(16, 8)
    other.add(np.random.default_rng(1).standard_normal((300, 16)).astype(np.float32))
    faiss.write_index(other, str(tmp_path / "v" / meta["file"]))  # a hand-copied file of another index
    ann.clear_cache()
    q = np.asarray(idx.vectors[:3])
    with caplog.at_level("WARNING", logger="revsearch.retrieval.ann"):
        s, r = Index.open(tmp_path / "v").topk(q, 5)
    assert (r == idx.topk(q, 5, exact=True)[1]).all()
    assert "16-d" in caplog.text and "exact search" in caplog.text


def _fail_writes(monkeypatch: pytest.MonkeyPatch, when) -> list[str]:  # type: ignore[no-untyped-def]
    """Make the store's array writer fail with ENOSPC when ``when(shape, blocks)`` says so."""
    real = store.write_npy
    failed: list[str] = []

    def full(fh, blocks, shape, dtype):  # type: ignore[no-untyped-def]
        if when(shape, blocks):
            failed.append(fh.name)
            fh.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fh, blocks, shape, dtype)

    monkeypatch.setattr(store, "write_npy", full)
    return failed


def test_a_full_disk_keeps_the_index_readable_and_a_rerun_finishes(
    work: tuple[Path, Path], resnet_random: Embedder, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    ds, vec = work
    write_photos(ds, 6, start=40)
    calls = {"n": 0}

    def third(shape, blocks):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return calls["n"] >= 3

    failed = _fail_writes(monkeypatch, third)
    with pytest.raises(StorageFullError, match=f"no space left on device in '{vec}'"):
        Index.build(ds, vec, resnet_random, progress=False, checkpoint_every=2, batch_size=2)
    assert failed
    idx = Index.open(vec)  # readable: the last committed checkpoint
    assert len(idx) == 14 and not idx.complete  # the first checkpoint of 2 images, then the disk was full
    assert idx.search_vectors(idx.vectors[0], k=1)[0].relpath == idx.paths[0]
    assert not [p for p in vec.iterdir() if p.name.endswith(".tmp")]
    calls["n"] = -10**9  # space freed
    idx, report = Index.build(ds, vec, resnet_random, progress=False)
    assert idx.complete and len(idx) == 18 and report.embedded == 4 and len(report.unchanged) == 14
    # the CLI says it in one line
    monkeypatch.setattr(store, "write_npy", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    write_photos(ds, 1, start=60)
    one_line_error(capsys, ["index", ds, vec, "-q"], "no space left on device in", str(vec))


def test_a_full_disk_during_the_final_merge_still_completes_the_index(
    tmp_path: Path, resnet_random: Embedder, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    ds, vec = tmp_path / "ds", tmp_path / "vec"
    write_photos(ds, 6)
    _fail_writes(monkeypatch, lambda shape, blocks: not isinstance(blocks, np.ndarray))  # merges stream blocks
    with caplog.at_level("WARNING", logger="revsearch.storage.indexing"):
        idx, _ = Index.build(ds, vec, resnet_random, progress=False, checkpoint_every=2, batch_size=2)
    assert idx.complete and len(idx) == 6 and len(idx.shards) == 3
    assert "no space left on device" in caplog.text
    monkeypatch.undo()
    idx, report = Index.build(ds, vec, resnet_random, progress=False)
    assert report.embedded == 0 and idx.complete


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0 or not shutil.which("mount"), reason="needs root to mount a tmpfs")
def test_a_really_full_tmpfs(tmp_path: Path, resnet_random: Embedder) -> None:
    """A real ENOSPC from a 64 KiB tmpfs; after it is grown, a rerun finishes."""
    ds, vec = tmp_path / "ds", tmp_path / "vec"
    write_photos(ds, 12)
    vec.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(vec)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with pytest.raises(StorageFullError, match="no space left on device in"):
            Index.build(ds, vec, resnet_random, progress=False, checkpoint_every=2, batch_size=2)
        idx = Index.open(vec)
        assert not idx.complete and len(idx) < 12
        subprocess.run(["mount", "-o", "remount,size=4m", str(vec)], check=True)
        idx, _ = Index.build(ds, vec, resnet_random, progress=False)
        assert idx.complete and len(idx) == 12
    finally:
        idx = None  # noqa: F841  (its memory maps keep the file system busy)
        gc.collect()
        if subprocess.run(["umount", str(vec)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(vec)], capture_output=True)


def test_a_deleted_shard_file_is_called_damaged_and_indexing_again_repairs_it(
    work: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    ds, vec = work
    (paths_file,) = vec.glob("paths-*.txt")
    paths_file.unlink()
    with pytest.raises(IndexDamagedError, match="is missing") as e:
        Index.open(vec)
    assert "open it again" not in str(e.value)
    line = one_line_error(capsys, ["search", ds / "img0000.jpg", vec], "damaged", "is missing")
    assert f"run `revsearch index {ds.resolve()} {vec}` again" in line
    assert cli.main(["index", str(ds), str(vec), "-q"]) == 0  # the advice works
    assert "12 added" in capsys.readouterr().out
    assert len(Index.open(vec)) == 12


# ---------------------------------------------------------------- 9. progress is committed by time, too


def test_progress_is_committed_by_time_as_well_as_by_count(
    tmp_path: Path, resnet_random: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, vec = tmp_path / "ds", tmp_path / "vec"
    write_photos(ds, 8)
    seen: list[int] = []
    real = Embedder.embed_files

    def spy(self, paths, **kwargs):  # type: ignore[no-untyped-def]
        for batch in real(self, paths, **kwargs):  # the count committed when each batch is handed over
            time.sleep(0.02)
            seen.append(json.loads((vec / MANIFEST_NAME).read_text())["count"])
            yield batch

    monkeypatch.setattr(Embedder, "embed_files", spy)
    Index.build(ds, vec, resnet_random, progress=False, batch_size=2, workers=1, checkpoint_seconds=0.01)
    assert seen == [0, 2, 4, 6]  # each batch took longer than 10 ms: committed after each
    seen.clear()
    vec = tmp_path / "vec2"
    Index.build(ds, vec, resnet_random, progress=False, batch_size=2, workers=1, checkpoint_seconds=3600)
    assert seen == [0, 0, 0, 0]  # by count only: 512 images
    defaults = inspect.signature(indexing.update_folder).parameters
    assert defaults["checkpoint_seconds"].default == indexing.CHECKPOINT_SECONDS == 30.0
    assert defaults["checkpoint_every"].default == indexing.CHECKPOINT_EVERY == 512


# ---------------------------------------------------------------- 10. the CLI warns


def test_cli_warns_about_an_incomplete_index(work: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    ds, vec = work
    with store.writing(vec) as w:  # as a killed run leaves it
        w.commit(complete=False)
    assert cli.main(["search", str(ds / "img0002.jpg"), str(vec), "-k", "2"]) == 0
    cap = capsys.readouterr()
    assert len(cap.out.strip().splitlines()) == 2
    assert "revsearch: warning: the index" in cap.err and "incomplete" in cap.err and "revsearch index" in cap.err
    assert cli.main(["info", str(vec)]) == 0 and "incomplete" in capsys.readouterr().err


def test_cli_shows_the_approximate_index_falling_back(work: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("faiss")
    from revsearch.retrieval import ann

    ds, vec = work
    meta = ann.build_ann(vec, kind="hnsw", progress=False)
    (vec / meta["file"]).unlink()
    ann.clear_cache()
    assert cli.main(["search", str(ds / "img0002.jpg"), str(vec), "-k", "2"]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip().splitlines()[0].endswith("img0002.jpg")
    assert "revsearch: warning:" in cap.err and "using exact search" in cap.err


# ---------------------------------------------------------------- format 1: reading and migrating


def test_an_index_written_by_revsearch_0_1_opens_and_migrates(tmp_path: Path) -> None:
    """tests/data/index_v1 was written by revsearch 0.1.0 (format 1, two shards)."""
    vec = tmp_path / "v1"
    shutil.copytree(DATA / "index_v1", vec)
    x = np.load(DATA / "index_v1_vectors.npy")
    first = json.loads((vec / MANIFEST_NAME).read_text())
    assert first["format_version"] == 1 and "store_id" not in first
    (vec / "paths-notes.txt").write_text("the user's")
    idx = Index.open(vec)
    assert len(idx) == 12 and len(idx.shards) == 2 and idx.paths[6] == "b/café 06.png"
    np.testing.assert_allclose(idx.vectors, x, atol=1e-6)
    assert idx.search_vectors(x[7], k=1)[0].relpath == "b/café 07.png"
    files = snapshot_bytes(vec)
    # the first write migrates it: the current format, a store id, the same shard files
    from revsearch.retrieval import ann

    ann.build_ann(vec, kind="flat", progress=False)
    m = json.loads((vec / MANIFEST_NAME).read_text())
    assert m["format_version"] == store.FORMAT_VERSION == 4 and len(m["store_id"]) == 12 and m["migrated_from"] == 1
    assert [s["files"]["vectors"] for s in m["shards"]] == [f"vectors-{s['token']}.npy" for s in first["shards"]]
    after = snapshot_bytes(vec)
    assert {n: b for n, b in after.items() if n != MANIFEST_NAME} == {n: b for n, b in files.items() if n != MANIFEST_NAME}
    idx = Index.open(vec)
    np.testing.assert_allclose(idx.vectors, x, atol=1e-6)
    assert idx.manifest["ann"]["kind"] == "flat" and idx.manifest["note"] == first["note"]


def test_an_index_of_format_1_is_updated_incrementally(
    tmp_path: Path, resnet_random: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A format-1 folder made as revsearch 0.1.0 lays it out; an update embeds only what changed."""
    ds, vec = tmp_path / "ds", tmp_path / "vec"
    write_photos(ds, 6)
    Index.build(ds, vec, resnet_random, progress=False)
    m = json.loads((vec / MANIFEST_NAME).read_text())
    for s in m["shards"]:  # rename to format 1: vectors-<token>.npy ...
        for kind, name in s.pop("files").items():
            os.rename(vec / name, vec / f"{kind}-{s['token']}{store.SHARD_FILES[kind]}")
    for name in m.pop("dba")["files"].values():  # format 1 stored no augmentation
        (vec / name).unlink()
    for key in ("store_id", "migrated_from", "expansion", "thumbs"):
        m.pop(key, None)
    m["format_version"] = 1
    (vec / MANIFEST_NAME).write_text(json.dumps(m, indent=2))
    (vec / "paths-dead.txt").write_text("x\n")  # debris a format-1 index cannot prove it wrote: kept
    old_files = {p.name for p in vec.glob("*-*.*") if p.name != "paths-dead.txt" and not p.name.startswith("thumbs-")}
    (ds / "img0002.jpg").unlink()
    write_photos(ds, 1, start=9)
    idx, report = Index.build(ds, vec, resnet_random, progress=False)
    assert report.removed == ["img0002.jpg"] and report.added == ["img0009.jpg"] and len(report.unchanged) == 5
    assert idx.manifest["format_version"] == store.FORMAT_VERSION and idx.complete and len(idx) == 6 and idx.snapshot.augmentation is not None
    assert not old_files & {p.name for p in vec.iterdir()}  # the rewritten shard's format-1 files are gone
    assert (vec / "paths-dead.txt").read_text() == "x\n"


def test_a_newer_format_is_refused(work: tuple[Path, Path]) -> None:
    _, vec = work
    m = json.loads((vec / MANIFEST_NAME).read_text())
    m["format_version"] = 99
    (vec / MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="format version 99.*upgrade revsearch"):
        Index.open(vec)


# ---------------------------------------------------------------- issue 9: a first run that cannot go wrong

NO_NETWORK = textwrap.dedent(
    """
    import socket, sys
    class NoSocket(socket.socket):
        def __init__(self, *a, **k):
            raise OSError("test: no network")
    socket.socket = NoSocket
    socket.create_connection = lambda *a, **k: NoSocket()
    from revsearch.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_no_reachable_weights_leaves_the_vector_folder_untouched(tmp_path: Path) -> None:
    ds = tmp_path / "photos"
    write_photos(ds, 2)
    env = dict(os.environ, PYTHONPATH=str(REPO), KERAS_HOME=str(tmp_path / "empty-keras"), TF_CPP_MIN_LOG_LEVEL="3",
               REVSEARCH_CACHE_DIR=str(tmp_path / "empty-cache"))  # no OpenVINO model converted earlier either
    for vec, existing in ((tmp_path / "vectors", False), (tmp_path / "made-by-hand", True)):
        if existing:
            vec.mkdir()
        proc = subprocess.run(
            [sys.executable, "-c", NO_NETWORK, "index", str(ds), str(vec), "--model", "mobilenet", "-q"],
            capture_output=True, text=True, env=env, timeout=300,
        )
        assert proc.returncode == 1, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("revsearch: error:")]
        assert len(errors) == 1 and "weights" in errors[0], proc.stderr[-2000:]
        assert vec.exists() == existing
        if existing:
            assert list(vec.iterdir()) == []


@pytest.mark.slow
def test_an_empty_index_can_be_rebuilt_with_another_model(tmp_path: Path, resnet_random: Embedder) -> None:
    empty, ds, vec = tmp_path / "empty", tmp_path / "ds", tmp_path / "vec"
    empty.mkdir()
    write_photos(ds, 2)
    idx, _ = Index.build(empty, vec, resnet_random, progress=False)
    assert len(idx) == 0 and idx.spec["model"] == "resnet50"
    other = Embedder("mobilenet", weights=None)
    idx, report = Index.build(ds, vec, other, progress=False)
    assert len(idx) == 2 and idx.spec == other.spec and len(report.added) == 2


# ---------------------------------------------------------------- the public writer


def test_from_vectors_refuses_paths_it_could_not_read_back(tmp_path: Path) -> None:
    spec = {"model": "test", "preprocessing": "none", "dim": 4, "weights": "none", "precision": "float32"}
    for bad in ("a\nb.jpg", "x\r.jpg", "../up.jpg", "/abs.jpg"):
        with pytest.raises(ValueError, match="cannot store the image path"):
            Index.from_vectors(tmp_path / "v", np.ones((2, 4)), ["ok.jpg", bad], spec)
        assert not Index.exists(tmp_path / "v")
    idx = Index.from_vectors(tmp_path / "v", np.eye(4)[:3], ["a.jpg", "b.jpg", "c.jpg"], spec, shard_rows=2)
    assert [len(s) for s in idx.shards] == [2, 1] and idx.paths == ["a.jpg", "b.jpg", "c.jpg"]
