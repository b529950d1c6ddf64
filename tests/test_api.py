"""Tests for the one-call API, reverse_image_search, with the original notebook's signature."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_photos
from PIL import Image

from revsearch import Match, SearchResults, reverse_image_search
from revsearch.embedding import Embedder
from revsearch.errors import ImageReadError, IndexNotFoundError, ModelMismatchError, RevsearchError
from revsearch import Index
from revsearch.store import MANIFEST_NAME

N = 12


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory, resnet_random: Embedder) -> tuple[Path, Path, SearchResults]:
    """The first call of the notebook: generate=True builds the index and searches."""
    base = tmp_path_factory.mktemp("api")
    write_photos(base / "photos" / "a", N // 2, start=0)
    write_photos(base / "photos" / "b", N // 2, start=N // 2, ext=".png")
    query = base / "photos" / "a" / "img0003.jpg"
    results = reverse_image_search(
        query, "resnet50", base / "photos", base / "vectors", generate=True, weights=None, progress=False
    )
    return base / "photos", base / "vectors", results


def test_generate_builds_the_index_and_returns_nine_matches(generated) -> None:  # type: ignore[no-untyped-def]
    ds, vec, results = generated
    assert isinstance(results, SearchResults) and isinstance(results, list)
    assert len(results) == 9
    assert all(isinstance(m, Match) for m in results)
    assert results[0].relpath == "a/img0003.jpg"
    assert results[0].path.resolve() == (ds / "a" / "img0003.jpg").resolve()
    assert results[0].score == pytest.approx(1.0, abs=1e-4)
    assert results.scores == sorted(results.scores, reverse=True)
    assert [m.rank for m in results] == list(range(9))
    assert len({m.relpath for m in results}) == 9
    assert all(m.path.is_file() for m in results)
    assert results.paths == [m.path for m in results]
    assert results.report is not None and len(results.report.added) == N
    assert isinstance(results.index, Index) and len(results.index) == N
    assert results.figure is None
    assert Index.exists(vec) and Index.open(vec).spec["weights"] == "none"


def test_reuse_embeds_only_the_query(generated, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    ds, vec, first = generated

    def no_indexing(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("generate=False must not embed the collection")

    monkeypatch.setattr(Embedder, "embed_files", no_indexing)
    query = ds / "a" / "img0003.jpg"
    again = reverse_image_search(query, "resnet50", ds, vec, generate=False, weights=None)
    assert [m.relpath for m in again] == [m.relpath for m in first]
    np.testing.assert_allclose(again.scores, first.scores, atol=1e-5)
    assert again.report is None
    # the model may be left out: the index's own is used
    default = reverse_image_search(query, vector_dir=vec)
    assert [m.relpath for m in default] == [m.relpath for m in first]
    # and so may the dataset folder: the one recorded in the index is used
    assert default[0].path.resolve() == query.resolve()


def test_generate_again_is_incremental(generated, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ds0, vec0, _ = generated
    ds, vec = tmp_path / "photos", tmp_path / "vectors"
    shutil.copytree(ds0, ds)
    shutil.copytree(vec0, vec)
    write_photos(ds / "b", 2, start=50)
    seen: list[str] = []
    original = Embedder.embed_files

    def spy(self, paths, **kwargs):  # type: ignore[no-untyped-def]
        seen.extend(Path(p).name for p in paths)
        return original(self, paths, **kwargs)

    monkeypatch.setattr(Embedder, "embed_files", spy)
    res = reverse_image_search(ds / "b" / "img0050.jpg", None, ds, vec, generate=True, progress=False)
    assert sorted(seen) == ["img0050.jpg", "img0051.jpg"]
    assert res.report is not None and sorted(res.report.added) == ["b/img0050.jpg", "b/img0051.jpg"]
    assert len(res.report.unchanged) == N
    assert res[0].relpath == "b/img0050.jpg"
    assert len(Index.open(vec)) == N + 2


@pytest.mark.parametrize("k", [1, 3, 20])
def test_k(generated, k: int) -> None:  # type: ignore[no-untyped-def]
    ds, vec, first = generated
    res = reverse_image_search(ds / "a" / "img0003.jpg", vector_dir=vec, k=k)
    assert len(res) == min(k, N)
    shared = min(len(res), len(first))
    assert [m.relpath for m in res][:shared] == [m.relpath for m in first][:shared]
    assert res[0].relpath == "a/img0003.jpg"


def test_bad_k_is_refused(generated) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = generated
    with pytest.raises(ValueError, match="at least 1"):
        reverse_image_search(ds / "a" / "img0003.jpg", vector_dir=vec, k=0)


def test_query_kinds_give_the_same_results(generated) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = generated
    path = ds / "b" / "img0008.png"
    data = path.read_bytes()
    pil = Image.open(path)
    array = np.asarray(Image.open(path).convert("RGB"))
    results = [
        reverse_image_search(q, vector_dir=vec, k=5)
        for q in (path, str(path), pil, array, data, bytearray(data), io.BytesIO(data))
    ]
    ref = results[0]
    # found itself; with the default expansion the score is the expanded query's cosine with the augmented vector
    assert ref[0].relpath == "b/img0008.png" and ref[0].score == pytest.approx(1.0, abs=1e-3)
    assert reverse_image_search(path, vector_dir=vec, k=1, expand=False)[0].score == pytest.approx(1.0, abs=1e-4)
    for res in results[1:]:
        assert [m.relpath for m in res] == [m.relpath for m in ref]
        np.testing.assert_allclose(res.scores, ref.scores, atol=1e-5)


def test_save_path_writes_a_png(generated, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from matplotlib.figure import Figure

    ds, vec, _ = generated
    out = tmp_path / "figs" / "result.png"
    res = reverse_image_search(ds / "a" / "img0001.jpg", vector_dir=vec, k=4, show=False, save_path=out)
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as img:
        assert img.size[0] > 100 and img.size[1] > 100
    assert isinstance(res.figure, Figure)
    assert len(res.figure.axes) == 1 + 4  # the query, then one panel per match
    assert res.figure.axes[1].get_title().startswith("1. img0001.jpg")


def test_show_outside_a_notebook_keeps_the_figure(generated) -> None:  # type: ignore[no-untyped-def]
    from matplotlib.figure import Figure

    ds, vec, _ = generated
    res = reverse_image_search(ds / "a" / "img0001.jpg", vector_dir=vec, k=3, show=True)
    assert isinstance(res.figure, Figure) and len(res.figure.axes) == 4


# ---------------------------------------------------------------- errors


def test_no_index_and_generate_false_says_to_generate(tmp_path: Path, generated) -> None:  # type: ignore[no-untyped-def]
    ds, _, _ = generated
    with pytest.raises(IndexNotFoundError, match="generate=True") as e:
        reverse_image_search(ds / "a" / "img0000.jpg", "resnet50", ds, tmp_path / "vectors", weights=None)
    assert str(tmp_path / "vectors") in str(e.value)
    assert not (tmp_path / "vectors").exists()


def test_generate_without_dataset_dir_is_a_clear_error(tmp_path: Path, generated) -> None:  # type: ignore[no-untyped-def]
    ds, _, _ = generated
    with pytest.raises(RevsearchError, match="dataset_dir is required with generate=True"):
        reverse_image_search(ds / "a" / "img0000.jpg", "resnet50", None, tmp_path / "v", generate=True, weights=None)
    with pytest.raises(RevsearchError, match="does not exist"):
        reverse_image_search(
            ds / "a" / "img0000.jpg", "resnet50", tmp_path / "nope", tmp_path / "v", generate=True, weights=None
        )
    with pytest.raises(RevsearchError, match="vector_dir is required"):
        reverse_image_search(ds / "a" / "img0000.jpg", "resnet50", ds, None, weights=None)
    assert not (tmp_path / "v").exists()


def test_unreadable_query_fails_before_indexing(tmp_path: Path, generated) -> None:  # type: ignore[no-untyped-def]
    ds, _, _ = generated
    with pytest.raises(ImageReadError, match="not an image"):
        reverse_image_search(b"not an image", "resnet50", ds, tmp_path / "v", generate=True, weights=None)
    with pytest.raises(ImageReadError, match="does not exist"):
        reverse_image_search(tmp_path / "missing.jpg", "resnet50", ds, tmp_path / "v", generate=True, weights=None)
    assert not Index.exists(tmp_path / "v")


def test_another_model_is_refused_and_the_index_untouched(generated) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = generated
    before = {p.name: p.read_bytes() for p in vec.iterdir()}
    query = ds / "a" / "img0000.jpg"
    with pytest.raises(ModelMismatchError, match="resnet50-seed"):
        reverse_image_search(query, "resnet50-seed", ds, vec, generate=True, weights=None)
    with pytest.raises(ModelMismatchError, match="dim: index has 2048, query has 1024"):
        reverse_image_search(query, "mobilenet", ds, vec, generate=True, weights=None)
    with pytest.raises(ModelMismatchError, match="resnet50-seed"):
        reverse_image_search(query, "resnet50-seed", ds, vec, generate=False, weights=None)
    with pytest.raises(ModelMismatchError, match="weights"):
        reverse_image_search(query, Embedder("resnet50", weights="imagenet"), ds, vec)
    assert {p.name: p.read_bytes() for p in vec.iterdir()} == before
    assert json_count(vec) == N


def json_count(vec: Path) -> int:
    return int(json.loads((vec / MANIFEST_NAME).read_text())["count"])


def test_model_name_uses_the_preprocessing_recorded_in_the_index(tmp_path: Path) -> None:
    """An index built with non-default preprocessing (pad + average pooling) is searched with that
    preprocessing when the caller names the same model, instead of being refused as a mismatch."""
    from revsearch.embedding import get_embedder
    from revsearch import Index

    ds = tmp_path / "ds"
    write_photos(ds, 6)
    padded = get_embedder("resnet50", weights=None, fit="pad", pooling="avg")
    Index.build(ds, tmp_path / "vec", padded, progress=False)
    query = sorted(ds.iterdir())[2]
    results = reverse_image_search(query, "resnet50", ds, tmp_path / "vec", False, k=3, weights=None)
    assert results[0].relpath == query.name
    assert results[0].score == pytest.approx(1.0, abs=1e-4)
    assert results.index is not None and "pad:" in results.index.spec["preprocessing"]
