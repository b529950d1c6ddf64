"""Tests for exact cosine search: topk_cosine, Index.search_vectors / topk, shards, memory-mapping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import revsearch.indexing as indexing
from revsearch.embedding import Embedder
from revsearch.errors import ModelMismatchError, RevsearchError
from revsearch import Index
from revsearch.search import Match, topk_cosine

DIM = 64
SPEC = Embedder("resnet50", weights=None).spec | {"dim": DIM}


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def brute_force(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: score every row, sort best first (ties by row number)."""
    q = np.atleast_2d(np.asarray(queries, np.float32))
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    scores = q.astype(np.float64) @ np.asarray(vectors, np.float64).T  # (b, n)
    rows = np.stack([np.lexsort((np.arange(scores.shape[1]), -s))[:k] for s in scores])
    return np.take_along_axis(scores, rows, axis=1), rows


@pytest.fixture(scope="module")
def collection() -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(7)
    vecs = unit(rng, 300)
    paths = [f"dir{i % 3}/img{i:04d}.jpg" for i in range(300)]
    return vecs, paths


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory: pytest.TempPathFactory, collection) -> Index:
    vecs, paths = collection
    return Index.from_vectors(tmp_path_factory.mktemp("one") / "vec", vecs, paths, SPEC, dataset_dir="/data/photos")


# ---------------------------------------------------------------- topk_cosine


def test_topk_cosine_matches_brute_force_single_and_batch(collection) -> None:
    vecs, _ = collection
    rng = np.random.default_rng(1)
    queries = unit(rng, 5)
    scores, rows = topk_cosine([vecs], queries, 9)
    ref_s, ref_r = brute_force(vecs, queries, 9)
    assert scores.shape == rows.shape == (5, 9)
    assert rows.dtype == np.int64 and scores.dtype == np.float32
    np.testing.assert_array_equal(rows, ref_r)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 0), "best first"
    s1, r1 = topk_cosine([vecs], queries[2], 9)  # a single (dim,) query gives one row
    np.testing.assert_array_equal(r1[0], ref_r[2])


def test_topk_cosine_chunks_and_shards_give_the_same_answer(collection) -> None:
    vecs, _ = collection
    q = unit(np.random.default_rng(2), 3)
    whole = topk_cosine([vecs], q, 12)
    pieces = topk_cosine([vecs[:37], vecs[37:200], vecs[200:]], q, 12, chunk_rows=16)
    np.testing.assert_array_equal(whole[1], pieces[1])
    np.testing.assert_allclose(whole[0], pieces[0], atol=1e-6)


def test_topk_cosine_k_larger_than_collection_and_exclude(collection) -> None:
    vecs, _ = collection
    small = vecs[:5]
    scores, rows = topk_cosine([small], small[0], 9)
    assert rows.shape == (1, 5)
    assert rows[0, 0] == 0 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    scores, rows = topk_cosine([small], small[0], 9, exclude=[0, 3])
    assert sorted(rows[0].tolist()) == [1, 2, 4]
    assert np.isfinite(scores).all()
    scores, rows = topk_cosine([vecs], vecs[10], 3, exclude=[10])
    ref = vecs @ vecs[10]
    ref[10] = -np.inf
    assert rows[0].tolist() == np.argsort(-ref, kind="stable")[:3].tolist()


def test_topk_cosine_rejects_bad_queries(collection) -> None:
    vecs, _ = collection
    with pytest.raises(ModelMismatchError, match="dimension 32"):
        topk_cosine([vecs], np.ones(32, np.float32), 3)
    with pytest.raises(ValueError, match="NaN"):
        topk_cosine([vecs], np.full(DIM, np.nan, np.float32), 3)
    with pytest.raises(ValueError, match="at least 1"):
        topk_cosine([vecs], vecs[0], 0)


def test_topk_cosine_ties_are_broken_by_row_number() -> None:
    rng = np.random.default_rng(3)
    vecs = unit(rng, 50, 8)
    vecs[[30, 40, 45]] = vecs[5]  # four identical images
    scores, rows = topk_cosine([vecs], vecs[5], 2)
    assert rows[0].tolist() == [5, 30]
    scores, rows = topk_cosine([vecs[:20], vecs[20:42], vecs[42:]], vecs[5], 3, chunk_rows=7)
    assert rows[0].tolist() == [5, 30, 40]
    np.testing.assert_allclose(scores[0], 1.0, atol=1e-6)


# ---------------------------------------------------------------- Index.search_vectors


def test_search_vectors_equals_brute_force(one_shard: Index, collection) -> None:
    vecs, paths = collection
    q = unit(np.random.default_rng(4), 1)[0]
    matches = one_shard.search_vectors(q, k=7, expand=False)
    assert isinstance(matches, list) and len(matches) == 7
    assert all(isinstance(m, Match) for m in matches)
    ref_s, ref_r = brute_force(one_shard.vectors, q, 7)
    assert [m.row for m in matches] == ref_r[0].tolist()
    assert [m.rank for m in matches] == list(range(7))
    np.testing.assert_allclose([m.score for m in matches], ref_s[0], atol=1e-5)
    for m in matches:
        assert m.relpath == paths[m.row]
        assert m.path == Path("/data/photos") / paths[m.row]
        assert m.name == Path(paths[m.row]).name


def test_search_vectors_batch_as_list_of_lists(one_shard: Index) -> None:
    rng = np.random.default_rng(5)
    queries = (unit(rng, 3) * 4.0).tolist()  # not normalised, plain Python lists
    out = one_shard.search_vectors(queries, k=4, expand=False)
    assert len(out) == 3 and all(len(row) == 4 for row in out)
    ref_s, ref_r = brute_force(one_shard.vectors, np.array(queries), 4)
    for i, row in enumerate(out):
        assert [m.row for m in row] == ref_r[i].tolist()
        # scores are cosines whatever the query's length
        np.testing.assert_allclose([m.score for m in row], ref_s[i], atol=1e-5)
        assert all(-1.0 - 1e-5 <= m.score <= 1.0 + 1e-5 for m in row)


def test_search_vectors_finds_an_indexed_vector_first(one_shard: Index, collection) -> None:
    vecs, paths = collection
    for row in (0, 123, 299):
        best = one_shard.search_vectors(vecs[row], k=3, expand=False)[0]
        assert best.row == row and best.relpath == paths[row]
        assert best.score == pytest.approx(1.0, abs=1e-5)
    assert one_shard.search_vectors(vecs[5], k=3, exclude=[5], expand=False)[0].row != 5


def test_search_vectors_dataset_dir_override(one_shard: Index, tmp_path: Path) -> None:
    m = one_shard.search_vectors(one_shard.vectors[3], k=1, dataset_dir=tmp_path)[0]
    assert m.path == tmp_path / m.relpath


def test_search_vectors_wrong_dimension_is_a_model_mismatch(one_shard: Index) -> None:
    with pytest.raises(ModelMismatchError, match=f"index holds {DIM}-d"):
        one_shard.search_vectors(np.ones(DIM + 1, np.float32))
    with pytest.raises(ModelMismatchError):
        one_shard.search_vectors(np.ones((2, 2048), np.float32))


def test_open_memory_maps(one_shard: Index) -> None:
    opened = Index.open(one_shard.folder)
    assert len(opened.shards) == 1
    assert isinstance(opened.shards[0], np.memmap)
    assert opened.shards[0].dtype == np.float32 and opened.shards[0].shape == (300, DIM)
    assert len(opened) == 300 and opened.dim == DIM
    np.testing.assert_allclose(np.linalg.norm(opened.vectors, axis=1), 1.0, atol=1e-5)


def test_empty_index_search_is_a_clear_error(tmp_path: Path, resnet_random: Embedder) -> None:
    idx = Index.from_vectors(tmp_path / "vec", np.zeros((0, DIM), np.float32), [], SPEC)
    assert len(idx) == 0 and idx.vectors.shape == (0, DIM)
    with pytest.raises(RevsearchError, match="empty"):
        idx.search_vectors(np.ones(DIM, np.float32))
    (tmp_path / "nothing").mkdir()
    idx, report = Index.build(tmp_path / "nothing", tmp_path / "vec2", resnet_random, progress=False)
    assert len(idx) == 0 and idx.complete and report.embedded == 0
    with pytest.raises(RevsearchError, match="empty"):
        idx.search_vectors(np.ones(DIM, np.float32))


# ---------------------------------------------------------------- sharded index


def test_sharded_index_searches_like_one_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resnet_random: Embedder, one_shard: Index
) -> None:
    """A real build with tiny checkpoints and a tiny merge target keeps several shards."""
    from conftest import write_photos

    write_photos(tmp_path / "ds", 10)
    monkeypatch.setattr(indexing, "TARGET_SHARD_BYTES", 1)
    sharded, report = Index.build(
        tmp_path / "ds", tmp_path / "sharded", resnet_random, batch_size=3, checkpoint_every=3, progress=False
    )
    assert len(report.added) == 10
    assert len(sharded.shards) >= 3
    assert all(isinstance(s, np.memmap) for s in sharded.shards)
    assert sum(len(s) for s in sharded.shards) == len(sharded) == len(sharded.paths) == 10
    single = Index.from_vectors(
        tmp_path / "single", sharded.vectors, sharded.paths, sharded.spec, dataset_dir=tmp_path / "ds"
    )
    assert len(single.shards) == 1
    queries = sharded.vectors[[0, 4, 9]]
    got = sharded.search_vectors(queries, k=6, expand=False)
    want = single.search_vectors(queries, k=6, expand=False)
    for g, w in zip(got, want):
        assert [m.relpath for m in g] == [m.relpath for m in w]
        np.testing.assert_allclose([m.score for m in g], [m.score for m in w], atol=1e-6)
    for i, row in zip((0, 4, 9), got):
        assert row[0].relpath == sharded.paths[i]
    # the default (expanded) search of the stored augmentation agrees between the two layouts too
    for g, w in zip(sharded.search_vectors(queries, k=6), single.search_vectors(queries, k=6)):
        assert [m.relpath for m in g] == [m.relpath for m in w]
        np.testing.assert_allclose([m.score for m in g], [m.score for m in w], atol=1e-5)
    # searching with images gives the same as searching with their vectors
    by_image = sharded.search(tmp_path / "ds" / sharded.paths[4], k=6, expand=False)
    assert [m.relpath for m in by_image] == [m.relpath for m in got[1]]


def test_sharded_synthetic_index_matches_brute_force(tmp_path: Path, collection) -> None:
    """Shards written through the store's public writer (no model) search like one matrix."""
    from revsearch import store

    vecs, paths = collection
    folder = tmp_path / "vec"
    with store.writing(folder) as w:
        w.commit(spec=SPEC, complete=False)
        shards = []
        for lo, hi in ((0, 50), (50, 51), (51, 300)):
            rows = np.zeros(hi - lo, store.ROW_DTYPE)
            shards.append(w.write_shard(vecs[lo:hi], rows, paths[lo:hi]))
        w.commit(shards=shards, complete=True)
    idx = Index.open(folder)
    assert [len(s) for s in idx.shards] == [50, 1, 249]
    assert idx.paths == paths
    np.testing.assert_array_equal(idx.vectors, vecs)
    q = unit(np.random.default_rng(9), 4)
    ref_s, ref_r = brute_force(vecs, q, 10)
    out = idx.search_vectors(q, k=10, expand=False)
    assert [[m.row for m in row] for row in out] == ref_r.tolist()
    assert idx.path_of(50, "/x") == Path("/x") / paths[50]
