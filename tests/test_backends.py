"""Backends of the embedder (revsearch.models.backends): backend and precision choice, the GPU policy (on a
faked device list), the OpenVINO conversion and its on-disk cache, and searching across backends."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import DATASETS, make_photo, needs_weights, write_photos
from revsearch.models import backends
from revsearch.models.backends import GpuDevice, gpu_policy
from revsearch.models.embedding import Embedder, get_embedder
from revsearch import Index

REPO = Path(__file__).resolve().parents[1]
FLOWERS = DATASETS / "oxford17_flowers"
HAVE_OPENVINO = backends.openvino_installed()
needs_openvino = pytest.mark.skipif(
    not HAVE_OPENVINO,
    reason='OpenVINO is not installed: pip install "revsearch[openvino]" (.ci/run does) to test the OpenVINO backend',
)

T4 = GpuDevice("Tesla T4", (7, 5), 15 * 2**30)
A100 = GpuDevice("NVIDIA A100-SXM4-40GB", (8, 0), 40 * 2**30)
P100 = GpuDevice("Tesla P100-PCIE-16GB", (6, 0), 16 * 2**30)
K80 = GpuDevice("Tesla K80", (3, 7), 11 * 2**30)


def _python(code: str, env: dict[str, str] | None = None) -> str:
    full = dict(os.environ, **(env or {}))
    full["PYTHONPATH"] = os.pathsep.join([str(REPO), full.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=full, cwd=str(REPO), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout


# ----------------------------------------------------------------------------- the GPU policy (faked devices)


def test_gpu_policy_by_compute_capability() -> None:
    cpu = gpu_policy([])
    assert (cpu.precision, cpu.batch_size) == ("float32", 32)
    t4 = gpu_policy([T4])  # Colab's GPU: float16 tensor cores, no fast bfloat16
    assert (t4.precision, t4.batch_size) == ("float16", 128)
    assert "Tesla T4" in t4.reason and "7.5" in t4.reason
    assert gpu_policy([A100]).precision == "bfloat16"
    assert gpu_policy([GpuDevice("NVIDIA H100", (9, 0))]).precision == "bfloat16"
    old = gpu_policy([P100])  # Pascal: no tensor cores
    assert (old.precision, old.batch_size) == ("float32", 64)
    assert gpu_policy([K80]).precision == "float32"
    assert gpu_policy([T4, A100]).precision == "float16"  # what every GPU runs fast
    assert gpu_policy([GpuDevice("unknown", None)]).precision == "float32"
    assert gpu_policy([GpuDevice("Quadro T1000", (7, 5), 4 * 2**30)]).batch_size == 32  # small memory


def test_no_gpu_here_means_no_tensorflow_import() -> None:
    """gpu_devices() asks TensorFlow only where GPU device files exist: a CPU machine pays nothing."""
    out = _python(
        """
        import sys, revsearch.models.backends as b
        b.gpu_device_nodes = lambda: False
        print(b.gpu_devices(), "tensorflow" in sys.modules, "openvino" in sys.modules)
        """
    )
    assert out.split() == ["[]", "False", "False"]


def test_faked_gpu_chooses_keras_in_half_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "gpu_devices", lambda: [T4])
    monkeypatch.setattr(backends, "openvino_installed", lambda: True)  # even with OpenVINO: the GPU wins
    e = Embedder("resnet50", weights=None)
    assert (e.backend, e.precision, e.batch_size) == ("keras", "float16", 128)
    assert e.spec["backend"] == "keras" and e.spec["precision"] == "float16"
    assert Embedder("resnet50", weights=None, precision="float32").batch_size == 32  # float32 stays available
    monkeypatch.setattr(backends, "gpu_devices", lambda: [A100])
    assert Embedder("mobilenet", weights=None).precision == "bfloat16"
    monkeypatch.setattr(backends, "gpu_devices", lambda: [P100])
    assert Embedder("mobilenet", weights=None).precision == "float32"


def test_faked_gpu_policy_builds_a_float16_model_that_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy's model really is built in mixed float16 (run here on the CPU) and agrees with float32."""
    monkeypatch.setattr(backends, "gpu_devices", lambda: [T4])
    # GeM pooling: random MobileNet activations are tiny and average-pool to 0 in float16 (GeM clamps them)
    half = Embedder("mobilenet", weights=None, pooling="gem")
    assert half.precision == "float16"
    policies = {layer.dtype_policy.name for layer in half.keras_model.layers if layer.weights}
    assert policies == {"mixed_float16"}
    import keras

    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was
    full = Embedder("mobilenet", weights=None, backend="keras", precision="float32", pooling="gem")
    imgs = [make_photo(i) for i in range(3)]
    vh, vf = half.embed(imgs), full.embed(imgs)
    assert vh.dtype == np.float32 and np.isfinite(vh).all()
    np.testing.assert_allclose(np.linalg.norm(vh, axis=1), 1.0, rtol=1e-5)
    assert (vh * vf).sum(1).min() > 0.99


# ----------------------------------------------------------------------------- backend choice


def test_auto_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "gpu_devices", lambda: [])
    monkeypatch.setattr(backends, "openvino_installed", lambda: False)
    assert backends.resolve_backend("auto") == "keras"
    e = Embedder("mobilenet", weights=None)
    assert (e.backend, e.precision) == ("keras", "float32")  # Keras on a CPU: float32 by default
    with pytest.raises(ValueError, match=r'pip install "revsearch\[openvino\]"'):
        Embedder("mobilenet", weights=None, backend="openvino")
    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    assert backends.resolve_backend("auto") == "openvino"
    assert backends.resolve_backend("auto", "float16") == "keras"  # OpenVINO on a CPU runs no float16
    assert backends.resolve_backend("keras") == "keras"
    # the default follows the measured-quality rule and the CPU's units (tests/test_precision.py fakes more CPUs)
    monkeypatch.setattr(backends, "cpu_features", lambda *a, **k: frozenset({"bfloat16"}))
    expected = "bfloat16" if "bfloat16" in backends.qualifying_precisions() else "float32"
    assert backends.default_precision("openvino") == expected
    monkeypatch.setattr(backends, "cpu_features", lambda *a, **k: frozenset())
    assert backends.default_precision("openvino") == "float32"
    assert backends.default_precision("keras", devices=[]) == "float32"
    assert backends.default_precision("keras", devices=[T4]) == "float16"
    with pytest.raises(ValueError, match="backend"):
        backends.resolve_backend("tensorrt")
    with pytest.raises(ValueError, match="does not run precision 'float16'"):
        Embedder("mobilenet", weights=None, backend="openvino", precision="float16")


@needs_openvino
def test_openvino_defaults_and_bfloat16_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    import openvino as ov

    monkeypatch.setattr(backends, "gpu_devices", lambda: [])
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert backends.cpu_bfloat16() == ("BF16" in caps)
    e = Embedder("mobilenet", weights=None)
    assert (e.backend, e.precision, e.openvino_hint) == ("openvino", backends.default_precision("openvino"), "throughput")
    assert e.variant(precision="bfloat16").spec["precision"] == "bfloat16"


def test_import_revsearch_imports_neither_runtime() -> None:
    out = _python(
        """
        import sys, revsearch
        from revsearch.models.embedding import Embedder
        Embedder("mobilenet", weights=None, backend="keras")
        print("tensorflow" in sys.modules, "keras" in sys.modules, "openvino" in sys.modules)
        """
    )
    assert out.split() == ["False", "False", "False"]


# ----------------------------------------------------------------------------- conversion and cache


@pytest.mark.slow
@needs_openvino
@pytest.mark.parametrize("name", ["resnet50", "mobilenet", "resnet50-seed"])
def test_conversion_matches_keras(name: str, tmp_path: Path) -> None:
    """float32 OpenVINO = Keras float32 (the normalisation folded into the graph included); bfloat16 close."""
    imgs = [make_photo(i, (180, 130)) for i in range(4)]
    ref = Embedder(name, weights=None, backend="keras", precision="float32").embed(imgs)
    ov32 = Embedder(name, weights=None, backend="openvino", precision="float32", cache_dir=tmp_path)
    v = ov32.embed(imgs)
    assert v.shape == ref.shape and v.dtype == np.float32
    assert (v * ref).sum(1).min() > 0.9999
    assert ov32.spec["backend"] == "openvino" and ov32.spec["precision"] == "float32"
    bf = ov32.variant(precision="bfloat16")
    assert bf.backend == "openvino" and bf.precision == "bfloat16"
    assert (bf.embed(imgs) * ref).sum(1).min() > 0.98
    np.testing.assert_allclose(np.linalg.norm(bf.embed(imgs), axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
@needs_openvino
def test_custom_keras_model_converts(tmp_path: Path) -> None:
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((48, 48, 3)), keras.layers.Conv2D(6, 3, activation="relu"), keras.layers.GlobalMaxPooling2D()],
        name="small",
    )
    imgs = [make_photo(i, (60, 50)) for i in range(3)]
    ref = Embedder(model, backend="keras").embed(imgs)
    e = Embedder(model, backend="openvino", precision="float32", cache_dir=tmp_path)
    np.testing.assert_allclose(e.embed(imgs), ref, rtol=1e-4, atol=1e-5)
    # another model with the same layer names but other weights gets its own cache entry
    keras.utils.set_random_seed(4)
    other = keras.Sequential(
        [keras.Input((48, 48, 3)), keras.layers.Conv2D(6, 3, activation="relu"), keras.layers.GlobalMaxPooling2D()],
        name="small",
    )
    e2 = Embedder(other, backend="openvino", precision="float32", cache_dir=tmp_path)
    assert e2.openvino_model().ir_path != e.openvino_model().ir_path
    np.testing.assert_allclose(e2.embed(imgs), Embedder(other, backend="keras").embed(imgs), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="set_dtype_policy"):
        Embedder(model, backend="keras", precision="bfloat16")


@pytest.mark.slow
@needs_openvino
def test_second_start_uses_the_cache_without_tensorflow(tmp_path: Path) -> None:
    """The first start converts (via Keras); a fresh process reads the IR and the compiled blob, and never
    imports TensorFlow; the vectors are the same."""
    code = """
        import json, sys
        import numpy as np
        from revsearch.models.embedding import Embedder
        e = Embedder("mobilenet", weights=None, backend="openvino", precision="float32", cache_dir={cache!r})
        e.load()
        v = e.embed([np.full((64, 64, 3), 90, np.uint8), np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)])
        print(json.dumps({{"from": e.openvino_model().loaded_from, "tf": "tensorflow" in sys.modules, "v": v[:, :8].tolist()}}))
    """.format(cache=str(tmp_path))
    first = json.loads(_python(code).strip().splitlines()[-1])
    second = json.loads(_python(code).strip().splitlines()[-1])
    assert first["from"].startswith("converted") and first["tf"] is True
    assert second["from"] == "cached IR + compiled blob" and second["tf"] is False
    np.testing.assert_allclose(second["v"], first["v"], rtol=1e-6, atol=1e-7)
    irs = list((tmp_path / "ir").iterdir())
    assert len(irs) == 1 and (irs[0] / "model.xml").is_file() and (irs[0] / "model.bin").is_file()
    key = json.loads((irs[0] / "key.json").read_text())
    assert key["model"] == "mobilenet" and key["weights"] == "none" and key["input_size"] == 224
    assert any((tmp_path / "compiled").iterdir())  # OpenVINO's CACHE_DIR holds the compiled blob


@pytest.mark.slow
@needs_openvino
def test_cache_keys_and_damaged_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a = Embedder("mobilenet", weights=None, backend="openvino", precision="float32", cache_dir=tmp_path)
    b = Embedder("mobilenet", weights=None, backend="openvino", precision="bfloat16", cache_dir=tmp_path)
    c = Embedder("mobilenet", weights=None, backend="openvino", pooling="gem", cache_dir=tmp_path)  # not the default
    d = Embedder("resnet50", weights=None, backend="openvino", cache_dir=tmp_path)
    paths = {e.openvino_model().ir_path for e in (a, b, c, d)}
    assert len(paths) == 3  # one IR for both precisions (compiled twice), one per pooling, one per model
    assert a.openvino_model().ir_path == b.openvino_model().ir_path
    img = make_photo(5)
    good = a.embed(img)
    # a hand-damaged cache entry is converted again, with a warning, not trusted
    ir = a.openvino_model().ir_path
    ir.write_text("<net>this is not a model</net>")
    fresh = Embedder("mobilenet", weights=None, backend="openvino", precision="float32", cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="revsearch.models.backends"):
        again = fresh.embed(img)
    assert fresh.openvino_model().loaded_from.startswith("converted")
    assert "unreadable" in caplog.text
    np.testing.assert_allclose(again, good, rtol=1e-5, atol=1e-6)
    assert "<net>" not in ir.read_text()


@pytest.mark.slow
@needs_openvino
def test_unwritable_cache_still_embeds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    e = Embedder("mobilenet", weights=None, backend="openvino", precision="float32", cache_dir=blocker / "cache")
    with caplog.at_level(logging.WARNING, logger="revsearch.models.backends"):
        v = e.embed(make_photo(1))  # the cache folder cannot be made: it runs, uncached, and says so
    assert "cannot use the OpenVINO cache folder" in caplog.text
    assert e.openvino_model().loaded_from.startswith("converted")
    ref = Embedder("mobilenet", weights=None, backend="keras", precision="float32").embed(make_photo(1))
    assert float(v @ ref) > 0.9999
    assert blocker.read_text() == "not a folder"


# ----------------------------------------------------------------------------- searching across backends


def _flowers(n_per_class: int, classes: int = 6) -> list[Path]:
    out = []
    for d in sorted(p for p in FLOWERS.iterdir() if p.is_dir())[:classes]:
        out += sorted(d.glob("*.jpg"))[:n_per_class]
    return out


def _top9(index: Index, emb: Embedder, queries: list[Path]) -> list[list[int]]:
    return [list(index.topk(emb.embed(q)[None], 10, exact=True)[1][0][1:]) for q in queries]


@needs_openvino
@needs_weights
@pytest.mark.skipif(not FLOWERS.is_dir(), reason=f"{FLOWERS} not found (real photos for the agreement test)")
def test_cross_backend_search_real_weights(tmp_path: Path) -> None:
    """An index built by OpenVINO (bfloat16, opt-in) is searched with Keras and vice versa: the top-9 results
    agree with Keras float32's (MobileNet, ImageNet weights, real photos); OpenVINO float32
    agrees almost exactly."""
    ds = tmp_path / "flowers"
    for f in _flowers(10):
        (ds / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, ds / f.parent.name / f.name)
    ov_emb = get_embedder("mobilenet", weights="imagenet", backend="openvino", precision="bfloat16")
    ov32 = get_embedder("mobilenet", weights="imagenet", backend="openvino", precision="float32")
    keras_emb = get_embedder("mobilenet", weights="imagenet", backend="keras", precision="float32")
    ov_index, _ = Index.build(ds, tmp_path / "vec-ov", ov_emb, progress=False)
    k_index, _ = Index.build(ds, tmp_path / "vec-keras", keras_emb, progress=False)
    assert ov_index.spec["backend"] == "openvino" and ov_index.spec["precision"] == ov_emb.precision
    assert k_index.spec["backend"] == "keras"
    cos = (np.asarray(ov_index.vectors) * np.asarray(k_index.vectors)).sum(1)
    assert cos.min() > 0.98
    queries = sorted(ds.rglob("*.jpg"))[::3]
    truth = _top9(k_index, keras_emb, queries)
    for index, emb, least in ((ov_index, keras_emb, 0.85), (k_index, ov_emb, 0.85), (ov_index, ov_emb, 0.85),
                              (k_index, ov32, 0.99)):  # fmt: skip
        got = _top9(index, emb, queries)
        agreement = np.mean([len(set(a) & set(b)) / 9 for a, b in zip(got, truth)])
        assert agreement >= least, (index.spec, emb, agreement)
    # the index's own embedder (as recorded: model, weights, precision) searches it, whichever backend runs
    m = ov_index.search(queries[0], 1, expand=False)[0]  # plain cosine: the very vectors
    assert m.relpath == queries[0].relative_to(ds).as_posix() and m.score > 0.999


@pytest.mark.slow
@needs_openvino
def test_cross_backend_search_random_weights(tmp_path: Path) -> None:
    ds = tmp_path / "photos"
    write_photos(ds, 12)
    ov_emb = Embedder("resnet50", weights=None, backend="openvino", precision="float32")
    k_emb = get_embedder("resnet50", weights=None, backend="keras", precision="float32")
    index, _ = Index.build(ds, tmp_path / "vec", ov_emb, progress=False)
    for q in sorted(ds.iterdir())[:4]:
        for emb in (ov_emb, k_emb):
            m = index.search(q, 1, embedder=emb, expand=False)[0]  # plain cosine: the very vectors
            assert m.relpath == q.name and m.score > 0.9999


@pytest.mark.slow
@needs_openvino
def test_cli_backend_option(tmp_path: Path) -> None:
    from revsearch.cli import main

    ds = tmp_path / "photos"
    write_photos(ds, 6)
    vec = tmp_path / "vec"
    # ResNet50: with random weights its vectors still tell images apart (MobileNet's collapse to one direction)
    assert main(["index", str(ds), str(vec), "--model", "resnet50", "--weights", "none", "--backend", "keras", "-q"]) == 0
    assert Index.open(vec).spec["backend"] == "keras" and Index.open(vec).spec["precision"] == "float32"
    # update the same index with OpenVINO (recorded), and search it with either backend
    (ds / "img0000.jpg").unlink()
    write_photos(ds, 1, start=20)
    assert main(["index", str(ds), str(vec), "--backend", "openvino", "--precision", "float32", "-q"]) == 0
    spec = Index.open(vec).spec
    assert spec["backend"] == "openvino" and spec["precision"] == "float32" and spec["model"] == "resnet50"
    for backend in ("keras", "openvino"):
        out = subprocess.run(
            [sys.executable, "-m", "revsearch", "search", str(ds / "img0020.jpg"), str(vec), "-k", "1", "--json", "--no-expand",
             "--backend", backend],
            env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        res = json.loads(out.stdout)["results"][0]
        assert res["relpath"] == "img0020.jpg" and res["score"] > 0.9999


@needs_openvino
def test_auto_falls_back_to_keras_when_openvino_cannot_convert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(self):
        raise RuntimeError("Check 'is_conversion_successful' failed: unsupported operation MyOp")

    monkeypatch.setattr(backends.OpenVINOModel, "_convert", refuse)
    auto = Embedder("mobilenet", weights=None, cache_dir=tmp_path / "fresh")
    assert auto.backend == "openvino"
    with caplog.at_level(logging.WARNING, logger="revsearch.models.embedding"):
        v = auto.embed(make_photo(3))
    assert auto.backend == "keras" and auto.spec["backend"] == "keras" and auto.precision == "float32"
    assert "could not convert" in caplog.text and "MyOp" in caplog.text
    ref = Embedder("mobilenet", weights=None, backend="keras", precision="float32").embed(make_photo(3))
    np.testing.assert_allclose(v, ref, rtol=1e-4, atol=1e-5)
    explicit = Embedder("mobilenet", weights=None, backend="openvino", cache_dir=tmp_path / "fresh2")
    with pytest.raises(RuntimeError, match="MyOp"):  # asked for OpenVINO by name: the error is not hidden
        explicit.embed(make_photo(3))


@pytest.mark.slow
@needs_openvino
def test_index_update_with_cached_openvino_model_never_imports_tensorflow(tmp_path: Path) -> None:
    """Index.build loads the embedder before writing: with OpenVINO's cached model that is the compiled blob,
    not the Keras model, so an update in a fresh process starts without TensorFlow."""
    ds = tmp_path / "photos"
    write_photos(ds, 4)
    code = """
        import json, sys
        from revsearch.models.embedding import Embedder
        from revsearch import Index
        emb = Embedder("resnet50", weights=None, backend="openvino", precision="float32", cache_dir={cache!r})
        index, report = Index.build({ds!r}, {vec!r}, emb, progress=False)
        print(json.dumps({{"n": len(index), "added": len(report.added), "tf": "tensorflow" in sys.modules,
                          "spec": index.spec}}))
    """.format(cache=str(tmp_path / "cache"), ds=str(ds), vec=str(tmp_path / "vec"))
    first = json.loads(_python(code).strip().splitlines()[-1])
    assert first["n"] == 4 and first["tf"] is True  # converted from Keras
    write_photos(ds, 2, start=10)
    second = json.loads(_python(code).strip().splitlines()[-1])
    assert second["n"] == 6 and second["added"] == 2 and second["tf"] is False
    assert second["spec"]["backend"] == "openvino" and second["spec"]["precision"] == "float32"
