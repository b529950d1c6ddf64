"""Search-side options (query expansion, database augmentation, rotated queries), multi-scale and
resolution options, and the extra backbones: each checked on data where the right answer is known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_photo, write_photos
from revsearch.cli import main
from revsearch.embedding import MODELS, Embedder, get_embedder, l2_normalize, preprocessing_options, resize_prepared
from revsearch.errors import ModelMismatchError
from revsearch.evaluate import evaluate_index, retrieval_metrics
from revsearch import Index
from revsearch.index import resolve_embedder
from revsearch.rerank import (
    DatabaseAugmentation,
    expand_queries,
    leave_one_out_scores,
    rotated_copies,
    search_expanded,
    search_images,
    search_rotated,
)

SPEC = {"model": "hand", "preprocessing": "none", "dim": 8, "weights": "none", "precision": "float32"}


def unit(*coords: float, d: int = 8) -> np.ndarray:
    v = np.zeros(d, np.float32)
    v[: len(coords)] = coords
    return v / np.linalg.norm(v)


def planted(tmp_path: Path) -> tuple[Index, np.ndarray]:
    """Cluster A (rows 0-3) along e1, a1 leaning towards e2; three distractors B (rows 4-6) that a query
    between e1 and e2 finds closer than a2..a4, but that lie far from a1. Query: (e1 + e2)/sqrt(2)."""
    rng = np.random.default_rng(0)
    a = [unit(1, 0.3)] + [l2_normalize(unit(1) + 0.02 * np.r_[0, 0, rng.standard_normal(6)].astype(np.float32)) for _ in range(3)]
    b = [unit(0.3, 0.9, 0, 0.6), unit(0.3, 0.9, 0, 0, 0.6), unit(0.3, 0.9, 0, 0, 0, 0.6)]
    x = np.stack(a + b)
    (tmp_path / "data").mkdir(exist_ok=True)
    names = [f"a{i}.jpg" for i in range(4)] + [f"b{i}.jpg" for i in range(3)]
    index = Index.from_vectors(tmp_path / "vec", x, names, SPEC, dataset_dir=tmp_path / "data")
    return index, unit(1, 1)


# ---------------------------------------------------------------------------- query expansion


def test_query_expansion_recovers_a_planted_cluster(tmp_path: Path) -> None:
    index, q = planted(tmp_path)
    _, plain = search_expanded(index, q, 4)
    assert plain[0, 0] == 0 and set(plain[0, 1:]) == {4, 5, 6}  # plain search: a1, then the distractors
    for alpha in (0.0, 3.0):
        s, r = search_expanded(index, q, 4, qe=1, alpha=alpha)
        assert set(r[0]) == {0, 1, 2, 3}, alpha  # expanded with a1: the whole cluster comes first
        assert np.all(np.diff(s[0]) <= 0)
    expected = l2_normalize(q + np.asarray(index.vectors[0]))  # alpha=0: plain average of query and a1
    np.testing.assert_allclose(expand_queries(q[None], np.array([[0.9]]), np.asarray(index.vectors[:1])[None], 0.0)[0],
                               expected, atol=1e-6)
    w = 0.5**3  # alpha=3: a neighbour at cosine 0.5 weighs 0.125; a negative cosine weighs 0
    got = expand_queries(q[None], np.array([[0.5, -0.4]]), np.asarray(index.vectors[:2])[None], 3.0)[0]
    np.testing.assert_allclose(got, l2_normalize(q + w * np.asarray(index.vectors[0])), atol=1e-6)
    with pytest.raises(ValueError, match="qe"):
        search_expanded(index, q, 4, qe=-1)
    with pytest.raises(ValueError, match="alpha"):
        search_expanded(index, q, 4, qe=1, alpha=float("nan"))


def brute_leave_one_out(x: np.ndarray, r: int, qe: int, alpha: float, dba: int, dba_alpha: float) -> np.ndarray:
    """The collection without row r, augmented from scratch; row r searched against it."""
    others = np.array([i for i in range(len(x)) if i != r])
    db = DatabaseAugmentation.compute(x[others], dba, dba_alpha).vectors if dba else x[others]
    q = x[r]
    s = db @ q
    if qe:
        top = np.argsort(-s, kind="stable")[:qe]
        w = np.maximum(s[top], 0) ** alpha if alpha else np.ones(qe)
        q = l2_normalize(q + (w[:, None] * db[top]).sum(0))
        s = db @ q
    out = np.full(len(x), -np.inf, np.float32)
    out[others] = s
    return out


@pytest.mark.parametrize("qe,alpha,dba,dba_alpha", [(3, 3.0, 0, 3.0), (0, 3.0, 2, 3.0), (2, 3.0, 2, 3.0), (4, 0.0, 3, 0.0)])
def test_leave_one_out_scores_equal_rebuilding_without_the_query(qe: int, alpha: float, dba: int, dba_alpha: float) -> None:
    x = l2_normalize(np.random.default_rng(1).standard_normal((30, 6)).astype(np.float32))
    aug = DatabaseAugmentation.compute(x, dba, dba_alpha) if dba else None
    rows = np.array([0, 7, 29])
    got = leave_one_out_scores(x, rows, qe=qe, alpha=alpha, dba=aug)
    want = np.stack([brute_leave_one_out(x, int(r), qe, alpha, dba, dba_alpha) for r in rows])
    assert np.array_equal(np.isfinite(got), np.isfinite(want))
    np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], atol=2e-6)


def test_database_augmentation_by_hand() -> None:
    x = np.stack([unit(1), unit(1, 0.2), unit(0, 1), unit(0.1, 1)])
    aug = DatabaseAugmentation.compute(x, 1, 0.0)  # each vector + its nearest other one
    assert aug.neighbours[:, 0].tolist() == [1, 0, 3, 2]
    np.testing.assert_allclose(aug.vectors, l2_normalize(x + x[[1, 0, 3, 2]]), atol=1e-6)
    aug3 = DatabaseAugmentation.compute(x, 1, 3.0)
    c = float(x[0] @ x[1])
    np.testing.assert_allclose(aug3.vectors[0], l2_normalize(x[0] + c**3 * x[1]), atol=1e-6)
    with pytest.raises(ValueError, match="k >= 1"):
        DatabaseAugmentation.compute(x, 0)


def test_evaluation_with_query_expansion_and_augmentation() -> None:
    """On planted clusters the options are scored without rebuilding anything, and report what ran."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((5, 16))
    lab = np.repeat(np.arange(5), 8)
    x = l2_normalize((centres[lab] + 1.1 * rng.standard_normal((40, 16))).astype(np.float32))
    labels = [str(v) for v in lab]
    plain = retrieval_metrics(x, labels, k=5)
    assert plain.options == {"qe": 0, "alpha": 3.0, "dba": 0, "dba_alpha": 3.0}
    qe = retrieval_metrics(x, labels, k=5, qe=3, alpha=0.0)
    both = retrieval_metrics(x, labels, k=5, qe=2, dba=2)
    assert qe.options["qe"] == 3 and qe.options["alpha"] == 0.0 and both.options["dba"] == 2
    assert "query expansion qe=3 alpha=0" in qe.options_text() and "no database augmentation" in qe.options_text()
    # the same numbers as scoring the brute-force rankings by hand
    for rep, (q, a, d) in ((qe, (3, 0.0, 0)), (both, (2, 3.0, 2))):
        ap = []
        for r in range(40):
            s = brute_leave_one_out(x, r, q, a, d, 3.0)
            order = np.argsort(-s, kind="stable")[:39]
            rel = lab[order] == lab[r]
            hits = np.cumsum(rel)
            ap.append(float((rel * hits / np.arange(1, 40)).sum() / 7))
        assert rep.mean_average_precision == pytest.approx(np.mean(ap), abs=1e-6)
    assert qe.mean_average_precision > plain.mean_average_precision  # tight planted classes: expansion helps


# ---------------------------------------------------------------------------- rotated queries


def test_rotated_copies() -> None:
    img = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    out = rotated_copies(img)
    assert out.shape == (4, 2, 2, 3)
    assert np.array_equal(out[0], img) and np.array_equal(out[1], np.rot90(img)) and np.array_equal(out[2], img[::-1, ::-1])


@pytest.mark.slow
def test_rotation_option_finds_a_sideways_copy(tmp_path: Path, resnet_random: Embedder) -> None:
    photos = [make_photo(i, (160, 120)) for i in range(6)]
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, p in enumerate(photos):
        Image.fromarray(p).save(folder / f"p{i}.png")
    index, _ = Index.build(folder, tmp_path / "vec", resnet_random, progress=False)
    sideways = np.ascontiguousarray(np.rot90(photos[2]))  # stored turned 90 degrees anticlockwise
    s, r, turns = search_rotated(index, sideways, 3)
    assert r[0, 0] == 2 and s[0, 0] > 0.99999 and turns[0, 0] == 3  # turned 270 more, it is upright again
    assert len(set(r[0].tolist())) == 3 and np.all(np.diff(s[0]) <= 0)
    plain = index.search(sideways, 6)
    # without the option the original scores lower (random weights with average pooling are nearly
    # rotation-invariant, so only slightly lower here; upright again, it is the same image)
    assert next(m.score for m in plain if m.row == 2) < 0.99995
    matches = search_images(index, [sideways, photos[4]], 2, rotations=True)
    assert matches[0][0].relpath == "p2.png" and matches[1][0].relpath == "p4.png"


# ---------------------------------------------------------------------------- multi-scale and resolution


@pytest.mark.slow
def test_multiscale_descriptor_is_the_normalised_sum() -> None:
    e = Embedder("mobilenet", weights=None, scales=(64, 96), pooling="avg")
    assert e.scales == (96, 64) and e.input_size == 96
    assert e.preprocessing.endswith("/scales:96+64:sum-l2") and "resize:96:" in e.preprocessing
    batch = np.stack([e.prepare(make_photo(i)) for i in range(3)])
    got = e.embed_prepared(batch)
    e96 = Embedder("mobilenet", weights=None, resolution=96, pooling="avg")
    e64 = Embedder("mobilenet", weights=None, resolution=64, pooling="avg")
    small = np.stack([resize_prepared(b, 64) for b in batch])
    want = l2_normalize(e96.embed_prepared(batch) + e64.embed_prepared(small))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(got, e96.embed_prepared(batch), atol=1e-3)  # the small scale does count
    opts = preprocessing_options(e.preprocessing)
    assert opts["scales"] == (96, 64) and "resolution" not in opts
    assert Embedder("mobilenet", weights=None, **opts).spec == e.spec


def test_resolution_option_and_bad_values() -> None:
    e = Embedder("mobilenet", weights=None, resolution=320)
    assert e.prepare(make_photo(0)).shape == (320, 320, 3)
    assert "resize:320:bicubic" in e.preprocessing and preprocessing_options(e.preprocessing)["resolution"] == 320
    assert Embedder("mobilenet", weights=None, scales=[320]).spec == e.spec  # one scale is a resolution
    for bad in ({"resolution": 16}, {"resolution": 4000}, {"resolution": 224.5}, {"scales": []}, {"scales": (224, 224)},
                {"scales": "224"}, {"scales": (224, 320), "resolution": 224}):
        with pytest.raises(ValueError):
            Embedder("mobilenet", weights=None, **bad)


def test_old_indexes_keep_their_recorded_pipeline(tmp_path: Path) -> None:
    """An index built with an earlier default (crop + GeM at 224) is searched with crop + GeM, whatever the default."""
    old = Embedder("mobilenet", weights=None, fit="crop", pooling="gem")
    other = Embedder("mobilenet", weights=None, fit="pad", pooling="avg", resolution=320)
    for i, emb in enumerate((old, other)):
        index = Index.from_vectors(tmp_path / f"v{i}", np.ones((2, 1024)), ["a.jpg", "b.jpg"], emb.spec)
        rebuilt = Index.open(index.folder).embedder()
        assert rebuilt.spec == emb.spec and (rebuilt.fit, rebuilt.pooling, rebuilt.input_size) == (
            emb.fit, emb.pooling, emb.input_size)
        with pytest.raises(ModelMismatchError):
            index.check_compatible(Embedder("mobilenet", weights=None, fit="crop", pooling="gem", resolution=448).spec)
        # naming the model (as `revsearch index DATASET VECTORS --model mobilenet` does) reuses the recorded pipeline
        assert resolve_embedder(Index.open(index.folder), "mobilenet", weights=None).spec == emb.spec


# ---------------------------------------------------------------------------- command line


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_cli_index_scales_search_options_and_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "photos"
    write_photos(data / "cat", 3, start=0)
    write_photos(data / "dog", 3, start=3)
    vec = tmp_path / "vec"
    code, out, err = run(["index", str(data), str(vec), "--model", "resnet50", "--weights", "none", "--scales", "64,96", "-q"], capsys)
    assert code == 0, err
    spec = Index.open(vec).spec
    assert spec["preprocessing"].endswith("/scales:96+64:sum-l2")
    # the same folder at another size: refused, nothing changed
    before = sorted(p.name for p in vec.iterdir())
    code, _, err = run(["index", str(data), str(vec), "--weights", "none", "--resolution", "128", "-q"], capsys)
    assert code == 1 and "resize:128" in err and sorted(p.name for p in vec.iterdir()) == before
    with pytest.raises(SystemExit) as exit_info:
        main(["index", str(data), str(vec), "--scales", "a,b", "-q"])
    assert exit_info.value.code == 2 and "--scales" in capsys.readouterr().err

    query = str(data / "dog" / "img0004.jpg")
    code, out, err = run(["search", query, str(vec), "-k", "3", "--rotations", "--no-expand", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["results"][0]["relpath"] == "dog/img0004.jpg" and res["results"][0]["score"] > 0.9999
    code, out, err = run(["search", query, str(vec), "-k", "3", "--qe", "2", "--alpha", "0", "--dba", "1", "--rotations", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["options"] == {"qe": 2, "alpha": 0.0, "dba": 1, "dba_alpha": 3.0, "rotations": True}
    index = Index.open(vec)
    lib = search_images(index, query, 3, qe=2, alpha=0.0, dba=1, rotations=True)
    assert [r["relpath"] for r in res["results"]] == [m.relpath for m in lib]

    code, out, err = run(["evaluate", str(data), str(vec), "-k", "2", "--qe", "2", "--json"], capsys)
    assert code == 0, err
    rep = json.loads(out)  # --qe changes one setting of the index's expansion (qe=2 dba=2 by default)
    assert rep["options"] == {"qe": 2, "alpha": 3.0, "dba": 2, "dba_alpha": 3.0, "as_search": True}
    assert rep["preprocessing"] == spec["preprocessing"]
    assert rep["mean_average_precision"] == pytest.approx(
        evaluate_index(index, k=2, qe=2).mean_average_precision, abs=1e-6)
    code, out, _ = run(["evaluate", str(data), str(vec), "-k", "2", "--qe", "0", "--dba", "2", "--dba-alpha", "1"], capsys)
    assert code == 0 and "database augmentation k=2 alpha=1" in out and "no query expansion" in out
    code, _, err = run(["search", query, str(vec), "--qe", "-3"], capsys)
    assert code == 1 and "qe" in err


# ---------------------------------------------------------------------------- more backbones


@pytest.mark.parametrize("name,dim,module,size", [
    ("efficientnetv2-b0", 1280, "efficientnet_v2", 224),
    ("efficientnetv2-s", 1280, "efficientnet_v2", 384),
    ("convnext-tiny", 768, "convnext", 224),
])
@pytest.mark.slow
def test_extra_backbones_build_and_embed_with_random_weights(name: str, dim: int, module: str, size: int) -> None:
    assert name in MODELS
    e = get_embedder(name, weights=None, resolution=96)  # small input: the same graph, less work
    assert e.dim == dim and Embedder(name, weights=None).input_size == size
    assert f"keras.applications.{module}.preprocess_input" in e.preprocessing and e.pooling == "avg"
    v = e.embed([make_photo(0), make_photo(1)])
    assert v.shape == (2, dim) and np.isfinite(v).all()
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert float(v[0] @ v[1]) < 0.99999  # different photos, different vectors
    np.testing.assert_allclose(e.embed(make_photo(0)), v[0], atol=1e-5)
