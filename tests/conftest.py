"""Shared fixtures.

Real ImageNet weights: the tests that need features that mean something use Keras MobileNet
with its ImageNet weights, found through ``REVSEARCH_TEST_KERAS_HOME`` (a folder holding
``models/mobilenet_1_0_224_tf_no_top.h5``, as Keras's cache does; ``.ci/run`` sets it).
The folder is copied to a writable place and ``KERAS_HOME`` pointed at it before Keras is
imported. Without the variable those tests are skipped, with the reason shown.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MOBILENET_FILE = "mobilenet_1_0_224_tf_no_top.h5"
_SOURCE = os.environ.get("REVSEARCH_TEST_KERAS_HOME")
HAVE_WEIGHTS = bool(_SOURCE) and (Path(_SOURCE) / "models" / MOBILENET_FILE).is_file()
if HAVE_WEIGHTS:
    _home = Path(tempfile.mkdtemp(prefix="revsearch-keras-"))
    shutil.copytree(Path(_SOURCE) / "models", _home / "models")  # type: ignore[arg-type]
    os.environ["KERAS_HOME"] = str(_home)
elif "KERAS_HOME" not in os.environ:
    # Never let a test touch the user's ~/.keras or try to download: an empty private cache.
    os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="revsearch-keras-empty-")

# Converted/compiled OpenVINO models (revsearch.models.backends) go to a private cache shared by this run's
# tests, never to the user's ~/.cache.
if not os.environ.get("REVSEARCH_CACHE_DIR"):
    os.environ["REVSEARCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="revsearch-cache-")

needs_weights = pytest.mark.skipif(
    not HAVE_WEIGHTS,
    reason=(
        "offline ImageNet weights not found: set REVSEARCH_TEST_KERAS_HOME to a folder holding "
        f"models/{MOBILENET_FILE} (e.g. ../shared/keras); .ci/run does"
    ),
)

SHARED = Path(__file__).resolve().parents[2] / "shared"
# The real photos (../shared/datasets beside the checkout; REVSEARCH_TEST_DATASETS names another place).
DATASETS = Path(os.environ.get("REVSEARCH_TEST_DATASETS") or SHARED / "datasets")


def make_photo(seed: int, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """A smooth synthetic 'photo' (gradients and blobs), shape (H, W, 3) uint8; different per seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        a, b, p = rng.uniform(-3, 3, 3)
        img[..., c] = 127 + 60 * np.sin(a * x / w * np.pi + p) * np.cos(b * y / h * np.pi)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, 40)
        color = rng.uniform(0, 255, 3)
        mask = ((x - cx) ** 2 + (y - cy) ** 2) < r * r
        img[mask] = color
    return np.clip(img, 0, 255).astype(np.uint8)


def write_photos(folder: Path, n: int, *, start: int = 0, ext: str = ".jpg", prefix: str = "img") -> list[Path]:
    """Write ``n`` synthetic photos into ``folder``; return their paths (sorted)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + n):
        p = folder / f"{prefix}{i:04d}{ext}"
        Image.fromarray(make_photo(i)).save(p, quality=92) if ext.lower() in (".jpg", ".jpeg") else Image.fromarray(
            make_photo(i)
        ).save(p)
        out.append(p)
    return out


@pytest.fixture(scope="session")
def resnet_random():
    """ResNet50 with seeded random weights (no download; meaningless but deterministic features)."""
    from revsearch.models.embedding import get_embedder

    # float32 on the default backend (OpenVINO where installed, else Keras), as an index built by name with
    # precision="float32" (e.g. on Dask workers) uses; tests comparing with Keras's own output ask for Keras.
    return get_embedder("resnet50", weights=None, precision="float32")


@pytest.fixture(scope="session")
def mobilenet():
    """MobileNet with the offline ImageNet weights (skips without them)."""
    if not HAVE_WEIGHTS:
        pytest.skip(needs_weights.kwargs["reason"])
    from revsearch.models.embedding import get_embedder

    return get_embedder("mobilenet", weights="imagenet", precision="float32")


@pytest.fixture()
def photo_dir(tmp_path: Path) -> Path:
    """A folder of 12 synthetic photos in two subfolders."""
    write_photos(tmp_path / "photos" / "a", 6, start=0)
    write_photos(tmp_path / "photos" / "b", 6, start=6, ext=".png")
    return tmp_path / "photos"


# --------------------------------------------------------------------------- Colab's package versions

#: The versions Google Colab preinstalls that differ from the latest in ways revsearch must handle
#: (issue "Colab for real"): installed with ``pip install --target DIR --no-deps`` into an overlay
#: folder that a subprocess puts first on ``sys.path``.
COLAB_PINS = (
    "gdown==5.2.0",
    "ipywidgets==7.7.1",
    "widgetsnbextension==3.6.10",
    "jupyterlab_widgets==1.1.11",
    "ipython_genutils==0.2.0",
)


@pytest.fixture(scope="session")
def colab_overlay() -> Path:
    """A folder holding Colab's gdown and ipywidgets (see :data:`COLAB_PINS`), built once and cached.

    Cached in ``$REVSEARCH_TEST_CACHE`` (default: ``<tmp>/revsearch-test-cache``), so CI builds it
    once. Skips, saying why, when pip cannot reach the package registry.
    """
    import hashlib
    import subprocess
    import sys

    cache = Path(os.environ.get("REVSEARCH_TEST_CACHE") or Path(tempfile.gettempdir()) / "revsearch-test-cache")
    tag = hashlib.sha256(" ".join(COLAB_PINS).encode()).hexdigest()[:12]
    target = cache / f"colab-overlay-{tag}"
    if (target / ".complete").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--target", str(tmp), *COLAB_PINS],
        capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"cannot install Colab's versions ({', '.join(COLAB_PINS)}) with pip: {proc.stderr.strip()[-300:]}")
    (tmp / ".complete").write_text(" ".join(COLAB_PINS) + "\n")
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
