"""The approximate (FAISS) index: planning, building, searching, falling back, and staying up to date."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_photos

faiss = pytest.importorskip("faiss")

from revsearch.retrieval import ann  # noqa: E402
from revsearch.core.errors import OptionalDependencyError, RevsearchError  # noqa: E402
from revsearch import Index  # noqa: E402
from revsearch.storage.store import MANIFEST_NAME


def clustered(n: int, dim: int, *, centres: int = 40, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 unit vectors drawn around ``centres`` random centres."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    x = c[rng.integers(0, centres, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def spec(dim: int) -> dict:
    return {"model": "test", "preprocessing": "none", "dim": dim, "weights": "none", "precision": "float32"}


@pytest.fixture()
def vec_index(tmp_path: Path) -> Index:
    x = clustered(4000, 32)
    return Index.from_vectors(tmp_path / "vec", x, [f"img{i:05d}.jpg" for i in range(len(x))], spec(32))


def queries(index: Index, n: int = 30, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = np.asarray(index.vectors[:n]) + 0.3 * rng.standard_normal((n, index.dim)).astype(np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def recall(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b)]))


def ann_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("ann-"))


# ------------------------------------------------------------------ planning
def test_import_revsearch_loads_no_optional_dependency():
    code = (
        "import sys, revsearch, revsearch.retrieval.ann, revsearch.storage.distributed, revsearch.storage.index, revsearch.cli;"
        "print([m for m in ('faiss', 'dask', 'distributed', 'tensorflow', 'keras') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_plan_chooses_by_size_and_budget():
    assert ann.plan_ann(99_999, 2048)[0] == "flat"
    kind, params, mem = ann.plan_ann(1_000_000, 2048)
    assert kind == "ivfpq"
    assert 2048 % params["pq_bytes"] == 0 and params["nlist"] == 1024
    assert mem <= 1_000_000 * 2048 * 4 / 8  # within the default budget: 1/8 of the float32 matrix
    assert ann.plan_ann(1_000_000, 2048, memory_budget="20GB")[0] == "hnsw"
    # a tighter budget gives shorter codes; an impossible one is refused with the numbers
    small = ann.plan_ann(1_000_000, 2048, memory_budget="100MB")[1]["pq_bytes"]
    assert small < params["pq_bytes"]
    with pytest.raises(RevsearchError, match="memory budget"):
        ann.plan_ann(1_000_000, 2048, memory_budget="1MB")
    with pytest.raises(ValueError):
        ann.plan_ann(10, 8, kind="lsh")


def test_parse_bytes():
    assert ann.parse_bytes("1.5GiB") == int(1.5 * 2**30)
    assert ann.parse_bytes("512MB") == 512 * 10**6
    assert ann.parse_bytes(1000) == 1000 and ann.parse_bytes(None) is None
    with pytest.raises(ValueError):
        ann.parse_bytes("lots")


# ------------------------------------------------------------------ building and searching
@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_build_records_and_search_uses_it(vec_index: Index, kind: str, monkeypatch: pytest.MonkeyPatch):
    meta = ann.build_ann(vec_index, kind=kind, progress=False)
    folder = vec_index.folder
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["ann"] == meta and vec_index.manifest["ann"] == meta
    assert meta["kind"] == kind and meta["count"] == len(vec_index) and (folder / meta["file"]).is_file()
    assert {"file", "kind", "params", "count", "built"} <= set(meta)
    assert ann_files(folder) == [meta["file"]]
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]

    calls = []
    real = ann.ann_topk
    monkeypatch.setattr(ann, "ann_topk", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    reopened = Index.open(folder)
    q = queries(reopened)
    s, r = reopened.topk(q, 9)
    assert calls, "search did not use the approximate index"
    n_calls = len(calls)
    se, re_ = reopened.topk(q, 9, exact=True)
    assert len(calls) == n_calls  # exact=True bypasses it
    assert s.shape == (len(q), 9) and s.dtype == np.float32 and r.dtype == np.int64
    assert recall(r, re_) >= 0.9
    # re-ranked scores are exact cosines, best first
    np.testing.assert_allclose(s, np.einsum("bkd,bd->bk", np.asarray(reopened.vectors)[r], q), atol=1e-5)
    assert (np.diff(s, axis=1) <= 1e-7).all()
    # exclude and a single query
    s1, r1 = reopened.topk(q[0], 5, exclude=[int(re_[0, 0])])
    assert r1.shape == (1, 5) and int(re_[0, 0]) not in r1[0]
    matches = reopened.search_vectors(q[0], 3)
    assert [m.rank for m in matches] == [0, 1, 2]


def test_flat_kind_writes_no_file_and_is_exact(vec_index: Index):
    meta = ann.build_ann(vec_index, progress=False)  # 4000 vectors: auto -> flat
    assert meta["kind"] == "flat" and meta["file"] is None and not ann_files(vec_index.folder)
    q = queries(vec_index)
    s, r = vec_index.topk(q, 9)
    se, re_ = vec_index.topk(q, 9, exact=True)
    assert (r == re_).all() and np.array_equal(s, se)


def test_rebuild_replaces_file_and_drop_removes_it(vec_index: Index):
    first = ann.build_ann(vec_index, kind="hnsw", progress=False)
    second = ann.build_ann(vec_index, kind="ivfpq", rerank=50, progress=False)
    assert first["file"] != second["file"] and ann_files(vec_index.folder) == [second["file"]]
    assert second["params"]["rerank"] == 50
    assert ann.drop_ann(vec_index) is True
    assert "ann" not in Index.open(vec_index.folder).manifest and not ann_files(vec_index.folder)
    assert ann.ann_info(vec_index.folder) is None


def test_without_faiss_search_falls_back_and_build_says_how_to_install(
    vec_index: Index, monkeypatch: pytest.MonkeyPatch
):
    ann.build_ann(vec_index, kind="hnsw", progress=False)
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    ann.clear_cache()
    q = queries(vec_index)
    s, r = vec_index.topk(q, 9)
    se, re_ = vec_index.topk(q, 9, exact=True)
    assert (r == re_).all()
    with pytest.raises(OptionalDependencyError, match=r"pip install revsearch\[ann\]"):
        ann.build_ann(vec_index, kind="ivfpq", progress=False)


def test_stale_count_or_missing_file_falls_back_to_exact(vec_index: Index):
    meta = ann.build_ann(vec_index, kind="hnsw", progress=False)
    vec_index.manifest["ann"]["count"] = len(vec_index) - 1  # as if built on other rows
    q = queries(vec_index)
    assert (vec_index.topk(q, 9)[1] == vec_index.topk(q, 9, exact=True)[1]).all()
    vec_index.manifest["ann"]["count"] = len(vec_index)
    ann.clear_cache()
    (vec_index.folder / meta["file"]).unlink()
    assert (vec_index.topk(q, 9)[1] == vec_index.topk(q, 9, exact=True)[1]).all()


def test_few_candidates_are_completed_exactly(vec_index: Index):
    ann.build_ann(vec_index, kind="ivfpq", nlist=64, nprobe=1, rerank=0, progress=False)
    q = queries(vec_index, 5)
    s, r = vec_index.topk(q, 500)  # far more than one cell holds: those queries are answered exactly
    assert r.shape == (5, 500) and np.isfinite(s).all()
    assert all(len(set(row)) == 500 for row in r)


def test_incomplete_or_empty_index_is_refused(tmp_path: Path):
    x = clustered(50, 8)
    idx = Index.from_vectors(tmp_path / "v", x, [f"{i}.jpg" for i in range(50)], spec(8))
    idx.manifest["complete"] = False
    (tmp_path / "v" / MANIFEST_NAME).write_text(json.dumps(idx.manifest))
    with pytest.raises(RevsearchError, match="incomplete"):
        ann.build_ann(tmp_path / "v", kind="hnsw", progress=False)


# ------------------------------------------------------------------ staying up to date
@pytest.fixture(scope="module")
def tiny_embedder():
    """A small seeded Keras CNN (16-d), so indexing photos takes milliseconds."""
    keras = pytest.importorskip("keras")
    from revsearch.models.embedding import Embedder

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name="tiny",
    )
    return Embedder(model)


def test_update_extends_then_rebuilds_the_approximate_index(tmp_path: Path, tiny_embedder, caplog):
    photos, vdir = tmp_path / "photos", tmp_path / "vec"
    write_photos(photos, 40)
    index, _ = Index.update_folder(photos, vdir, tiny_embedder, progress=False)
    first = ann.build_ann(index, kind="hnsw", progress=False)

    # new images only: the rows it was built on are unchanged, so it is extended
    write_photos(photos, 10, start=40)
    index, report = Index.update_folder(photos, vdir, tiny_embedder, progress=False)
    assert len(report.added) == 10
    meta = index.manifest["ann"]
    assert meta["count"] == 50 == len(index) and meta["last_update"]["action"] == "extended"
    assert meta["file"] != first["file"] and ann_files(vdir) == [meta["file"]]
    assert "ann_stale" not in index.manifest
    q = np.asarray(index.vectors[-5:])
    assert (index.topk(q, 1)[1][:, 0] == np.arange(45, 50)).all()  # the new rows are found

    # a removed image: rows move, so it is rebuilt (and the log says so)
    (photos / "img0003.jpg").unlink()
    with caplog.at_level("WARNING", logger="revsearch.retrieval.ann"):
        index, report = Index.update_folder(photos, vdir, tiny_embedder, progress=False)
    assert report.removed == ["img0003.jpg"]
    meta = index.manifest["ann"]
    assert meta["count"] == 49 and meta["last_update"]["action"] == "rebuilt"
    assert "rebuild" in caplog.text and ann_files(vdir) == [meta["file"]]
    s, r = index.topk(np.asarray(index.vectors[:3]), 3)
    assert (r[:, 0] == np.arange(3)).all()

    # nothing changed: kept as it is
    index, _ = Index.update_folder(photos, vdir, tiny_embedder, progress=False)
    assert index.manifest["ann"]["last_update"]["action"] == "kept"


def test_interrupted_update_leaves_a_note_and_the_rerun_rebuilds(
    tmp_path: Path, tiny_embedder, monkeypatch: pytest.MonkeyPatch
):
    photos, vdir = tmp_path / "photos", tmp_path / "vec"
    write_photos(photos, 20)
    index, _ = Index.update_folder(photos, vdir, tiny_embedder, progress=False)
    ann.build_ann(index, kind="hnsw", progress=False)
    write_photos(photos, 5, start=20)

    def killed(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(ann, "refresh_after_update", killed)
    with pytest.raises(KeyboardInterrupt):
        Index.update_folder(photos, vdir, tiny_embedder, progress=False)
    monkeypatch.undo()
    index = Index.open(vdir)
    assert "ann" not in index.manifest and index.manifest["ann_stale"]["count"] == 20
    q = np.asarray(index.vectors[:4])
    assert (index.topk(q, 3)[1] == index.topk(q, 3, exact=True)[1]).all()  # exact meanwhile
    index, _ = Index.update_folder(photos, vdir, tiny_embedder, progress=False)
    assert index.manifest["ann"]["count"] == 25 and "ann_stale" not in index.manifest
    assert len(ann_files(vdir)) == 1


# ------------------------------------------------------------------ command line
def test_cli_ann(vec_index: Index, capsys: pytest.CaptureFixture):
    from revsearch.cli import main

    folder = str(vec_index.folder)
    assert main(["ann", folder, "--kind", "ivfpq", "--nprobe", "4", "-q"]) == 0
    out = capsys.readouterr().out
    assert "ivfpq approximate index of 4000 vectors" in out and "nprobe=4" in out
    assert main(["ann", folder, "--info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"]["nprobe"] == 4
    assert main(["info", folder]) == 0 and "ivfpq, 4000 vectors" in capsys.readouterr().out
    assert main(["ann", folder, "--drop"]) == 0 and "removed" in capsys.readouterr().out
    assert main(["ann", folder, "--memory-budget", "1kB", "--kind", "ivfpq"]) == 1
    assert "memory budget" in capsys.readouterr().err


# ------------------------------------------------------------------ self-tuning
def isotropic(n: int, dim: int, centres: int, noise: float, seed: int = 0) -> np.ndarray:
    """Unit vectors in tight isotropic clusters: within a cluster the top-9 are decided by noise,
    so a compressed index with few re-scored candidates misses many of them (hard by design)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(0, centres, n)] + noise * rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def own_recall(index: Index, rows: np.ndarray, k: int = 9) -> float:
    """Recall@k of the index's default (approximate) search with its own vectors as queries."""
    q = np.asarray(index.vectors[rows])
    _, truth = index.topk(q, k + 1, exact=True)
    _, got = index.topk(q, k + 1)
    return ann.recall_without_self(got, truth, rows, k)


@pytest.fixture(scope="module")
def hard_index(tmp_path_factory) -> Index:
    # 6,000 vectors in 5 clusters of ~1,200: far more near-equidistant neighbours than the default
    # 100 candidates re-scored, so the planned defaults miss some of the true top-9.
    x = isotropic(6000, 32, centres=5, noise=0.5)
    folder = tmp_path_factory.mktemp("hard") / "vec"
    return Index.from_vectors(folder, x, [f"img{i:05d}.jpg" for i in range(len(x))], spec(32))


def test_planned_defaults_miss_neighbours_and_tuning_reaches_the_target(hard_index: Index):
    pytest.importorskip("faiss")
    rows = np.arange(0, 6000, 37)  # queries not all of which tuning sampled
    ann.build_ann(hard_index, kind="ivfpq", pq_bytes=4, target_recall=None, progress=False)
    assert "tuning" not in hard_index.manifest["ann"]
    untuned = own_recall(hard_index, rows)
    assert untuned < 0.92  # the data are hard for the defaults: tuning has something to do

    meta = ann.build_ann(hard_index, kind="ivfpq", pq_bytes=4, target_recall=0.95, progress=False)
    tuning = meta["tuning"]
    assert tuning["reached"] and tuning["recall"] >= 0.95 and tuning["k"] == 9
    assert meta["params"]["rerank"] == tuning["rerank"] and meta["params"]["nprobe"] == tuning["nprobe"]
    assert Index.open(hard_index.folder).manifest["ann"]["tuning"] == tuning  # recorded on disk
    # Recall measured on other queries agrees with what tuning measured (same distribution).
    assert own_recall(Index.open(hard_index.folder), rows) >= max(0.94, untuned + 0.03)
    # It chose the cheapest setting it found that reached the target.
    reached = [t for t in tuning["tried"] if t["recall"] >= 0.95]
    assert min(t["cost"] for t in reached) == ann.search_cost(
        "ivfpq", meta["params"], len(hard_index), hard_index.dim, tuning["nprobe"], tuning["rerank"]
    )


def test_tuning_keeps_an_explicit_setting_and_reports_an_unreachable_target(hard_index: Index, caplog):
    pytest.importorskip("faiss")
    meta = ann.build_ann(hard_index, kind="ivfpq", nlist=32, pq_bytes=4, nprobe=1, target_recall=0.9, progress=False)
    assert meta["params"]["nprobe"] == 1 and {t["nprobe"] for t in meta["tuning"]["tried"]} == {1}
    # A target that one cell of 32 cannot give, with rerank fixed too: best effort, said loudly.
    with caplog.at_level("WARNING", logger="revsearch.retrieval.ann"):
        meta = ann.build_ann(
            hard_index, kind="ivfpq", nlist=32, pq_bytes=4, nprobe=1, rerank=10, target_recall=1.0, progress=False
        )
    assert meta["tuning"]["reached"] is False and meta["tuning"]["recall"] < 1.0
    assert "below the target" in caplog.text


def test_hnsw_is_tuned_through_its_candidate_count(hard_index: Index):
    pytest.importorskip("faiss")
    meta = ann.build_ann(hard_index, kind="hnsw", target_recall=0.99, progress=False)
    assert meta["tuning"]["nprobe"] is None and meta["tuning"]["reached"]
    assert own_recall(Index.open(hard_index.folder), np.arange(3, 6000, 53)) >= 0.97


def test_target_recall_is_validated_and_the_cli_shows_the_measured_recall(hard_index: Index, capsys):
    pytest.importorskip("faiss")
    from revsearch.cli import main

    with pytest.raises(ValueError, match="target_recall"):
        ann.build_ann(hard_index, kind="ivfpq", target_recall=1.5, progress=False)
    assert main(["ann", str(hard_index.folder), "--kind", "ivfpq", "--nlist", "32", "--pq-bytes", "4", "-q"]) == 0
    built = capsys.readouterr().out
    assert main(["ann", str(hard_index.folder), "--info"]) == 0
    info = capsys.readouterr().out
    recall_line = f"measured recall@9 {ann.ann_info(hard_index.folder)['tuning']['recall']:.3f}"
    assert recall_line in built and recall_line in info and "target 0.950 reached" in info
    assert main(["ann", str(hard_index.folder), "--target-recall", "2"]) == 1
    assert "target_recall must be in (0, 1]" in capsys.readouterr().err


def test_knn_join_finds_each_rows_nearest_with_exact_scores_over_shards() -> None:
    x = clustered(3000, 32, seed=5)
    k = 4
    info: dict = {}
    got: dict[int, dict[int, float]] = {}
    for src, dst, sc in ann.knn_join([x[:1000], x[1000:]], k, info=info, seed=3):
        for a, b, s in zip(src.tolist(), dst.tolist(), sc.tolist()):
            got.setdefault(a, {})[b] = s
            got.setdefault(b, {})[a] = s
    plan = ann.plan_join(len(x))
    assert (info["nlist"], info["nprobe"]) == (plan["nlist"], plan["nprobe"]) and info["pairs_scored"] < len(x) ** 2
    s = x @ x.T
    np.fill_diagonal(s, -np.inf)
    truth = np.argsort(-s, axis=1, kind="stable")[:, :k]
    found = np.mean([len(set(truth[i]) & set(got.get(i, {}))) / k for i in range(len(x))])
    assert found >= 0.95  # recall@4 of the cells (3 probed of 16)
    for a, nbrs in list(got.items())[:200]:
        for b, sc in nbrs.items():
            assert a != b and sc == pytest.approx(float(x[a] @ x[b]), abs=1e-5)  # exact, never estimated
    # the same seed: the same pairs
    again = [np.concatenate(p) for p in zip(*ann.knn_join([x], k, seed=3))]
    first = [np.concatenate(p) for p in zip(*ann.knn_join([x[:1000], x[1000:]], k, seed=3))]
    assert all(np.array_equal(u, v) for u, v in zip(first, again))


def test_knn_join_against_scores_only_pairs_across() -> None:
    x, y = clustered(800, 16, seed=6), clustered(500, 16, seed=7)
    y[:50] = x[:50]  # copies across
    y[60] = np.nan  # damaged: never pairs
    info: dict = {}
    pairs = [np.concatenate(p) for p in zip(*ann.knn_join([x], 3, against=[y], threshold=0.99, info=info))]
    src, dst, sc = pairs
    assert info["damaged"] == 1 and len(src)
    assert all((a < 800) != (b < 800) for a, b in zip(src, dst))
    assert 800 + 60 not in set(src.tolist()) | set(dst.tolist())
    assert {frozenset((i, 800 + i)) for i in range(50)} <= {frozenset(p) for p in zip(src.tolist(), dst.tolist())}
    assert (sc >= 0.99).all()
