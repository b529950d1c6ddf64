"""The original (2021) notebook's algorithm, re-implemented by us as a speed baseline.

No code of the notebook is copied here; this follows the description in
``shared/seed/ORIGINAL_NOTEBOOK.md`` (what the notebook does, step by step):

Indexing
    For each image: read it as ``cv2.imread`` does (the whole file decoded, BGR, uint8), feed it
    to ``ResNet50(include_top=False, weights=...)`` *without* ``preprocess_input`` and *without*
    pooling, one ``model.predict`` call per image, ``.flatten()`` the (1, 7, 7, 2048) output to a
    100,352-d vector, and write it to its own ``<count>.pbz2`` file (a bz2-compressed pickle of
    ``{file_name: vector}``). The notebook's images were already padded and resized to 224x224
    before upload; ours are not, so the baseline pads (black, centred) and resizes them with
    Pillow, as revsearch does, and OpenCV is replaced by Pillow plus a channel flip (same pixels,
    OpenCV is not a dependency here).

Search
    List the vector files, shuffle them, open them one by one in a Python loop, stop after
    10,000 files, compute the cosine similarity of the query with each vector one pair at a time
    (a dot product over the two norms), skip a candidate identical to the query, keep the 9 best.

These functions exist only to be timed by ``benchmarks/indexing.py`` and ``benchmarks/search.py``.
"""

from __future__ import annotations

import bz2
import pickle
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: The notebook stopped after this many vector files.
ORIGINAL_FILE_LIMIT = 10_000


def build_original_model(name: str = "resnet50", weights: str | None = None) -> Any:
    """The notebook's feature model: Keras ``include_top=False`` with no pooling (a 7x7 map out)."""
    import keras

    builder = {"resnet50": keras.applications.ResNet50, "mobilenet": keras.applications.MobileNet}[name]
    return builder(input_shape=(224, 224, 3), include_top=False, weights=weights)


def read_like_cv2_224(path: str | Path) -> np.ndarray:
    """Decode the whole file (no reduced-scale JPEG decoding), pad to a square, resize to 224, BGR uint8."""
    with Image.open(path) as im:
        img = im.convert("RGB")
    w, h = img.size
    if w != h:
        s = max(w, h)
        canvas = Image.new("RGB", (s, s), (0, 0, 0))
        canvas.paste(img, ((s - w) // 2, (s - h) // 2))
        img = canvas
    if img.size != (224, 224):
        img = img.resize((224, 224), Image.Resampling.BICUBIC)
    return np.asarray(img)[..., ::-1]  # RGB -> BGR, as cv2.imread gives


def index_one_predict_per_image(
    paths: Sequence[Path], model: Any, out_dir: Path | None = None
) -> dict[str, float]:
    """The notebook's indexing loop. Returns seconds: ``total``, ``writing`` (the .pbz2 files), ``count``.

    With ``out_dir`` each vector is written to ``<out_dir>/<count>.pbz2`` as the notebook did; the
    time spent writing is reported apart, so the loop can be compared with or without it.
    """
    writing = 0.0
    t0 = time.perf_counter()
    for count, path in enumerate(paths, start=1):
        img = read_like_cv2_224(path)
        vec = model.predict(np.expand_dims(img, 0), verbose=0).flatten()
        if out_dir is not None:
            tw = time.perf_counter()
            with bz2.BZ2File(out_dir / f"{count}.pbz2", "wb") as f:
                pickle.dump({Path(path).name: vec}, f)
            writing += time.perf_counter() - tw
    return {"total": time.perf_counter() - t0, "writing": writing, "count": float(len(paths))}


def write_vector_files(vectors: np.ndarray, names: Sequence[str], out_dir: Path) -> list[Path]:
    """Write one ``<count>.pbz2`` per vector, as the notebook did (a shuffled count, the name as the key)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    order = list(range(len(names)))
    random.Random(0).shuffle(order)
    files = []
    for count, i in enumerate(order, start=1):
        p = out_dir / f"{count}.pbz2"
        with bz2.BZ2File(p, "wb") as f:
            pickle.dump({names[i]: np.asarray(vectors[i], np.float32)}, f)
        files.append(p)
    return files


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def search_original(
    query: np.ndarray, vector_dir: Path, k: int = 9, limit: int = ORIGINAL_FILE_LIMIT, seed: int | None = None
) -> list[tuple[float, str]]:
    """The notebook's search: per-file loop in random order, one cosine per pair, stop at ``limit`` files.

    The files here were written by :func:`write_vector_files` (trusted), so plain ``pickle.load``
    is used as the notebook did; revsearch itself never unpickles such files that way.
    """
    files = [p for p in Path(vector_dir).iterdir() if p.suffix in (".pbz2", ".pickle")]
    random.Random(seed).shuffle(files)
    scored: list[tuple[float, str]] = []
    for n, p in enumerate(files):
        if n >= limit:
            break
        with bz2.BZ2File(p, "rb") as f:
            entry = pickle.load(f)
        for name, vec in entry.items():
            if np.array_equal(vec, query):
                continue
            scored.append((_cosine(query, vec), name))
    scored.sort(key=lambda t: t[0], reverse=True)
    return scored[:k]
