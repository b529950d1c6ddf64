"""Expansion by default (issue 18): query expansion and database-side augmentation on every search,
the augmentation stored in the index, kept up to date incrementally, crash-safe and migrated."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_photos

from revsearch import Expansion, cli
from revsearch.storage import store
from revsearch.models.embedding import Embedder
from revsearch.quality.evaluate import evaluate_index
from revsearch import Index
from revsearch.storage.store import MANIFEST_NAME
from revsearch.retrieval.rerank import DEFAULT_EXPANSION, DatabaseAugmentation, search_expanded

REPO = Path(__file__).resolve().parents[1]


def manifest(vec: Path) -> dict:
    return json.loads((vec / MANIFEST_NAME).read_text())


def stored_dba(idx: Index) -> store.StoredAugmentation:
    aug = idx.snapshot.augmentation
    assert aug is not None, "the index stores no augmentation"
    return aug


def check_matches_full_computation(idx: Index) -> None:
    """The stored augmentation is what a computation from scratch gives."""
    aug = stored_dba(idx)
    full = DatabaseAugmentation.compute(idx.vectors, aug.k, aug.alpha)
    np.testing.assert_array_equal(np.asarray(aug.neighbours), full.neighbours)
    np.testing.assert_allclose(np.asarray(aug.vectors), full.vectors, atol=2e-6)


def neighbour_paths(idx: Index) -> dict[str, list[str]]:
    """Each path's k nearest other paths, from scratch."""
    full = DatabaseAugmentation.compute(idx.vectors, DEFAULT_EXPANSION.dba, DEFAULT_EXPANSION.dba_alpha)
    paths = idx.paths
    return {p: [paths[j] for j in row if j >= 0] for p, row in zip(paths, full.neighbours)}


@pytest.fixture()
def built(tmp_path: Path, resnet_random: Embedder) -> tuple[Path, Path]:
    ds, vec = tmp_path / "ds", tmp_path / "vec"
    write_photos(ds, 24)
    Index.build(ds, vec, resnet_random, progress=False)
    return ds, vec


def test_every_index_stores_its_augmentation_and_search_expands_by_default(built, resnet_random) -> None:  # type: ignore[no-untyped-def]
    ds, vec = built
    idx = Index.open(vec)
    assert idx.manifest["format_version"] == store.FORMAT_VERSION == 4
    assert idx.expansion == DEFAULT_EXPANSION and DEFAULT_EXPANSION.active
    check_matches_full_computation(idx)
    q = idx.vectors[[3, 17]]
    aug = DatabaseAugmentation.compute(idx.vectors, DEFAULT_EXPANSION.dba, DEFAULT_EXPANSION.dba_alpha)
    s_ref, r_ref = search_expanded(idx, q, 5, qe=DEFAULT_EXPANSION.qe, alpha=DEFAULT_EXPANSION.alpha, dba=aug)
    default = idx.search_vectors(q, 5)
    assert [[m.row for m in row] for row in default] == r_ref.tolist()
    np.testing.assert_allclose([[m.score for m in row] for row in default], s_ref, atol=1e-5)
    # one switch turns it off: the plain cosine search of the stored (raw) vectors
    plain = idx.search_vectors(q, 5, expand=False)
    s_raw, r_raw = idx.topk(q, 5)
    assert [[m.row for m in row] for row in plain] == r_raw.tolist()
    assert plain[0][0].score == pytest.approx(1.0, abs=1e-5)
    assert not np.allclose(s_ref, s_raw)  # expansion changed something
    # the raw vectors are still what the index holds
    assert np.allclose(np.linalg.norm(idx.vectors, axis=1), 1.0, atol=1e-4)
    assert not np.allclose(np.asarray(stored_dba(idx).vectors), idx.vectors)
    # image search, with the query's own photo first either way
    photo = ds / idx.paths[5]
    assert idx.search(photo, 3)[0].relpath == idx.paths[5]
    assert idx.search(photo, 3, expand=False)[0].score == pytest.approx(1.0, abs=1e-4)


def test_an_update_recomputes_only_the_rows_whose_neighbours_change(built, resnet_random) -> None:  # type: ignore[no-untyped-def]
    ds, vec = built
    before = Index.open(vec)
    old_nb = neighbour_paths(before)
    write_photos(ds, 2, start=100)  # two new photos
    (ds / before.paths[7]).unlink()  # and one gone
    idx, report = Index.build(ds, vec, resnet_random, progress=False)
    assert len(idx) == 25
    new_nb = neighbour_paths(idx)
    # the rows whose neighbour lists are not what they were, and the new rows: nothing else
    expected = sum(1 for p, nb in new_nb.items() if old_nb.get(p) != nb)
    assert 2 <= expected < len(idx) - 10
    assert report.augmented == expected
    check_matches_full_computation(idx)
    assert "dba_stale" not in idx.manifest
    # nothing changed: nothing recomputed, nothing rewritten
    files = sorted(p.name for p in vec.iterdir())
    _, again = Index.build(ds, vec, resnet_random, progress=False)
    assert again.augmented == 0 and sorted(p.name for p in vec.iterdir()) == files


KILLED_UPDATE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    import revsearch.retrieval.rerank as rerank
    from revsearch import Index

    original = rerank.augmented_blocks

    def slow(*args, **kwargs):
        for i, block in enumerate(original(*args, **kwargs, block=4)):
            if i == 2:
                Path(sys.argv[3]).write_text("writing")
                time.sleep(120)
            yield block

    rerank.augmented_blocks = slow
    from revsearch.models.embedding import get_embedder

    emb = get_embedder("resnet50", weights=None, precision="float32")
    Index.build(sys.argv[1], sys.argv[2], emb, progress=False)
    """
)


def test_a_killed_update_leaves_a_consistent_index_and_the_next_one_finishes(built, resnet_random, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ds, vec = built
    before = Index.open(vec)
    reference = before.search_vectors(before.vectors[:4], 5)
    for p in before.paths[:3]:  # removed rows: the update embeds nothing
        (ds / p).unlink()
    marker = tmp_path / "marker"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_UPDATE.format(repo=str(REPO)), str(ds), str(vec), str(marker)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 240
    try:
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the update ended (rc={proc.returncode}) before the kill point: "
                            f"{proc.stderr.read().decode(errors='replace')[-2000:]}")
            assert time.monotonic() < deadline, "the update did not reach the kill point"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # killed while writing the augmentation: the rows are committed, the old augmentation is set aside
    idx = Index.open(vec)
    m = idx.manifest
    assert len(idx) == 21 and m["count"] == 21 and "dba" not in m and m["dba_stale"]["count"] == 24
    assert idx.snapshot.augmentation is None
    # search still expands, from an augmentation computed in memory: the same as from scratch
    aug = DatabaseAugmentation.compute(idx.vectors, 2, 3.0)
    np.testing.assert_allclose(idx.augmentation().vectors, aug.vectors, atol=2e-6)
    _, r_ref = search_expanded(idx, idx.vectors[:4], 5, qe=2, alpha=3.0, dba=aug)
    assert [[x.row for x in row] for row in idx.search_vectors(idx.vectors[:4], 5)] == r_ref.tolist()
    assert [x.relpath for x in reference[3]] != []  # the old state was searchable too
    # the next update brings it up to date from what was set aside, not from scratch
    idx2, report = Index.build(ds, vec, resnet_random, progress=False)
    assert 0 < report.augmented < 21
    check_matches_full_computation(idx2)
    assert "dba_stale" not in idx2.manifest
    named = {n for s in idx2.manifest["shards"] for n in s["files"].values()} | set(idx2.manifest["dba"]["files"].values())
    named |= set(idx2.manifest.thumb_files)  # the duplicate verifier's thumbnails
    ours = {p.name for p in vec.iterdir() if p.name not in (MANIFEST_NAME, store.LOCK_NAME)}
    assert ours == named  # the killed run's half-written files are gone


def test_an_index_of_format_2_is_searched_with_expansion_and_migrated_by_the_next_update(built, resnet_random, caplog) -> None:  # type: ignore[no-untyped-def]
    ds, vec = built
    expected = [[x.row for x in row] for row in Index.open(vec).search_vectors(Index.open(vec).vectors[:3], 5)]
    m = manifest(vec)
    for name in m["dba"]["files"].values():
        (vec / name).unlink()
    for key in ("dba", "dba_stale", "expansion"):
        m.pop(key, None)
    m["format_version"] = 2
    (vec / MANIFEST_NAME).write_text(json.dumps(m))
    idx = Index.open(vec)
    assert idx.manifest["format_version"] == 2 and idx.snapshot.augmentation is None
    with caplog.at_level(logging.WARNING, logger="revsearch"):
        got = [[x.row for x in row] for row in idx.search_vectors(idx.vectors[:3], 5)]
    assert got == expected
    assert any("stores no database augmentation" in r.getMessage() for r in caplog.records)
    idx2, report = Index.build(ds, vec, resnet_random, progress=False)
    m2 = idx2.manifest
    assert m2["format_version"] == store.FORMAT_VERSION and m2["migrated_from"] == 2 and report.augmented == len(idx2) == 24
    check_matches_full_computation(idx2)


def test_a_newer_revsearch_format_is_refused_by_name(built) -> None:  # type: ignore[no-untyped-def]
    _, vec = built
    m = manifest(vec)
    m["dba"]["files"]["vectors"] = "../outside.npy"
    (vec / MANIFEST_NAME).write_text(json.dumps(m))
    from revsearch.core.errors import IndexFormatError

    with pytest.raises(IndexFormatError, match="dba"):
        Index.open(vec)


def test_expansion_can_be_retuned_per_index_and_evaluate_measures_what_search_does(tmp_path, resnet_random) -> None:  # type: ignore[no-untyped-def]
    ds, vec = tmp_path / "ds", tmp_path / "vec"
    write_photos(ds / "a", 8)
    write_photos(ds / "b", 8, start=8)
    Index.build(ds, vec, resnet_random, progress=False)
    rep = evaluate_index(vec, k=3)
    assert rep.options["as_search"] and rep.options["qe"] == 2 and rep.options["dba"] == 2
    assert "what search does by default" in rep.options_text()
    plain = evaluate_index(vec, k=3, expand=False)
    assert plain.options["qe"] == 0 and plain.options["dba"] == 0 and not plain.options["as_search"]
    # a collection tuned otherwise: recorded in the index, stored with its k, used by search and evaluate
    tuned = Expansion(qe=1, alpha=1.0, dba=3, dba_alpha=1.0)
    idx, _ = Index.build(ds, vec, resnet_random, progress=False, expansion=tuned)
    assert idx.expansion == tuned and stored_dba(idx).k == 3 and stored_dba(idx).alpha == 1.0
    check_matches_full_computation(idx)
    rep = evaluate_index(vec, k=3)
    assert rep.options["as_search"] and rep.options["dba"] == 3 and rep.options["qe"] == 1
    # and turned off for the collection: no augmentation stored, searches plain
    idx, _ = Index.build(ds, vec, resnet_random, progress=False, expansion=False)
    assert not idx.expansion.active and idx.snapshot.augmentation is None and "dba" not in idx.manifest
    assert idx.search_vectors(idx.vectors[2], 1)[0].score == pytest.approx(1.0, abs=1e-5)


def test_cli_search_expands_by_default_and_no_expand_turns_it_off(built, capsys) -> None:  # type: ignore[no-untyped-def]
    ds, vec = built
    photo = ds / Index.open(vec).paths[4]
    assert cli.main(["search", str(photo), str(vec), "-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["options"]["qe"] == 2 and out["options"]["dba"] == 2
    assert cli.main(["search", str(photo), str(vec), "-k", "3", "--json", "--no-expand"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["options"]["qe"] == 0 and out["options"]["dba"] == 0
    assert out["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert cli.main(["search", str(photo), str(vec), "--no-expand", "--qe", "2"]) == cli.EXIT_ERROR


def test_cli_index_records_a_retuned_expansion(built, capsys) -> None:  # type: ignore[no-untyped-def]
    ds, vec = built
    argv = ["index", str(ds), str(vec), "--weights", "none", "-q", "--qe", "1", "--dba", "3", "--dba-alpha", "1"]
    assert cli.main(argv) == 0
    idx = Index.open(vec)
    assert idx.expansion == Expansion(qe=1, alpha=3.0, dba=3, dba_alpha=1.0)
    assert stored_dba(idx).k == 3
    check_matches_full_computation(idx)
    capsys.readouterr()
    assert cli.main(["search", str(ds / idx.paths[0]), str(vec), "-k", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["options"]["dba"] == 3
    # a later update without options keeps what the index records
    assert cli.main(["index", str(ds), str(vec), "--weights", "none", "-q"]) == 0
    assert Index.open(vec).expansion.dba == 3


def test_at_scale_the_augmentation_and_the_expanded_search_go_through_the_approximate_index(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("faiss")
    from revsearch.retrieval import ann
    from revsearch.storage import indexing

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 32)).astype(np.float32)
    x = centres[rng.integers(0, 40, 3000)] + 0.6 * rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    spec = {"model": "test", "preprocessing": "none", "dim": 32, "weights": "none", "precision": "float32"}
    idx = Index.from_vectors(tmp_path / "vec", x, [f"img{i:05d}.jpg" for i in range(len(x))], spec)
    exact = np.asarray(stored_dba(idx).neighbours).copy()
    ann.build_ann(idx, kind="hnsw", progress=False)
    calls = []
    real = ann.ann_topk
    monkeypatch.setattr(ann, "ann_topk", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    monkeypatch.setattr(indexing, "ANN_AUGMENT_MIN_ROWS", 1000)
    monkeypatch.setattr(indexing, "ANN_AUGMENT_MIN_SEARCHES", 1000)
    with store.writing(tmp_path / "vec") as w:  # another alpha: the neighbours are reused, not searched again
        assert indexing.refresh_augmentation(w, expansion=Expansion(dba_alpha=1.0)) == len(x)
        assert not calls
        assert indexing.refresh_augmentation(w, expansion=Expansion(dba=3)) == len(x)  # another k: searched
    assert calls
    idx = Index.open(tmp_path / "vec")
    got = np.asarray(stored_dba(idx).neighbours)[:, :2]
    assert np.mean([len(set(a) & set(b)) / 2 for a, b in zip(got, exact)]) >= 0.95
    # expanded search: the approximate index's shortlist re-scored with the augmented vectors
    q = x[:50] + 0.2 * rng.standard_normal((50, 32)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    approx = idx.expanded_topk(q, 5)[1]
    exact_rows = idx.expanded_topk(q, 5, exact=True)[1]
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(approx, exact_rows)]) >= 0.9


def test_a_large_collection_without_an_approximate_index_finds_the_neighbours_through_a_temporary_one(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("faiss")
    from revsearch.retrieval import ann
    from revsearch.storage import indexing

    rng = np.random.default_rng(3)
    centres = rng.standard_normal((60, 32)).astype(np.float32)
    x = centres[rng.integers(0, 60, 4000)] + 0.5 * rng.standard_normal((4000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    spec = {"model": "test", "preprocessing": "none", "dim": 32, "weights": "none", "precision": "float32"}
    idx = Index.from_vectors(tmp_path / "vec", x, [f"img{i:05d}.jpg" for i in range(len(x))], spec)
    exact = np.asarray(stored_dba(idx).neighbours).copy()
    built = []
    real = ann.neighbour_search
    monkeypatch.setattr(ann, "neighbour_search", lambda *a, **kw: built.append(1) or real(*a, **kw))
    monkeypatch.setattr(indexing, "ANN_AUGMENT_MIN_ROWS", 1000)
    monkeypatch.setattr(indexing, "ANN_AUGMENT_MIN_SEARCHES", 1000)
    with store.writing(tmp_path / "vec") as w:
        assert indexing.refresh_augmentation(w, expansion=Expansion(dba=3)) == len(x)
    assert built == [1] and "ann" not in Index.open(tmp_path / "vec").manifest  # nothing of it is kept
    got = np.asarray(stored_dba(Index.open(tmp_path / "vec")).neighbours)[:, :2]
    assert np.mean([len(set(a) & set(b)) / 2 for a, b in zip(got, exact)]) >= 0.95


def test_a_large_index_without_a_stored_augmentation_searches_with_query_expansion_only(tmp_path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    import revsearch.storage.index as index_module

    rng = np.random.default_rng(5)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    spec = {"model": "test", "preprocessing": "none", "dim": 16, "weights": "none", "precision": "float32"}
    vec = tmp_path / "vec"
    Index.from_vectors(vec, x, [f"img{i:05d}.jpg" for i in range(len(x))], spec)
    m = manifest(vec)
    m.pop("dba")
    (vec / MANIFEST_NAME).write_text(json.dumps(m))  # as an index whose augmentation was never stored
    monkeypatch.setattr(index_module, "IN_MEMORY_AUGMENTATION_MAX_ROWS", 100)
    idx = Index.open(vec)
    with caplog.at_level(logging.WARNING, logger="revsearch"):
        got = idx.expanded_topk(x[:5], 4)
    assert any("too large" in r.getMessage() for r in caplog.records)
    want = search_expanded(idx, x[:5], 4, qe=2, alpha=3.0, dba=None)
    np.testing.assert_array_equal(got[1], want[1])


def test_cli_info_says_how_searches_expand(built, capsys) -> None:  # type: ignore[no-untyped-def]
    _, vec = built
    assert cli.main(["info", str(vec), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["expansion"] == "query expansion qe=2 alpha=3; database augmentation k=2 alpha=3"


def test_rmac_pooling_is_the_regional_maximum_of_the_feature_map(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import keras

    from conftest import make_photo
    from revsearch.models.embedding import get_embedder, l2_normalize, preprocessing_options, rmac_regions

    emb = get_embedder("mobilenet", weights=None, pooling="rmac", backend="keras", precision="float32")
    assert emb.preprocessing.endswith("/pool:rmac:L=3")
    assert preprocessing_options(emb.preprocessing)["pooling"] == "rmac"
    assert len(rmac_regions(7, 7)) == 14 and rmac_regions(7, 7)[0] == (0, 7, 0, 7)
    photos = [make_photo(i, (200, 150)) for i in range(3)]
    got = emb.embed(photos)
    # the same weights without pooling, R-MAC by hand
    plain = keras.applications.MobileNet(include_top=False, weights=None, input_shape=(224, 224, 3))
    plain.set_weights(emb.keras_model.get_weights())
    fmap = plain.predict_on_batch(emb.normalize_batch(np.stack([emb.prepare(p) for p in photos])))
    want = l2_normalize(sum(l2_normalize(fmap[:, y0:y1, x0:x1, :].max(axis=(1, 2))) for y0, y1, x0, x1 in rmac_regions(7, 7)))
    np.testing.assert_allclose(got, want, atol=2e-5)
    avg = get_embedder("mobilenet", weights=None, backend="keras", precision="float32").embed(photos)
    assert not np.allclose(got, avg, atol=1e-3)


def test_a_damaged_stored_vector_is_nobodys_neighbour_and_never_returned(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((60, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    spec = {"model": "test", "preprocessing": "none", "dim": 16, "weights": "none", "precision": "float32"}
    vec = tmp_path / "vec"
    Index.from_vectors(vec, x, [f"img{i:05d}.jpg" for i in range(len(x))], spec)
    m = manifest(vec)
    damaged = np.load(vec / m["shards"][0]["files"]["vectors"], mmap_mode="r+")  # a bad copy or sync, afterwards
    damaged[3] = np.nan
    damaged.flush()
    del damaged
    m.pop("dba")
    (vec / MANIFEST_NAME).write_text(json.dumps(m))  # the augmentation is computed at search time
    idx = Index.open(vec)
    aug = idx.augmentation()
    assert 3 not in np.asarray(aug.neighbours) and np.isfinite(np.delete(aug.vectors, 3, axis=0)).all()
    scores, rows = idx.expanded_topk(x[[3, 4]], 10)
    assert 3 not in rows and np.isfinite(scores).all()


def test_evaluate_tune_scores_every_setting_and_says_how_to_record_the_best(tmp_path, resnet_random, capsys) -> None:  # type: ignore[no-untyped-def]
    from revsearch.operations import tune_expansion

    ds, vec = tmp_path / "ds", tmp_path / "vec"
    write_photos(ds / "a", 6)
    write_photos(ds / "b", 6, start=6)
    Index.build(ds, vec, resnet_random, progress=False)
    results = tune_expansion(vec, k=3, qe=(0, 2), dba=(0, 2), alpha=(3.0,))
    assert len(results) == 4 and sum(r.options["as_search"] for _, r in results) == 1
    maps = [r.mean_average_precision for _, r in results]
    assert maps == sorted(maps, reverse=True)
    for e, r in results:  # each is what evaluate measures for that setting
        assert r.mean_average_precision == pytest.approx(evaluate_index(vec, k=3, expand=e).mean_average_precision)
    assert cli.main(["evaluate", str(ds), str(vec), "-k", "3", "--tune", "-q"]) == 0
    out = capsys.readouterr().out
    assert "<- what search does now" in out and f"revsearch index {ds} {vec} " in out
    assert len([line for line in out.splitlines() if line[:3].strip().isdigit()]) == 31
    assert cli.main(["evaluate", str(ds), str(vec), "--tune", "--qe", "2"]) == cli.EXIT_ERROR
