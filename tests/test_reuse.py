"""Photo libraries change shape (issue 14): moved, renamed and copied photos reuse their vectors,
folders can be excluded, and searches can be scoped to part of the collection."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photo, write_photos
from PIL import Image

from revsearch import cli
from revsearch.embedding import Embedder
from revsearch import Index
from revsearch.images import path_excluded
from revsearch.store import MANIFEST_NAME


class EmbedSpy:
    """Records which files each ``embed_files`` call was asked to embed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        original = Embedder.embed_files

        def spy(emb, paths, **kwargs):  # type: ignore[no-untyped-def]
            self.names.extend(Path(p).name for p in paths)
            return original(emb, paths, **kwargs)

        monkeypatch.setattr(Embedder, "embed_files", spy)


def vectors_by_path(index: Index) -> dict[str, np.ndarray]:
    return {p: np.array(v) for p, v in zip(index.paths, index.vectors)}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, resnet_random: Embedder) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("library")
    write_photos(base / "ds" / "a", 8)
    Index.build(base / "ds", base / "vec", resnet_random, progress=False)
    return base / "ds", base / "vec"


@pytest.fixture()
def work(library: tuple[Path, Path], tmp_path: Path, resnet_random: Embedder) -> tuple[Path, Path]:
    ds, vec = tmp_path / "ds", tmp_path / "vec"
    shutil.copytree(library[0], ds)
    shutil.copytree(library[1], vec)
    Index.build(ds, vec, resnet_random, progress=False)
    return ds, vec


# ---------------------------------------------------------------- reuse by content


def test_moved_renamed_and_copied_photos_reuse_their_vectors(
    work: tuple[Path, Path], tmp_path: Path, resnet_random: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, vec = work
    a, b = ds / "a", ds / "b"
    b.mkdir()
    for i in (0, 1, 2):  # moved into a subfolder
        shutil.move(str(a / f"img{i:04d}.jpg"), str(b / f"img{i:04d}.jpg"))
    (a / "img0003.jpg").rename(a / "renamed.jpg")  # renamed
    shutil.copy2(a / "img0004.jpg", b / "copy of img0004.jpg")  # copied
    shutil.move(str(a / "img0005.jpg"), str(b / "edited.jpg"))  # moved, then edited: a new picture
    Image.fromarray(make_photo(500)).save(b / "edited.jpg", quality=92)
    (a / "img0006.jpg").write_bytes((a / "img0006.jpg").read_bytes() + b"\0")  # same path, new bytes: embedded
    spy = EmbedSpy(monkeypatch)
    idx, report = Index.build(ds, vec, resnet_random, progress=False)
    assert sorted(spy.names) == ["edited.jpg", "img0006.jpg"]
    assert sorted(report.moved) == ["a/renamed.jpg", "b/img0000.jpg", "b/img0001.jpg", "b/img0002.jpg"]
    assert report.copied == ["b/copy of img0004.jpg"]
    assert report.added == ["b/edited.jpg"] and report.removed == ["a/img0005.jpg"]
    assert report.updated == ["a/img0006.jpg"] and report.embedded == 2
    assert "4 moved, 1 copied" in report.summary()
    fresh, _ = Index.build(ds, tmp_path / "fresh", resnet_random, progress=False)
    assert sorted(idx.paths) == sorted(fresh.paths)
    mine, theirs = vectors_by_path(idx), vectors_by_path(fresh)
    for p in theirs:
        np.testing.assert_allclose(mine[p], theirs[p], atol=1e-4)
    # the reused rows learned their new files: the next run reads nothing and embeds nothing
    spy.names.clear()
    _, again = Index.build(ds, vec, resnet_random, progress=False)
    assert spy.names == [] and again.embedded == 0 and not again.moved and len(again.unchanged) == len(fresh)


def test_moving_the_whole_library_is_not_a_prune(work: tuple[Path, Path], resnet_random: Embedder, capsys) -> None:  # type: ignore[no-untyped-def]
    ds, vec = work
    shutil.move(str(ds / "a"), str(ds / "2024"))
    assert cli.main(["index", str(ds), str(vec), "-q"]) == 0
    out = capsys.readouterr().out
    assert "0 added, 0 updated, 0 removed, 0 unchanged, 8 moved" in out
    assert sorted(Index.open(vec).paths) == [f"2024/img{i:04d}.jpg" for i in range(8)]


# ---------------------------------------------------------------- exclusions


def test_exclusions_are_recorded_and_remove_what_was_indexed(
    work: tuple[Path, Path], resnet_random: Embedder, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    ds, vec = work
    write_photos(ds / "a" / "thumbnails", 3, start=20)
    write_photos(ds / "raw", 2, start=30)
    write_photos(ds / ".cache", 2, start=40)  # hidden: never indexed
    idx, _ = Index.build(ds, vec, resnet_random, progress=False)
    assert len(idx) == 13 and not any(p.startswith(".cache") for p in idx.paths)
    # most of the index is excluded on purpose: no --prune needed
    idx, report = Index.build(ds, vec, resnet_random, progress=False, exclude=["*/thumbnails/*", "img000[0-5].jpg"])
    assert sorted(report.removed) == sorted([f"a/thumbnails/img{i:04d}.jpg" for i in (20, 21, 22)] +
                                            [f"a/img{i:04d}.jpg" for i in range(6)])
    assert sorted(idx.paths) == ["a/img0006.jpg", "a/img0007.jpg", "raw/img0030.jpg", "raw/img0031.jpg"]
    assert json.loads((vec / MANIFEST_NAME).read_text())["exclude"] == ["*/thumbnails/*", "img000[0-5].jpg"]
    # recorded: a later update (the CLI, without --exclude) applies it too; .revsearchignore adds to it
    (ds / ".revsearchignore").write_text("# not the raw files\nraw\n")
    write_photos(ds / "a" / "thumbnails", 1, start=23)
    spy = EmbedSpy(monkeypatch)
    assert cli.main(["index", str(ds), str(vec), "-q"]) == 0
    assert "2 removed" in capsys.readouterr().out and spy.names == []
    assert Index.open(vec).paths == ["a/img0006.jpg", "a/img0007.jpg"]
    # --exclude replaces the recorded patterns
    assert cli.main(["index", str(ds), str(vec), "-q", "--exclude", "thumbnails"]) == 0
    capsys.readouterr()
    assert sorted(Index.open(vec).paths) == [f"a/img{i:04d}.jpg" for i in range(8)]
    assert json.loads((vec / MANIFEST_NAME).read_text())["exclude"] == ["thumbnails"]


def test_exclusion_patterns() -> None:
    assert path_excluded("a/thumbnails/x.jpg", ["*/thumbnails/*"])
    assert not path_excluded("thumbnails/x.jpg", ["*/thumbnails/*"])
    assert path_excluded("thumbnails/x.jpg", ["thumbnails"]) and path_excluded("a/b/thumbnails/x.jpg", ["thumbnails"])
    assert path_excluded("a/.x.jpg", [".*"]) and not path_excluded("a/x.jpg", [".*"])
    assert path_excluded("raw/2019/x.jpg", ["raw/2019"]) and not path_excluded("raw/2020/x.jpg", ["raw/2019"])
    assert path_excluded("a/x.PNG", ["*.PNG"]) and not path_excluded("a/x.png", ["*.PNG"])
    assert not path_excluded("a/x.jpg", []) and not path_excluded("a/x.jpg", ["", "/"])


# ---------------------------------------------------------------- scoped search


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory: pytest.TempPathFactory, resnet_random: Embedder) -> tuple[Path, Index, Index]:
    base = tmp_path_factory.mktemp("scoped")
    ds = base / "ds"
    write_photos(ds / "a", 6)
    write_photos(ds / "b", 6, start=6)
    write_photos(ds / "b" / "skip", 2, start=12)
    whole, _ = Index.build(ds, base / "whole", resnet_random, progress=False)
    only_b, _ = Index.build(ds / "b", base / "only_b", resnet_random, progress=False, exclude=["skip"])
    return ds, whole, only_b


def test_scoped_search_equals_an_index_of_only_that_folder(two_folders, capsys) -> None:  # type: ignore[no-untyped-def]
    ds, whole, only_b = two_folders
    q = np.asarray(whole.vectors[[0, 7, 13]])
    for k in (3, 5, 100):
        # a plain search of the scope is the search of an index of only those images (with the default expansion,
        # the augmented vectors are made from the whole collection, so only the scope holds)
        assert all(m.relpath.startswith("b/") and "skip" not in m.relpath
                   for row in whole.search_vectors(q, k=k, under="b", exclude_paths=["skip"]) for m in row)
        got = whole.search_vectors(q, k=k, under="b", exclude_paths=["skip"], expand=False)
        want = only_b.search_vectors(q, k=k, expand=False)
        for g, w in zip(got, want):
            assert [m.relpath for m in g] == ["b/" + m.relpath for m in w]
            np.testing.assert_allclose([m.score for m in g], [m.score for m in w], atol=1e-6)
            assert all(m.path == ds / m.relpath for m in g)
    assert len(whole.search_vectors(q[0], k=100, under="a")) == 6
    assert whole.search_vectors(q[0], k=3, under="nowhere") == []
    s, r = whole.topk(q, 4, under="b", exclude=[int(whole.paths.index("b/img0007.jpg"))])
    assert whole.paths.index("b/img0007.jpg") not in r.ravel().tolist()
    # the command line: --under (relative, or a path inside the dataset folder) and --exclude
    for under in ("b", str(ds / "b")):
        assert cli.main(["search", str(ds / "a" / "img0001.jpg"), str(whole.folder), "-k", "20", "--under", under,
                         "--exclude", "skip", "--json"]) == 0
        results = json.loads(capsys.readouterr().out)["results"]
        assert [r["relpath"] for r in results] == [
            m.relpath for m in whole.search(ds / "a" / "img0001.jpg", k=20, under="b", exclude_paths=["skip"])
        ]
        assert len(results) == 6 and all(r["relpath"].startswith("b/") and "skip" not in r["relpath"] for r in results)


def test_scoped_search_with_an_approximate_index(two_folders, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("faiss")
    from revsearch import ann

    ds, whole, only_b = two_folders
    idx = Index.from_vectors(tmp_path / "v", np.asarray(whole.vectors), whole.paths, whole.spec, dataset_dir=ds)
    ann.build_ann(idx, kind="hnsw", progress=False)
    q = np.asarray(whole.vectors[[1, 8]])
    got = idx.search_vectors(q, k=4, under="b", exclude_paths=["skip"], expand=False)
    want = only_b.search_vectors(q, k=4, expand=False)
    expanded = idx.search_vectors(q, k=4, under="b", exclude_paths=["skip"])  # the ANN shortlist, re-scored
    assert all(m.relpath.startswith("b/") and "skip" not in m.relpath for row in expanded for m in row)
    for g, w in zip(got, want):
        assert [m.relpath for m in g] == ["b/" + m.relpath for m in w]
