"""Tests for the on-disk index: incremental updates, moving folders, atomic commits, resuming, models."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photo, write_photos
from PIL import Image

import revsearch.storage.indexing as indexing
from revsearch import reverse_image_search
from revsearch.storage import store
from revsearch.models.embedding import Embedder
from revsearch.core.errors import IndexFormatError, IndexNotFoundError, ModelMismatchError, StorageFullError
from revsearch import Index
from revsearch.storage.store import MANIFEST_NAME

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- helpers


class EmbedSpy:
    """Wraps Embedder.embed_files to record which files each call was asked to embed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[Path]] = []
        original = Embedder.embed_files

        def spy(emb: Embedder, paths, **kwargs):  # type: ignore[no-untyped-def]
            paths = [Path(p) for p in paths]
            self.calls.append(paths)
            return original(emb, paths, **kwargs)

        monkeypatch.setattr(Embedder, "embed_files", spy)

    @property
    def names(self) -> list[str]:
        return sorted(p.name for call in self.calls for p in call)


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def referenced(folder: Path) -> set[str]:
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    out = {MANIFEST_NAME}
    for s in manifest["shards"]:
        out |= set(s["files"].values())
        assert set(s["files"]) == {"vectors", "rows", "paths"}
    out |= set((manifest.get("thumbs") or {}).get("files", []))  # thumbnails, keyed by content
    for section in ("dba", "dba_stale"):  # the stored search augmentation (and one set aside by a killed update)
        out |= set((manifest.get(section) or {}).get("files", {}).values())
    return out


def vector_of(index: Index, relpath: str) -> np.ndarray:
    return np.array(index.vectors[index.paths.index(relpath)])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, resnet_random: Embedder) -> tuple[Path, Path]:
    """One index of 8 photos (in two subfolders), built once for the module."""
    base = tmp_path_factory.mktemp("built")
    write_photos(base / "ds" / "a", 4, start=0)
    write_photos(base / "ds" / "b", 4, start=4, ext=".png")
    Index.build(base / "ds", base / "vec", resnet_random, progress=False)
    return base / "ds", base / "vec"


@pytest.fixture()
def work(built: tuple[Path, Path], tmp_path: Path, resnet_random: Embedder) -> tuple[Path, Path]:
    """A private copy of the module's dataset and index (copy2 keeps sizes and mtimes)."""
    ds, vec = tmp_path / "ds", tmp_path / "vec"
    shutil.copytree(built[0], ds)
    shutil.copytree(built[1], vec)
    _, report = Index.build(ds, vec, resnet_random, progress=False)  # records the copy's dataset folder
    assert report.embedded == 0 and len(report.unchanged) == 8
    assert Index.open(vec).dataset_dir == ds.resolve()
    return ds, vec


# ---------------------------------------------------------------- building and opening


def test_build_records_relative_paths_spec_and_dataset(built: tuple[Path, Path], resnet_random: Embedder) -> None:
    ds, vec = built
    idx = Index.open(vec)
    assert idx.paths == [f"a/img{i:04d}.jpg" for i in range(4)] + [f"b/img{i:04d}.png" for i in range(4, 8)]
    assert len(idx) == 8 and idx.vectors.shape == (8, 2048) and idx.complete
    assert idx.spec == resnet_random.spec
    assert idx.spec["model"] == "resnet50" and idx.spec["weights"] == "none"
    assert idx.dataset_dir == ds.resolve()
    np.testing.assert_allclose(np.linalg.norm(idx.vectors, axis=1), 1.0, atol=1e-5)
    assert isinstance(idx.shards[0], np.memmap)
    assert not any(p.suffix in (".pkl", ".pickle", ".pbz2") for p in vec.iterdir())
    assert files_in(vec) - {".revsearch.lock"} == referenced(vec)


def test_open_errors(tmp_path: Path, work: tuple[Path, Path]) -> None:
    with pytest.raises(IndexNotFoundError, match="no revsearch index"):
        Index.open(tmp_path / "missing")
    _, vec = work
    (vec / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(IndexFormatError, match="damaged"):
        Index.open(vec)


# ---------------------------------------------------------------- incremental updates


def test_adding_files_embeds_only_the_new_ones(
    work: tuple[Path, Path], resnet_random: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, vec = work
    before = Index.open(vec)
    old_vectors = {p: vector_of(before, p) for p in before.paths}
    write_photos(ds / "a", 3, start=20)
    spy = EmbedSpy(monkeypatch)
    idx, report = Index.build(ds, vec, resnet_random, progress=False)
    new = [f"a/img{i:04d}.jpg" for i in (20, 21, 22)]
    assert sorted(report.added) == new
    assert spy.names == sorted(Path(p).name for p in new)
    assert report.updated == [] and report.removed == [] and len(report.unchanged) == 8
    assert report.embedded == 3
    assert len(idx) == 11 and sorted(idx.paths) == sorted(before.paths + new)
    for p, v in old_vectors.items():
        np.testing.assert_array_equal(vector_of(idx, p), v)
    assert idx.search(ds / "a" / "img0021.jpg", k=1)[0].relpath == "a/img0021.jpg"


def test_changed_file_is_embedded_again(
    work: tuple[Path, Path], resnet_random: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, vec = work
    target = "a/img0002.jpg"
    before = vector_of(Index.open(vec), target)
    Image.fromarray(make_photo(999)).save(ds / target, quality=92)
    spy = EmbedSpy(monkeypatch)
    idx, report = Index.build(ds, vec, resnet_random, progress=False)
    assert report.updated == [target] and report.added == [] and report.removed == []
    assert spy.names == ["img0002.jpg"]
    assert len(idx) == 8 and idx.paths.count(target) == 1
    after = vector_of(idx, target)
    assert not np.allclose(after, before, atol=1e-6)
    np.testing.assert_allclose(after, resnet_random.embed(ds / target), atol=1e-4)


def test_deleted_file_is_dropped(
    work: tuple[Path, Path], resnet_random: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, vec = work
    (ds / "b" / "img0005.png").unlink()
    spy = EmbedSpy(monkeypatch)
    idx, report = Index.build(ds, vec, resnet_random, progress=False)
    assert report.removed == ["b/img0005.png"]
    assert report.embedded == 0 and spy.calls == []
    assert "b/img0005.png" not in idx.paths and len(idx) == 7
    assert len(idx.vectors) == len(idx.paths) == 7
    assert all(m.relpath != "b/img0005.png" for m in idx.search_vectors(idx.vectors[0], k=9))
    assert files_in(vec) - {".revsearch.lock"} == referenced(vec)  # the old shard is gone


def test_touched_file_is_not_embedded_again(
    work: tuple[Path, Path], resnet_random: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, vec = work
    target = ds / "a" / "img0001.jpg"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    before = vector_of(Index.open(vec), "a/img0001.jpg")
    spy = EmbedSpy(monkeypatch)
    idx, report = Index.build(ds, vec, resnet_random, progress=False)
    assert report.embedded == 0 and spy.calls == []
    assert "a/img0001.jpg" in report.unchanged and len(report.unchanged) == 8
    np.testing.assert_array_equal(vector_of(idx, "a/img0001.jpg"), before)
    # the new mtime was recorded: the next run neither hashes nor rewrites anything
    shards = idx.manifest["shards"]
    idx2, report2 = Index.build(ds, vec, resnet_random, progress=False)
    assert report2.embedded == 0 and spy.calls == []
    assert idx2.manifest["shards"] == shards


def test_unchanged_rerun_embeds_nothing(
    work: tuple[Path, Path], resnet_random: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, vec = work
    before = Index.open(vec)
    spy = EmbedSpy(monkeypatch)
    idx, report = Index.build(ds, vec, resnet_random, progress=False)
    assert spy.calls == []
    assert report.added == report.updated == report.removed == [] and report.embedded == 0
    assert sorted(report.unchanged) == sorted(before.paths)
    assert "8 unchanged" in report.summary()
    assert idx.paths == before.paths
    np.testing.assert_array_equal(idx.vectors, before.vectors)
    # Index.update with the recorded dataset folder and model does the same
    assert idx.update(progress=False).embedded == 0 and spy.calls == []


def test_update_rewrites_only_the_shards_that_changed(
    tmp_path: Path, resnet_random: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, vec = tmp_path / "ds", tmp_path / "vec"
    write_photos(ds, 9)
    monkeypatch.setattr(indexing, "TARGET_SHARD_BYTES", 1)  # keep the checkpoints as separate shards
    idx, _ = Index.build(ds, vec, resnet_random, batch_size=3, checkpoint_every=3, progress=False)
    tokens = [s["token"] for s in idx.manifest["shards"]]
    assert len(tokens) == 3 and [s["count"] for s in idx.manifest["shards"]] == [3, 3, 3]
    vectors = {p: vector_of(idx, p) for p in idx.paths}
    (ds / "img0004.jpg").unlink()  # in the middle shard
    st = (ds / "img0007.jpg").stat()
    os.utime(ds / "img0007.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, in the last one
    idx, report = Index.build(ds, vec, resnet_random, progress=False)
    assert report.removed == ["img0004.jpg"] and report.embedded == 0
    new_tokens = [s["token"] for s in idx.manifest["shards"]]
    assert new_tokens[0] == tokens[0]  # untouched shard: same files
    assert tokens[1] not in new_tokens and tokens[2] not in new_tokens
    assert idx.paths == [f"img{i:04d}.jpg" for i in range(9) if i != 4]
    for p in idx.paths:
        np.testing.assert_array_equal(vector_of(idx, p), vectors[p])
    assert files_in(vec) - {".revsearch.lock"} == referenced(vec)


def test_an_index_opened_before_an_update_keeps_its_snapshot(work: tuple[Path, Path], resnet_random: Embedder) -> None:
    """Issue 8 #4: the update deletes the files the open index reads; it keeps answering from its snapshot."""
    ds, vec = work
    stale = Index.open(vec)
    old_files = files_in(vec)
    (ds / "a" / "img0000.jpg").unlink()
    fresh, _ = Index.build(ds, vec, resnet_random, progress=False)
    # every file it opened is deleted (the thumbnails are kept: keyed by content, the other photos still need them)
    assert not {f for f in old_files - {".revsearch.lock", MANIFEST_NAME} if not f.startswith("thumbs-")} & files_in(vec)
    got = stale.search_vectors(fresh.vectors[0], k=2)
    assert got[0].relpath == fresh.paths[0] and len(stale) == 8 and "a/img0000.jpg" in stale.paths
    assert stale.search_vectors(stale.vectors[0], k=1, expand=False)[0].relpath == "a/img0000.jpg"  # the old state, whole
    assert len(stale.search_vectors(stale.vectors[:2], k=8)[1]) == 8  # its stored augmentation too (files deleted, still mapped)
    assert fresh.search_vectors(fresh.vectors[0], k=2)[0].relpath == fresh.paths[0]
    assert stale.reload() is True and stale.paths == fresh.paths


def test_damaged_paths_file_is_reported(work: tuple[Path, Path], resnet_random: Embedder) -> None:
    ds, vec = work
    (paths_file,) = vec.glob("paths-*.txt")
    paths_file.write_text("only-one.jpg\n")
    with pytest.raises(IndexFormatError, match="names 1 images, expected 8.*damaged|damaged.*names 1 images, expected 8"):
        Index.open(vec).paths
    # indexing again repairs it: the shard's images are embedded again
    idx, report = Index.build(ds, vec, resnet_random, progress=False)
    assert sorted(report.added) == sorted(idx.paths) and len(idx) == 8 and idx.complete


def test_moving_dataset_and_index_together(work: tuple[Path, Path], resnet_random: Embedder, tmp_path: Path) -> None:
    """As when both folders are copied to Google Drive: paths are relative, so searching still works."""
    ds, vec = work
    drive = tmp_path / "drive" / "MyDrive" / "project"
    drive.mkdir(parents=True)
    shutil.move(str(ds), str(drive / "ds"))
    shutil.move(str(vec), str(drive / "vec"))
    assert not ds.exists() and not vec.exists()
    idx = Index.open(drive / "vec")
    assert idx.dataset_dir == (drive / "ds").resolve()
    matches = idx.search(drive / "ds" / "b" / "img0006.png", k=4)
    assert matches[0].relpath == "b/img0006.png"
    assert all(m.path.is_file() and m.path.is_relative_to(drive.resolve()) for m in matches)
    res = reverse_image_search(drive / "ds" / "a" / "img0000.jpg", vector_dir=drive / "vec", k=3, expand=False)
    assert res[0].relpath == "a/img0000.jpg"
    assert all(m.path.is_file() and m.path.is_relative_to(drive.resolve()) for m in res)
    # updating in the new place: nothing is embedded (sizes and mtimes moved with the files)
    _, report = Index.build(drive / "ds", drive / "vec", resnet_random, progress=False)
    assert report.embedded == 0 and report.removed == []
    # renamed on the way: the index cannot guess, but dataset_dir says where the images are now
    shutil.move(str(drive / "ds"), str(drive / "photos"))
    res = reverse_image_search(
        drive / "photos" / "a" / "img0003.jpg", vector_dir=drive / "vec", dataset_dir=drive / "photos", k=3
    )
    assert res[0].relpath == "a/img0003.jpg"
    assert all(m.path.is_file() and m.path.parent.parent == drive / "photos" for m in res)


def test_moving_only_the_index_falls_back_to_the_absolute_dataset_path(work: tuple[Path, Path], tmp_path: Path) -> None:
    ds, vec = work
    elsewhere = tmp_path / "elsewhere" / "deeper" / "vec"
    shutil.move(str(vec), str(elsewhere))
    idx = Index.open(elsewhere)
    assert idx.dataset_dir == ds.resolve()
    assert all(m.path.is_file() for m in idx.search_vectors(idx.vectors[2], k=8))


def test_index_inside_the_dataset_folder_is_not_indexed(tmp_path: Path, resnet_random: Embedder) -> None:
    write_photos(tmp_path / "ds", 3)
    idx, report = Index.build(tmp_path / "ds", tmp_path / "ds" / "vectors", resnet_random, progress=False)
    assert sorted(idx.paths) == [f"img{i:04d}.jpg" for i in range(3)]
    _, report = Index.build(tmp_path / "ds", tmp_path / "ds" / "vectors", resnet_random, progress=False)
    assert report.embedded == 0


# ---------------------------------------------------------------- atomic commits


def test_crash_during_manifest_write_keeps_the_old_index(
    work: tuple[Path, Path], resnet_random: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, vec = work
    before = Index.open(vec)
    old_paths, old_vectors = before.paths, np.array(before.vectors)
    old_manifest = (vec / MANIFEST_NAME).read_bytes()
    write_photos(ds / "a", 2, start=30)
    real_replace = os.replace

    def crashing_replace(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(dst).name == MANIFEST_NAME:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(StorageFullError, match=f"no space left on device in {re.escape(repr(str(vec)))}"):
        Index.build(ds, vec, resnet_random, progress=False)
    monkeypatch.setattr(os, "replace", real_replace)

    assert (vec / MANIFEST_NAME).read_bytes() == old_manifest
    idx = Index.open(vec)
    assert idx.paths == old_paths
    np.testing.assert_array_equal(idx.vectors, old_vectors)
    assert idx.search_vectors(old_vectors[1], k=1)[0].relpath == old_paths[1]
    leftovers = files_in(vec) - referenced(vec) - {".revsearch.lock"}
    assert not leftovers, "the failed run deleted the files it wrote and did not commit"

    # debris as a kill at the wrong moment leaves it (names carrying this index's store id) ...
    sid = idx.manifest["store_id"]
    debris = [f".{MANIFEST_NAME}.{sid}-0123abcd.tmp", f".vectors-{sid}-dead.npy.{sid}-0123abcd.tmp",
              f"paths-{sid}-dead.txt", f"vectors-{sid}-dead.npy"]
    for name in debris:
        (vec / name).write_bytes(b"x")
    # ... and files the index did not write, with names like its own: never touched
    foreign = {f".{MANIFEST_NAME}.dead.tmp": b"{", ".vectors-dead.npy.tmp": b"", "paths-dead.txt": b"x\n",
               "vectors-0123456789ab-x.npy": b"other index"}
    for name, data in foreign.items():
        (vec / name).write_bytes(data)
    idx, report = Index.build(ds, vec, resnet_random, progress=False)
    assert sorted(report.added) == ["a/img0030.jpg", "a/img0031.jpg"]
    assert len(idx) == 10
    assert files_in(vec) - {".revsearch.lock"} == referenced(vec) | set(foreign)
    assert all((vec / name).read_bytes() == data for name, data in foreign.items())


def test_a_second_writer_is_refused(work: tuple[Path, Path], resnet_random: Embedder) -> None:
    from revsearch.core.errors import RevsearchError

    ds, vec = work
    with store.writing(vec):
        with pytest.raises(RevsearchError, match="another process"):
            Index.build(ds, vec, resnet_random, progress=False)
    assert Index.open(vec).complete


# ---------------------------------------------------------------- models


def test_query_with_another_model_is_refused(built: tuple[Path, Path]) -> None:
    ds, vec = built
    idx = Index.open(vec)
    query = ds / "a" / "img0000.jpg"
    with pytest.raises(ModelMismatchError, match="model: index has 'resnet50', query has 'resnet50-seed'") as e:
        idx.search(query, embedder=Embedder("resnet50-seed", weights=None))
    assert "model='resnet50'" in str(e.value)
    with pytest.raises(ModelMismatchError, match="dim: index has 2048, query has 1024"):
        idx.search(query, embedder=Embedder("mobilenet", weights=None))
    with pytest.raises(ModelMismatchError, match="weights: index has 'none', query has 'imagenet'"):
        idx.search(query, embedder=Embedder("resnet50", weights="imagenet"))
    with pytest.raises(ModelMismatchError, match="dimension 1024"):
        idx.search_vectors(np.ones(1024, np.float32))


def test_building_with_another_model_leaves_the_index_untouched(work: tuple[Path, Path]) -> None:
    ds, vec = work
    write_photos(ds, 2, start=40)  # something to do, were the model accepted
    before = {p.name: p.read_bytes() for p in vec.iterdir()}
    for other in (Embedder("resnet50-seed", weights=None), Embedder("mobilenet", weights=None)):
        with pytest.raises(ModelMismatchError, match="build a new index in another folder"):
            Index.build(ds, vec, other, progress=False)
    assert {p.name: p.read_bytes() for p in vec.iterdir()} == before
    assert len(Index.open(vec)) == 8


def test_index_embedder_is_the_recorded_model(built: tuple[Path, Path], resnet_random: Embedder) -> None:
    idx = Index.open(built[1])
    emb = idx.embedder()
    # the recorded model and pipeline; the compute precision is this CPU's default (it never changes which
    # vectors are comparable)
    assert {**emb.spec, "precision": None} == {**resnet_random.spec, "precision": None}
    assert emb is idx.embedder()  # shared between calls


# ---------------------------------------------------------------- killed runs

SLOW_BUILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from revsearch.models.embedding import Embedder
    from revsearch import Index

    original = Embedder.embed_files

    def slow(self, paths, **kwargs):
        for batch in original(self, paths, **kwargs):
            time.sleep({sleep})
            yield batch

    Embedder.embed_files = slow
    Index.build(sys.argv[1], sys.argv[2], "resnet50", weights=None, batch_size={batch},
                checkpoint_every={every}, workers=1, progress=False)
    """
)


def start_build(ds: Path, vec: Path, *, sleep: float, batch: int, every: int) -> subprocess.Popen:
    script = SLOW_BUILD.format(repo=str(REPO), sleep=sleep, batch=batch, every=every)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-c", script, str(ds), str(vec)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def committed(vec: Path) -> int | None:
    """Rows the manifest names now, or None if there is no manifest yet."""
    try:
        return int(json.loads((vec / MANIFEST_NAME).read_text())["count"])
    except FileNotFoundError:
        return None


def kill_when(proc: subprocess.Popen, condition, delay: float = 0.0, timeout: float = 180.0) -> bool:  # type: ignore[no-untyped-def]
    """SIGKILL ``proc`` ``delay`` seconds after ``condition()`` first holds; return whether it was still running.

    A process that finished its work normally during ``delay`` (a fast machine) is fine: the
    index must then be whole. One that failed, or ended before the condition held, fails the test.
    """
    deadline = time.monotonic() + timeout
    try:
        while not condition():
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                pytest.fail(f"the indexing process ended (rc={proc.returncode}) before it was killed:\n{err[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the indexing process did not reach the kill point in time")
            time.sleep(0.01)
        time.sleep(delay)
        ended = proc.poll()
        if ended is not None and ended != 0:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(f"the indexing process failed (rc={ended}) before it was killed:\n{err[-2000:]}")
        return ended is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


def check_consistent(vec: Path, all_paths: list[str]) -> Index:
    idx = Index.open(vec)
    paths = idx.paths
    assert len(paths) == len(idx.vectors) == len(idx) == idx.manifest["count"]
    assert len(set(paths)) == len(paths)
    assert set(paths) <= set(all_paths)
    if len(idx):
        assert np.isfinite(idx.vectors).all()
        np.testing.assert_allclose(np.linalg.norm(idx.vectors, axis=1), 1.0, atol=1e-4)
    return idx


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    ds = tmp_path_factory.mktemp("many") / "ds"
    write_photos(ds, 48)
    return ds, [f"img{i:04d}.jpg" for i in range(48)]


@pytest.mark.slow
def test_killed_build_resumes_where_it_stopped(
    many_photos: tuple[Path, list[str]], tmp_path: Path, resnet_random: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, all_paths = many_photos
    vec = tmp_path / "vec"
    proc = start_build(ds, vec, sleep=0.3, batch=4, every=8)
    assert kill_when(proc, lambda: (committed(vec) or 0) >= 16)
    assert proc.returncode == -signal.SIGKILL

    idx = check_consistent(vec, all_paths)
    assert not idx.complete
    done = idx.paths
    assert 16 <= len(done) < len(all_paths)
    assert done == all_paths[: len(done)]  # files are embedded in sorted order
    # the killed process's seeded random model is the one of this process
    assert idx.search(ds / done[3], k=1, embedder=resnet_random)[0].relpath == done[3]

    spy = EmbedSpy(monkeypatch)
    final, report = Index.build(ds, vec, resnet_random, progress=False)
    assert len(report.added) == len(all_paths) - len(done)
    assert sorted(report.added) == all_paths[len(done) :]
    assert sorted(p.name for call in spy.calls for p in call) == all_paths[len(done) :]
    assert sorted(report.unchanged) == done
    assert final.complete
    assert sorted(final.paths) == all_paths and len(final) == len(all_paths)
    assert final.search(ds / all_paths[-1], k=1)[0].relpath == all_paths[-1]
    assert files_in(vec) - {".revsearch.lock"} == referenced(vec)


def test_killing_at_any_moment_never_breaks_the_index(many_photos: tuple[Path, list[str]], tmp_path: Path) -> None:
    """Kill the same (resuming) build at different moments: each time the index opens, or does not exist yet."""
    ds, all_paths = many_photos
    vec = tmp_path / "vec"
    last = 0
    # while Python/TensorFlow starts: nothing written yet (or, on a fast machine, an empty index)
    proc = start_build(ds, vec, sleep=0.0, batch=2, every=2)
    kill_when(proc, lambda: True)
    try:
        last = len(check_consistent(vec, all_paths))
    except IndexNotFoundError:
        pass
    # at the very first commit, then at several moments while checkpoints are being committed
    moments = [
        (lambda: committed(vec) is not None, 0.0),
        (lambda: (committed(vec) or 0) > last, 0.13),
    ]
    for moment, delay in moments:
        proc = start_build(ds, vec, sleep=0.0, batch=2, every=2)
        killed = kill_when(proc, moment, delay)
        idx = check_consistent(vec, all_paths)
        assert len(idx) >= last, "a killed run never loses committed rows"
        assert idx.paths == all_paths[: len(idx)]
        assert killed or (idx.complete and len(idx) == len(all_paths))  # finished before the kill: whole
        last = len(idx)
    assert last > 0


def test_checkpoint_shards_are_merged_into_one_at_the_end(tmp_path: Path, resnet_random: Embedder) -> None:
    """Checkpoints every 4 images write small shards; the finished index merges them into one,
    holding the same rows and vectors as an index written in one go."""
    ds = tmp_path / "ds"
    write_photos(ds, 10)
    merged, _ = Index.build(ds, tmp_path / "merged", resnet_random, checkpoint_every=4, batch_size=4, progress=False)
    whole, _ = Index.build(ds, tmp_path / "whole", resnet_random, checkpoint_every=1000, progress=False)
    assert len(merged.shards) == 1 and isinstance(merged.shards[0], np.memmap)
    assert merged.paths == whole.paths
    np.testing.assert_allclose(merged.vectors, whole.vectors, atol=1e-5)
    names = {p.name for p in (tmp_path / "merged").iterdir() if p.name.startswith("vectors-")}
    assert len(names) == 1  # the checkpoint shards' files were deleted
