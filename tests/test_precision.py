"""The default precision chosen by retrieval quality (on faked CPU flags), int8 (NNCF) on a small model and
its cache, and precision never changing which vectors are comparable (resolve_embedder)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import make_photo, write_photos
from revsearch import backends
from revsearch.embedding import Embedder
from revsearch import Index
from revsearch.index import resolve_embedder

needs_openvino = pytest.mark.skipif(not backends.openvino_installed(), reason='pip install "revsearch[openvino]"')

SAPPHIRE_RAPIDS = "avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8 amx_tile avx_vnni".split()
ZEN4 = "avx2 avx512f avx512_vnni avx512_bf16".split()  # bfloat16 without AMX
CASCADE_LAKE = "avx2 avx512f avx512_vnni".split()  # VNNI, no bfloat16
HASWELL = "avx2 fma".split()


def _quality(**drops: dict[str, float]) -> dict[str, dict[str, float]]:
    base = {"flowers mAP": 0.56, "ukbench mAP": 0.99, "near-duplicate recall@1": 0.96}
    out = {"float32": dict(base)}
    for precision, d in drops.items():
        out[precision] = {k: v - d.get(k, 0.0) for k, v in base.items()}
    return out


def test_cpu_features_from_faked_flags() -> None:
    assert backends.cpu_features(SAPPHIRE_RAPIDS) == {"bfloat16", "int8"}
    assert backends.cpu_features(ZEN4) == {"bfloat16", "int8"}
    assert backends.cpu_features(CASCADE_LAKE) == {"int8"}
    assert backends.cpu_features(HASWELL) == frozenset()
    assert backends.cpu_features(["amx_bf16"]) == {"bfloat16"}
    # OpenVINO's BF16 capability counts; its INT8 does not (it runs int8 without VNNI too, no faster)
    assert backends.cpu_features(HASWELL, ["FP32", "BF16"]) == {"bfloat16"}
    assert backends.cpu_features(HASWELL, ["FP32", "INT8"]) == frozenset()


def test_rule_keeps_precisions_within_tolerance_on_every_dataset() -> None:
    ok = _quality(bfloat16={"flowers mAP": 0.0004}, int8={"flowers mAP": 0.012})
    assert backends.qualifying_precisions(ok) == ["bfloat16", "float32"]
    # one dataset is enough to fail, at the tolerance's edge
    assert backends.qualifying_precisions(_quality(bfloat16={"ukbench mAP": 0.0051})) == ["float32"]
    assert backends.qualifying_precisions(_quality(bfloat16={"ukbench mAP": 0.0049})) == ["bfloat16", "float32"]
    # near-duplicate recall must not drop at all; a figure not measured disqualifies
    dup = _quality(bfloat16={}, int8={"near-duplicate recall@1": 0.01})
    assert backends.qualifying_precisions(dup) == ["bfloat16", "float32"]
    missing = _quality(bfloat16={})
    del missing["bfloat16"]["ukbench mAP"]
    assert backends.qualifying_precisions(missing) == ["float32"]
    # a precision that gains is fine
    assert backends.qualifying_precisions(_quality(bfloat16={}, int8={"flowers mAP": -0.01})) == ["int8", "bfloat16", "float32"]


@pytest.mark.parametrize(
    "flags, bf16_only, all_pass",
    [
        (SAPPHIRE_RAPIDS, "bfloat16", "int8"),
        (ZEN4, "bfloat16", "int8"),
        (CASCADE_LAKE, "float32", "int8"),
        (HASWELL, "float32", "float32"),
    ],
)
def test_default_precision_on_faked_cpus(flags: list[str], bf16_only: str, all_pass: str) -> None:
    features = backends.cpu_features(flags)
    only_bf16 = _quality(bfloat16={"flowers mAP": 0.0001}, int8={"flowers mAP": 0.0125})
    assert backends.cpu_precision(features, quality=only_bf16) == bf16_only
    both = _quality(bfloat16={"flowers mAP": 0.0001}, int8={"flowers mAP": 0.004})
    assert backends.cpu_precision(features, quality=both) == all_pass
    # the table measured and shipped: whatever it says, the default is one the CPU runs natively
    assert backends.default_precision("openvino", features=features) in {"float32", *features}


def test_default_precision_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "gpu_devices", lambda: [])
    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    haswell = backends.cpu_features(HASWELL, [])
    monkeypatch.setattr(backends, "cpu_features", lambda *a, **k: haswell)
    assert Embedder("mobilenet", weights=None).precision == "float32"
    measured = backends.cpu_precision(frozenset({"bfloat16", "int8"}))
    assert measured == "bfloat16"  # by the shipped table: int8 lacks its held-out figures
    monkeypatch.setattr(backends, "cpu_features", lambda *a, **k: frozenset({"bfloat16", "int8"}))
    e = Embedder("mobilenet", weights=None)
    assert (e.backend, e.precision) == ("openvino", measured)
    assert Embedder("mobilenet", weights=None, backend="keras").precision == "float32"  # Keras on a CPU
    with pytest.raises(ValueError, match="does not run precision 'int8'"):
        Embedder("mobilenet", weights=None, backend="keras", precision="int8")


def test_precision_does_not_change_which_index_embedder_is_used(tmp_path: Path) -> None:
    """resolve_embedder keeps the index's recorded pipeline (here a non-default pooling) at any precision."""
    spec_emb = Embedder("mobilenet", weights=None, pooling="gem", backend="keras")
    vecs = np.eye(3, spec_emb.dim, dtype=np.float32)
    index = Index.from_vectors(tmp_path / "vec", vecs, ["a.jpg", "b.jpg", "c.jpg"], spec_emb.spec)
    for precision in (None, "float32", "bfloat16"):
        emb = resolve_embedder(index, "mobilenet", weights=None, precision=precision)
        assert emb.preprocessing == spec_emb.preprocessing, precision
        if precision is not None:
            assert emb.precision == precision
        index.check_compatible(emb.spec)
    other = resolve_embedder(index, "mobilenet", weights="imagenet")  # other weights: not the index's model
    assert other.weights != index.spec["weights"]


def test_int8_index_names_its_model_and_is_searched_without_openvino(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dict(Embedder("mobilenet", weights=None, backend="keras").spec, precision="int8", backend="openvino",
                calibration="sha256:0123456789abcdef01234567:n=300")
    index = Index.from_vectors(tmp_path / "vec", np.eye(2, 1024, dtype=np.float32), ["a.jpg", "b.jpg"], spec)
    monkeypatch.setattr(backends, "gpu_devices", lambda: [])
    if backends.openvino_installed():  # its own quantized model, named by the recorded calibration (not loaded here)
        emb = Index.open(index.folder).embedder()
        assert (emb.precision, emb.calibration_id) == ("int8", spec["calibration"])
    monkeypatch.setattr(backends, "openvino_installed", lambda: False)
    emb = Index.open(index.folder).embedder()  # without OpenVINO: Keras, its default precision, same vectors' space
    assert (emb.backend, emb.precision) == ("keras", "float32")
    index.check_compatible(emb.spec)


# ----------------------------------------------------------------------------- int8 on a small model


def _tiny_model(seed: int = 0):
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((48, 48, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inp)
    for f in (8, 16, 16, 32):
        x = keras.layers.Conv2D(f, 3, strides=2 if f != 16 else 1, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, x, name="tiny")


@needs_openvino
def test_int8_small_model_quantizes_caches_and_falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _tiny_model()
    photos = [make_photo(i, (64, 56)) for i in range(16)]
    cache = tmp_path / "cache"
    f32 = Embedder(model, backend="openvino", precision="float32", cache_dir=cache)
    with pytest.raises(backends.CalibrationUnavailableError, match="calibration"):
        Embedder(model, backend="openvino", precision="int8", cache_dir=cache).embed(photos[0])
    q = Embedder(model, backend="openvino", precision="int8", cache_dir=cache, calibration=photos[:12])
    a, b = f32.embed(photos), q.embed(photos)
    ov = q.openvino_model()
    assert ov is not None and ov.loaded_from.startswith("converted") and ov.cached
    assert "FakeQuantize" in ov.ir_path.read_text()  # really quantized (NNCF inserts FakeQuantize ops)
    assert "FakeQuantize" not in f32.openvino_model().ir_path.read_text()
    assert q.spec["precision"] == "int8" and q.spec["calibration"] == q.calibration_id
    assert np.abs(a - b).max() > 0  # not the float model
    assert (a * b).sum(1).min() > 0.98  # but close to it
    # the same calibration id reads the cached int8 model: the very same vectors
    again = Embedder(model, backend="openvino", precision="int8", cache_dir=cache, calibration=q.calibration_id)
    assert np.array_equal(again.embed(photos), b) and again.openvino_model().loaded_from.startswith("cached IR")
    # other calibration photos: another model, another cache entry
    other = Embedder(model, backend="openvino", precision="int8", cache_dir=cache, calibration=photos[4:])
    assert other.calibration_id != q.calibration_id and other.openvino_model().ir_path != ov.ir_path
    # the same photos in a larger set give the same seeded sample
    assert Embedder(model, backend="openvino", precision="int8").calibrate(photos, size=5).calibration_id == \
        Embedder(model, backend="openvino", precision="int8").calibrate(photos, size=5).calibration_id
    # a recorded calibration whose model is not in this cache: the default float precision, with a warning
    elsewhere = Embedder(model, backend="openvino", precision="int8", cache_dir=tmp_path / "empty", calibration=q.calibration_id)
    with caplog.at_level(logging.WARNING):
        v = elsewhere.embed(photos)
    assert elsewhere.precision in ("float32", "bfloat16") and "not in the cache" in caplog.text
    assert (v * b).sum(1).min() > 0.98


@needs_openvino
@pytest.mark.slow
def test_index_build_calibrates_int8_on_its_own_photos(tmp_path: Path) -> None:
    ds = tmp_path / "photos"
    write_photos(ds, 14)
    cache = tmp_path / "cache"
    model = _tiny_model()
    emb = Embedder(model, backend="openvino", precision="int8", cache_dir=cache)
    index, report = Index.build(ds, tmp_path / "vec", emb, progress=False)
    assert len(index) == 14 and not report.skipped
    assert index.spec["precision"] == "int8" and index.spec["calibration"] == emb.calibration_id
    # the calibration is a seeded sample of the collection: the same photos give the same id
    again = Embedder(model, backend="openvino", precision="int8", cache_dir=cache).calibrate(sorted(ds.iterdir()))
    assert again.calibration_id == emb.calibration_id
    # the index's recorded calibration reads the very same model from the cache
    same = Embedder(model, backend="openvino", precision="int8", cache_dir=cache, calibration=index.spec["calibration"])
    q = sorted(ds.iterdir())[3]
    m = index.search(q, 1, embedder=same)[0]
    assert m.relpath == q.name and m.score > 0.9999
    assert same.openvino_model().loaded_from.startswith("cached IR")
    # searching an int8 index with float32 finds the same photo (precision never changes comparability)
    f32 = Embedder(model, backend="openvino", precision="float32", cache_dir=cache)
    m = index.search(q, 1, embedder=f32)[0]
    assert m.relpath == q.name and m.score > 0.98


def test_near_duplicate_recall_may_not_drop_beyond_near_tie_swaps() -> None:
    assert not backends.significant_drop(3, 2) and not backends.significant_drop(0, 0)
    assert backends.significant_drop(8, 0) and backends.significant_drop(20, 6)
    key = "near-duplicate recall@1"
    swaps = _quality(bfloat16={key: 0.001})
    assert backends.qualifying_precisions(swaps) == ["float32"]  # a lower recall without the counts: a drop
    swaps["bfloat16"].update({f"{key} lost": 3, f"{key} gained": 2})
    assert backends.qualifying_precisions(swaps) == ["bfloat16", "float32"]
    swaps["bfloat16"].update({f"{key} lost": 12, f"{key} gained": 2})
    assert backends.qualifying_precisions(swaps) == ["float32"]
