"""Models and embedding (revsearch.embedding)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATASETS, make_photo, needs_weights
from revsearch.embedding import MODELS, Embedder, get_embedder, l2_normalize
from revsearch.errors import ImageReadError, UnknownModelError, WeightsUnavailableError
from revsearch.images import SkippedFile, prepare_image

REPO = Path(__file__).resolve().parents[1]
FLOWERS = DATASETS / "oxford17_flowers"
SPEC_KEYS = {"model", "preprocessing", "dim", "weights", "precision", "backend"}


def _run_python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``python -c code`` in a fresh process, with the repository importable."""
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=full_env,
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{out}\n{err[-3000:]}"
    return out


@pytest.fixture(scope="module")
def tiny_model():
    """A small Keras model (fixed 32x32x3 input, 8-d Dense output): milliseconds per batch."""
    import keras

    keras.utils.set_random_seed(7)
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(8),
        ],
        name="tiny",
    )


@pytest.fixture(scope="module")
def tiny(tiny_model) -> Embedder:
    return Embedder(tiny_model, backend="keras")  # compared with the Keras model's own output below


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here may reach the network (with internet, a weights download would start)."""
    import socket

    def refused(*args: object, **kwargs: object) -> None:
        raise OSError("test: no network in tests/test_embedding.py")

    monkeypatch.setattr(socket.socket, "connect", refused)
    monkeypatch.setattr(socket, "create_connection", refused)
    monkeypatch.setattr(socket, "getaddrinfo", refused)


# ----------------------------------------------------------------------------- spec and errors


def test_spec_fields_of_named_models() -> None:
    for name, info in MODELS.items():
        e = Embedder(name, weights=None, backend="keras")  # lazy: nothing is built here
        spec = e.spec
        assert set(spec) == SPEC_KEYS
        assert spec["model"] == name
        assert spec["dim"] == info.dim == e.dim
        assert spec["weights"] == "none"
        assert spec["precision"] == "float32"  # Keras on a CPU: float32 unless asked
        assert spec["backend"] == "keras"
        default_fit = "pad:" if name == "resnet50-seed" else "crop:"  # the original pipeline pads
        assert f"resize:{info.size}:" in spec["preprocessing"] and spec["preprocessing"].startswith(default_fit)
    assert Embedder("resnet50", weights=None).dim == 2048
    assert Embedder("mobilenet", weights=None).dim == 1024
    assert Embedder("ResNet50", weights=None).name == "resnet50"
    assert Embedder("resnet50", weights="imagenet").spec["weights"] == "imagenet"
    assert Embedder("mobilenet", weights=None, precision="bfloat16").spec["precision"] == "bfloat16"
    pre = {n: Embedder(n, weights=None).spec["preprocessing"] for n in ("resnet50", "resnet50-seed", "mobilenet")}
    assert "keras.applications.resnet50.preprocess_input" in pre["resnet50"]
    assert "raw-bgr" in pre["resnet50-seed"]
    assert "keras.applications.mobilenet.preprocess_input" in pre["mobilenet"]
    assert len(set(pre.values())) == 3
    # fit and fill are part of the preprocessing record
    crop = Embedder("resnet50", weights=None, fit="crop", fill="edge").spec["preprocessing"]
    assert crop.startswith("crop:edge") and crop != pre["resnet50"]


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(UnknownModelError) as info:
        Embedder("vgg16")
    msg = str(info.value)
    assert "vgg16" in msg
    for name in MODELS:
        assert name in msg
    with pytest.raises(UnknownModelError, match="resnet50"):
        get_embedder("efficientnet")
    with pytest.raises(UnknownModelError, match="Keras model"):
        Embedder(object())


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="precision"):
        Embedder("resnet50", weights=None, precision="float8")
    with pytest.raises(ValueError, match="backend"):
        Embedder("resnet50", weights=None, backend="onnx")
    with pytest.raises(ValueError, match="fit"):
        Embedder("resnet50", weights=None, fit="stretch")


def test_missing_weights_file(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_weights.h5"
    with pytest.raises(WeightsUnavailableError) as info:
        Embedder("resnet50", weights=missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, OSError)
    with pytest.raises(WeightsUnavailableError):
        get_embedder("mobilenet", weights=str(missing))


def test_weights_file_identified_by_content(tmp_path: Path) -> None:
    a = tmp_path / "a.weights.h5"
    a.write_bytes(b"first")
    b = tmp_path / "b.weights.h5"
    b.write_bytes(b"second")
    wa, wb = Embedder("mobilenet", weights=a).weights, Embedder("mobilenet", weights=b).weights
    assert wa.startswith("file:a.weights.h5:sha256:")
    assert wa != wb.replace("b.weights", "a.weights")


def test_get_embedder_caches() -> None:
    e1 = get_embedder("mobilenet", weights=None)
    assert get_embedder("MobileNet", weights=None) is e1
    assert get_embedder(e1) is e1
    other = "float32" if e1.precision != "float32" else "bfloat16"
    assert get_embedder("mobilenet", weights=None, precision=other) is not e1
    assert get_embedder("mobilenet", weights=None, precision=e1.precision, backend=e1.backend) is e1


def test_l2_normalize() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    y = l2_normalize(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[0.6, 0.8], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(l2_normalize(np.array([0.0, 2.0])), [0.0, 1.0])
    # however short a vector is (random-weight models output norms of 1e-18), it comes out unit length
    tiny = l2_normalize(np.array([[1e-19, 2e-19, 2e-19], [3e-30, 0.0, 4e-30]], np.float32))
    np.testing.assert_allclose(tiny, [[1 / 3, 2 / 3, 2 / 3], [0.6, 0.0, 0.8]], rtol=1e-5)
    np.testing.assert_allclose(l2_normalize(np.array([[3.0, 0.0], [4.0, 0.0]]), axis=0), [[0.6, 0.0], [0.8, 0.0]])
    assert np.isnan(l2_normalize(np.array([np.nan, 1.0]))).all()  # not silently zeroed


# ----------------------------------------------------------------------------- custom Keras models


def test_custom_keras_model_embeds(tiny: Embedder, tiny_model) -> None:
    assert tiny.dim == 8 and tiny.input_size == 32
    spec = tiny.spec
    assert set(spec) == SPEC_KEYS
    assert spec["model"] == "keras:tiny" and spec["dim"] == 8
    assert spec["weights"].startswith("sha256:")
    assert "resize:32" in spec["preprocessing"] and "identity" in spec["preprocessing"]
    img = make_photo(11, (48, 36))
    v = tiny.embed(img)
    assert v.shape == (8,) and v.dtype == np.float32
    expected = np.asarray(tiny_model.predict_on_batch(prepare_image(img, 32)[None]))[0]
    np.testing.assert_allclose(v, expected / np.linalg.norm(expected), rtol=1e-5, atol=1e-6)
    assert Embedder(tiny_model, name="mine").spec["model"] == "mine"


def test_custom_preprocess_is_used_and_recorded(tiny_model) -> None:
    def halve(batch: np.ndarray) -> np.ndarray:
        return batch / 2.0

    img = make_photo(12, (40, 40))
    expected = np.asarray(tiny_model.predict_on_batch(prepare_image(img, 32)[None] / 2.0))[0]
    from revsearch.backends import openvino_installed

    for backend in ["keras"] + (["openvino"] if openvino_installed() else []):  # the OpenVINO run applies it too
        e = Embedder(tiny_model, preprocess=halve, backend=backend, precision="float32")
        assert "halve" in e.spec["preprocessing"]
        np.testing.assert_allclose(e.embed(img), expected / np.linalg.norm(expected), rtol=1e-4, atol=1e-5)


def test_custom_model_with_4d_output_rejected() -> None:
    import keras

    conv = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(2, 3)])
    with pytest.raises(ValueError) as info:
        Embedder(conv)
    msg = str(info.value)
    assert "one vector per image" in msg
    assert "(None, 30, 30, 2)" in msg
    assert "pooling" in msg


def test_custom_model_with_non_square_input_rejected() -> None:
    import keras

    m = keras.Sequential([keras.Input((32, 16, 3)), keras.layers.Flatten(), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="fixed S"):
        Embedder(m)


# ----------------------------------------------------------------------------- vectors


def test_vectors_normalised_and_shaped(tiny: Embedder, tmp_path: Path) -> None:
    imgs = [make_photo(i, (40, 30)) for i in range(5)]
    one = tiny.embed(imgs[0])
    many = tiny.embed(imgs, batch_size=2)
    assert one.shape == (8,) and many.shape == (5, 8)
    assert one.dtype == np.float32 and many.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(many[0], one, atol=1e-6)
    np.testing.assert_allclose(tiny.embed(tuple(imgs[:2])), many[:2], atol=1e-6)
    assert tiny.embed([]).shape == (0, 8)
    # the same picture given as a file path, bytes, PIL image
    p = tmp_path / "x.png"
    Image.fromarray(imgs[3]).save(p)
    for src in (p, str(p), p.read_bytes(), Image.fromarray(imgs[3])):
        np.testing.assert_allclose(tiny.embed(src), many[3], atol=1e-5)
    # different pictures give different vectors
    assert float(many[0] @ many[1]) < 0.9999


def test_embed_unreadable_raises_named(tiny: Embedder, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    with pytest.raises(ImageReadError, match="bad.jpg"):
        tiny.embed([make_photo(1), bad])


def test_embed_prepared_checks_shape(tiny: Embedder) -> None:
    with pytest.raises(ValueError, match="32, 32, 3"):
        tiny.embed_prepared(np.zeros((1, 224, 224, 3), np.float32))
    assert tiny.embed_prepared(np.zeros((0, 32, 32, 3), np.float32)).shape == (0, 8)


@pytest.mark.slow
def test_resnet_random_vectors(resnet_random: Embedder) -> None:
    imgs = [make_photo(20), make_photo(21)]
    v = resnet_random.embed(imgs)
    assert v.shape == (2, 2048) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    v0 = resnet_random.embed(imgs[0])
    assert v0.shape == (2048,)
    np.testing.assert_allclose(v0, v[0], rtol=1e-4, atol=1e-5)
    # resnet50: keras.applications.resnet50.preprocess_input, then the model
    from keras.applications.resnet50 import preprocess_input

    x = np.stack([resnet_random.prepare(i) for i in imgs])
    raw = np.asarray(resnet_random.keras_model.predict_on_batch(preprocess_input(x.copy())))
    keras_emb = resnet_random.variant(backend="keras")
    np.testing.assert_allclose(keras_emb.embed(imgs), l2_normalize(raw), rtol=1e-4, atol=1e-5)
    assert (v * l2_normalize(raw)).sum(1).min() > 0.9999  # whichever backend the default is


@pytest.mark.slow
def test_resnet50_seed_is_raw_bgr(resnet_random: Embedder) -> None:
    seed = get_embedder("resnet50-seed", weights=None, backend="keras", precision="float32")
    img = make_photo(22)
    a, b = resnet_random.embed(img), seed.embed(img)
    # same weights (same seed) but other preprocessing: other vectors
    assert not np.allclose(a, b, atol=1e-4)
    assert float(a @ b) < 0.999
    # resnet50-seed = the ResNet50 model on raw BGR 0..255, without preprocess_input
    bgr = prepare_image(img)[None, ..., ::-1].copy()
    avg_pooled = get_embedder("resnet50", weights=None, pooling="avg", backend="keras", precision="float32")  # default: GeM
    for model in (seed.keras_model, avg_pooled.keras_model):
        raw = np.asarray(model.predict_on_batch(bgr))[0]
        np.testing.assert_allclose(b, raw / np.linalg.norm(raw), rtol=1e-4, atol=1e-5)


_EMBED_SEEDED = """
import sys
import numpy as np
sys.path.insert(0, "tests")
from conftest import make_photo
from revsearch.embedding import Embedder
vecs = Embedder(sys.argv[2], weights=None, backend="keras", precision="float32").embed([make_photo(30), make_photo(31)])
np.save(sys.argv[1], vecs)
"""


@pytest.mark.slow
def test_random_weights_are_seeded_across_processes(tmp_path: Path, resnet_random: Embedder) -> None:
    """weights=None gives the same model in a fresh process as in this one (which built others before)."""
    out = tmp_path / "vectors.npy"
    env = dict(os.environ, TF_NUM_INTEROP_THREADS="1", TF_NUM_INTRAOP_THREADS="1")
    _finish(_run_python(_EMBED_SEEDED, str(out), "resnet50", env=env))
    there = np.load(out)
    assert there.shape == (2, 2048)
    np.random.default_rng().random(3)  # whatever random state this process is in
    here = resnet_random.variant(backend="keras").embed([make_photo(30), make_photo(31)])  # built here, not cached
    np.testing.assert_allclose(there, here, rtol=1e-4, atol=1e-5)
    assert np.abs(here[0] - here[1]).max() > 1e-3  # two images, two vectors: the check above can fail


@pytest.mark.slow
def test_random_weights_mobilenet() -> None:
    """Building with weights=None leaves the global random state alone; its tiny outputs come out unit length."""
    import random

    np.random.seed(5)
    random.seed(5)
    expected = (np.random.random(), random.random())
    np.random.seed(5)
    random.seed(5)
    e = Embedder("mobilenet", weights=None)
    e.keras_model
    assert (np.random.random(), random.random()) == expected
    # random MobileNet features have norms near 1e-18: still L2-normalised
    v = e.embed([make_photo(60), make_photo(61)])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


_NO_DOWNLOAD = """
import socket, sys, time

# No network, whatever the machine: with internet, Keras would download the weights and the test
# would fail. Every way out (name lookup, socket, connection) is refused and counted.
attempts = []

class NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        attempts.append("socket")
        raise OSError("test: no sockets (weights must not be downloaded)")

def refuse(what):
    def refused(*args, **kwargs):
        attempts.append(what)
        raise OSError(f"test: no {what} (weights must not be downloaded)")
    return refused

socket.socket = NoSocket
socket.create_connection = refuse("create_connection")
socket.getaddrinfo = refuse("getaddrinfo")
from revsearch.embedding import Embedder
from revsearch.errors import WeightsUnavailableError
emb = Embedder("resnet50")
t = time.monotonic()
try:
    emb.keras_model
except WeightsUnavailableError as e:
    print("RAISED", round(time.monotonic() - t, 1), "BLOCKED", len(attempts))
    print(e)
else:
    print("NO ERROR")
"""


@pytest.mark.slow
def test_imagenet_weights_unavailable_offline(tmp_path: Path) -> None:
    home = tmp_path / "empty_keras_home"
    home.mkdir()
    env = dict(os.environ, KERAS_HOME=str(home))
    out = _finish(_run_python(_NO_DOWNLOAD, env=env), timeout=240)
    assert "RAISED" in out, out  # (Keras prints "Downloading data from ..." first)
    blocked = int(out[out.index("BLOCKED") :].split()[1])
    assert blocked >= 1, out  # the download was tried, and stopped by the test's block, not by luck
    message = out[out.index("RAISED") :].partition("\n")[2]
    assert "KERAS_HOME" in message
    assert "weights=" in message
    assert str(home) in message  # says where Keras looked
    assert "ResNet50" in message
    # no half-downloaded weights file is left to break the next run
    assert not list(home.rglob("*.h5"))


# ----------------------------------------------------------------------------- embed_files


def test_embed_files_reports_broken_and_keeps_order(tiny: Embedder, tmp_path: Path) -> None:
    good = []
    for i in range(5):
        p = tmp_path / f"g{i}.png"
        Image.fromarray(make_photo(40 + i, (36, 28))).save(p)
        good.append(p)
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    cut = tmp_path / "cut.jpg"
    Image.fromarray(make_photo(50, (120, 90))).save(cut, quality=90)
    cut.write_bytes(cut.read_bytes()[:600])
    missing = tmp_path / "missing.jpg"
    paths = [good[0], text, good[1], good[2], missing, good[3], cut, good[4]]
    good_idx = [0, 2, 3, 5, 7]

    batches = list(tiny.embed_files([str(p) for p in paths], batch_size=2, workers=2, progress=False))
    indices = [i for b in batches for i in b.indices]
    assert indices == good_idx  # every readable file, in the order given
    vectors = np.concatenate([b.vectors for b in batches])
    assert vectors.shape == (5, 8) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, tiny.embed(good), rtol=1e-5, atol=1e-6)
    for b in batches:
        assert len(b.indices) == len(b.vectors) == len(b.infos)
    infos = [info for b in batches for info in b.infos]
    assert [info.size for info in infos] == [paths[i].stat().st_size for i in good_idx]
    assert all(len(info.digest) == 16 for info in infos)

    skipped = [s for b in batches for s in b.skipped]
    assert all(isinstance(s, SkippedFile) for s in skipped)
    by_path = {Path(s.path): s.reason for s in skipped}
    assert set(by_path) == {text, missing, cut}
    assert "not an image" in by_path[text]
    assert "truncated" in by_path[cut]
    assert by_path[missing]  # says why
    for s in skipped:
        assert str(s.path) in str(s) and s.reason in str(s)


def test_embed_files_skips_a_huge_sparse_file_without_reading_it(tiny: Embedder, tmp_path: Path) -> None:
    """A 30 GB x.jpg was read whole into memory (MemoryError, the run lost)."""
    good = tmp_path / "a.png"
    Image.fromarray(make_photo(7, (36, 28))).save(good)
    big = tmp_path / "x.jpg"
    with open(big, "wb") as f:
        f.truncate(30 * 1024**3)
    batches = list(tiny.embed_files([big, good], batch_size=4, workers=2, progress=False))
    assert [i for b in batches for i in b.indices] == [1]
    skipped = [s for b in batches for s in b.skipped]
    assert [Path(s.path) for s in skipped] == [big]
    assert "32.2 GB" in skipped[0].reason and "MAX_FILE_BYTES" in skipped[0].reason


def test_embed_files_all_broken_and_empty(tiny: Embedder, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    batches = list(tiny.embed_files([bad], progress=False))
    assert [i for b in batches for i in b.indices] == []
    assert [Path(s.path) for b in batches for s in b.skipped] == [bad]
    assert sum(len(b.vectors) for b in list(tiny.embed_files([], progress=False))) == 0


# ----------------------------------------------------------------------------- real ImageNet weights

_CLASSES = ("sunflower", "bluebell", "daisy", "tulip", "snowdrop")


@pytest.fixture(scope="module")
def photo_collection(tmp_path_factory: pytest.TempPathFactory, mobilenet: Embedder):
    """20 photos (real flowers if the shared dataset is there, else synthetic) and their index."""
    from revsearch import Index

    root = tmp_path_factory.mktemp("collection")
    dataset = root / "photos"
    labels: dict[str, str] = {}
    if all((FLOWERS / c).is_dir() for c in _CLASSES):
        for c in _CLASSES:
            (dataset / c).mkdir(parents=True)
            for src in sorted((FLOWERS / c).glob("*.jpg"))[:4]:
                shutil.copy(src, dataset / c / src.name)
                labels[f"{c}/{src.name}"] = c
    else:
        for i in range(20):
            (dataset / "synthetic").mkdir(parents=True, exist_ok=True)
            Image.fromarray(make_photo(100 + i, (320, 240))).save(dataset / "synthetic" / f"p{i:02d}.jpg", quality=92)
    index, _ = Index.build(dataset, root / "vectors", mobilenet, progress=False)
    return dataset, index, labels


@needs_weights
def test_real_weights_find_edited_copies(photo_collection, mobilenet: Embedder, tmp_path: Path) -> None:
    dataset, index, _ = photo_collection
    assert len(index) == 20
    assert index.spec == mobilenet.spec
    rel = index.paths[5]
    original = Image.open(dataset / rel).convert("RGB")
    requant = tmp_path / "requant.jpg"
    original.save(requant, quality=40)
    half = tmp_path / "half.png"
    original.resize((original.width // 2, original.height // 2), Image.Resampling.BILINEAR).save(half)
    for query in (requant, half):
        matches = index.search(query, k=3, embedder=mobilenet)
        assert matches[0].relpath == rel, (query.name, [(m.relpath, m.score) for m in matches])
        assert matches[0].score > 0.9
        assert matches[0].score > matches[1].score


@needs_weights
def test_real_weights_exif_rotated_copy(photo_collection, mobilenet: Embedder, tmp_path: Path) -> None:
    dataset, index, _ = photo_collection
    rel = index.paths[9]
    upright = Image.open(dataset / rel).convert("RGB")
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # the viewer turns the stored pixels 90 degrees clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(rotated, quality=95, exif=exif)
    a = mobilenet.embed(dataset / rel)
    b = mobilenet.embed(rotated)
    assert float(a @ b) > 0.99
    # without the orientation tag the picture would be sideways, and far less similar
    c = mobilenet.embed(upright.transpose(Image.Transpose.ROTATE_90))
    assert float(a @ c) < float(a @ b)


@needs_weights
def test_real_weights_same_class_more_similar(photo_collection) -> None:
    _, index, labels = photo_collection
    if not labels:
        pytest.skip(f"real photos with classes not found under {FLOWERS}")
    vecs = np.asarray(index.vectors)
    lab = np.array([labels[p] for p in index.paths])
    sims = vecs @ vecs.T
    same = (lab[:, None] == lab[None, :]) & ~np.eye(len(lab), dtype=bool)
    other = lab[:, None] != lab[None, :]
    assert sims[same].mean() > sims[other].mean() + 0.05, (sims[same].mean(), sims[other].mean())


def test_random_weights_do_not_depend_on_global_random_state() -> None:
    """weights=None draws from a private generator: another thread consuming Python's global
    `random` while the model is built (as a Dask worker's event loop does) changes nothing."""
    import random
    import threading

    from revsearch.embedding import Embedder

    first = Embedder("mobilenet", weights=None).keras_model.get_weights()
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            random.random()

    t = threading.Thread(target=churn)
    t.start()
    try:
        random.seed(12345)
        second = Embedder("mobilenet", weights=None).keras_model.get_weights()
    finally:
        stop.set()
        t.join()
    assert len(first) == len(second) > 50
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert any(np.abs(w).max() > 0 for w in first)
