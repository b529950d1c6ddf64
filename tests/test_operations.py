"""The operations layer (revsearch.operations) and the typed manifest (revsearch.store.Manifest):
what every front end calls, through public names only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_photos

import revsearch
from revsearch import ImageQuery, Index, IndexingResult, Query, VectorQuery, build_index, open_index, search_index
from revsearch import update_index
from revsearch.embedding import Embedder
from revsearch.errors import IndexNotFoundError, ModelMismatchError
from revsearch.operations import IncompatibleOptionsError, register_query_kind, resolve_embedder, search
from revsearch.store import MANIFEST_NAME, MIGRATIONS, SPEC_KEYS, Manifest, read_manifest, writing


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, resnet_random: Embedder) -> tuple[Path, Path, IndexingResult]:
    base = tmp_path_factory.mktemp("ops")
    write_photos(base / "photos" / "a", 6, start=0)
    write_photos(base / "photos" / "b", 4, start=6, ext=".png")
    result = build_index(base / "photos", base / "vectors", resnet_random, progress=False)
    return base / "photos", base / "vectors", result


def test_build_index_returns_the_public_index_and_unpacks_as_index_report(built) -> None:  # type: ignore[no-untyped-def]
    ds, vec, result = built
    index, report = result
    assert isinstance(index, revsearch.Index) and index is result.index and report is result.report
    assert len(index) == 10 and len(report.added) == 10 and result.dask is None
    assert result.summary() == report.summary() and "10 added" in result.summary()
    assert revsearch.Index is Index and revsearch.search_index is search


def test_search_kinds_image_path_bytes_vector_agree(built) -> None:  # type: ignore[no-untyped-def]
    ds, vec, result = built
    query = ds / "a" / "img0002.jpg"
    by_path = search_index(vec, query, k=4)
    by_bytes = search(result.index, query.read_bytes(), k=4)
    by_vector = search(vec, result.index.vectors[by_path[0].row], k=4)
    # found itself (with the default expansion the score is the expanded query's cosine with the augmented vector)
    assert by_path[0].relpath == "a/img0002.jpg" and by_path[0].score == pytest.approx(1.0, abs=1e-3)
    assert search(vec, query, k=1, expand=False)[0].score == pytest.approx(1.0, abs=1e-4)
    assert [m.relpath for m in by_bytes] == [m.relpath for m in by_path]
    assert [m.relpath for m in by_vector] == [m.relpath for m in by_path]
    assert [m.relpath for m in search(vec, ImageQuery(query), k=4, exact=True)] == [m.relpath for m in by_path]


def test_scope_options_and_conflicts(built) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = built
    query = ds / "a" / "img0002.jpg"
    under_b = search(vec, query, k=9, under="b")
    assert len(under_b) == 4 and all(m.relpath.startswith("b/") for m in under_b)
    no_png = search(vec, query, k=9, exclude=["*.png"])
    assert len(no_png) == 6 and all(m.relpath.endswith(".jpg") for m in no_png)
    scoped = search(vec, query, k=9, qe=3, under="b")  # expansion works within a scope
    assert len(scoped) == 4 and all(m.relpath.startswith("b/") for m in scoped)
    with pytest.raises(IncompatibleOptionsError, match="under/exclude"):
        search(vec, query, rotations=True, under="b")
    with pytest.raises(IncompatibleOptionsError, match="expand=False"):
        search(vec, query, qe=2, expand=False)
    with pytest.raises(IncompatibleOptionsError, match="dask"):
        search(vec, query, qe=2, dask="local")
    with pytest.raises(IncompatibleOptionsError, match="image query"):
        search(vec, np.ones(2048, np.float32), rotations=True)
    with pytest.raises(ValueError, match="does not fit an index of 2048-d"):
        search(vec, np.ones(7, np.float32))
    assert issubclass(IncompatibleOptionsError, ValueError)


def test_query_expansion_goes_through_the_same_call(built) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = built
    plain = search(vec, ds / "a" / "img0002.jpg", k=5)
    expanded = search(vec, ds / "a" / "img0002.jpg", k=5, qe=2)
    assert expanded[0].relpath == plain[0].relpath and len(expanded) == 5


def test_a_new_query_kind_slots_in(built) -> None:  # type: ignore[no-untyped-def]
    """A front end (e.g. text queries) registers a kind; search() then takes its values as they are."""
    ds, vec, result = built
    target = result.index.vectors[3]

    class RowQuery(Query):
        label = "row"

        def __init__(self, spec: str) -> None:
            self.row = int(spec.split(":", 1)[1])

        def vectors(self, index, embedder):  # type: ignore[no-untyped-def]
            return np.asarray(index.vectors[self.row : self.row + 1], np.float32)

    register_query_kind(lambda v: isinstance(v, str) and v.startswith("row:"), RowQuery)
    got = search(vec, "row:3", k=3)
    assert got[0].row == 3 and got[0].score == pytest.approx(float(target @ target), abs=1e-4)
    assert isinstance(revsearch.operations.as_query("row:1"), RowQuery)
    assert isinstance(revsearch.operations.as_query(np.zeros(4, np.float32)), VectorQuery)


def test_update_index_uses_the_recorded_folder_and_moves_an_open_index(built, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = built
    import shutil

    ds2, vec2 = tmp_path / "photos", tmp_path / "vectors"
    shutil.copytree(ds, ds2)
    first, _ = build_index(ds2, vec2, progress=False, model=Embedder("resnet50", weights=None))
    write_photos(ds2 / "c", 2, start=40)
    result = update_index(first, progress=False)  # model and folder: as the index records them
    assert sorted(result.report.added) == ["c/img0040.jpg", "c/img0041.jpg"] and result.report.embedded == 2
    assert len(first) == 12 and len(open_index(vec2)) == 12  # the open Index reads the new state
    with pytest.raises(IndexNotFoundError):
        update_index(tmp_path / "nothing")


def test_resolve_embedder_keeps_the_recorded_pipeline(built) -> None:  # type: ignore[no-untyped-def]
    _, vec, result = built
    index = open_index(vec)
    same = lambda spec: {k: spec.get(k) for k in SPEC_KEYS}  # noqa: E731  (what makes vectors comparable)
    assert same(resolve_embedder(index).spec) == same(index.spec)  # the index's own (precision: the default's)
    assert resolve_embedder(index, "resnet50", weights=None).spec["preprocessing"] == index.spec["preprocessing"]
    with pytest.raises(ModelMismatchError):
        build_index(vec.parent / "photos", vec, "mobilenet", weights=None, progress=False)


def test_manifest_is_typed_and_the_only_reader_of_its_keys(built) -> None:  # type: ignore[no-untyped-def]
    ds, vec, result = built
    m = read_manifest(vec)
    assert isinstance(m, Manifest) and isinstance(result.index.manifest, Manifest)
    assert m.format_version == Manifest.VERSION and not m.needs_migration and m.dim == 2048
    assert m.count == 10 and m.complete and [s.count for s in m.shards] == [10]
    assert m.dataset_dir(vec) == ds.resolve() and m.dataset_absolute == str(ds.resolve())
    assert m.exclude == [] and m.ann is None and m.ann_stale is None and m.imported_from is None
    assert json.loads((vec / MANIFEST_NAME).read_text()) == dict(m)  # what is on disk, as a dict
    assert MIGRATIONS and all(1 <= v < Manifest.VERSION for v in MIGRATIONS)  # only older versions migrate


def test_commit_keywords_write_the_entries_and_the_stale_swap_happens_once(tmp_path: Path, built) -> None:  # type: ignore[no-untyped-def]
    _, vec, _ = built
    import shutil

    folder = tmp_path / "v"
    shutil.copytree(vec, folder)
    with writing(folder, create=False) as w:
        m = w.commit(exclude=["raw"], built_with="dask", ann={"file": None, "kind": "flat", "count": 10})
        assert m.exclude == ["raw"] and m.built_with == "dask" and m.ann["kind"] == "flat"
        m = w.commit(stale_ann=True)  # the vectors change: the approximate index becomes stale, once
        assert m.ann is None and m.ann_stale["kind"] == "flat"
        m = w.commit(stale_ann=True)  # a second checkpoint keeps what it remembered
        assert m.ann is None and m.ann_stale["kind"] == "flat"
        m = w.commit(ann=None, exclude=[], built_with=None)  # None (or an empty list) removes an entry
        assert m.ann is None and m.ann_stale is None and m.exclude == [] and m.built_with is None
        with pytest.raises(ValueError, match="not both"):
            w.commit(ann=None, stale_ann=True)
    on_disk = json.loads((folder / MANIFEST_NAME).read_text())
    assert "exclude" not in on_disk and "ann_stale" not in on_disk and "built_with" not in on_disk


def test_the_read_only_view_says_where_writing_went(built) -> None:  # type: ignore[no-untyped-def]
    from revsearch import index as index_module

    _, vec, _ = built
    with pytest.raises(AttributeError, match="read-only view.*build_index"):
        index_module.Index.build(vec.parent / "photos", vec)
    with pytest.raises(AttributeError, match="update_index"):
        index_module.Index.open(vec).update()
    assert isinstance(Index.open(vec), index_module.Index)  # the package's Index is the view plus writing


def test_notebook_settings_step_looks_for_gpus_without_tensorflow_on_a_cpu() -> None:
    """Step 2 ("auto" vectors) asks for GPUs the way the library does: on a machine without GPU device
    files TensorFlow is not imported, so it prints none of its start-up lines (there is nothing to filter)."""
    import subprocess
    import sys

    code = (
        "import sys, revsearch.backends as b, revsearch.notebook as nb\n"
        "b.gpu_device_nodes = lambda: False\n"
        "print(nb.default_vectors(), nb.gpu_devices(), 'tensorflow' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={**__import__("os").environ, "PYTHONPATH": str(root)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["original", "[]", "False"] and out.stderr == ""
