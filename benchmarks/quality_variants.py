"""Retrieval quality of more embedding variants on real photos (flatten, max pooling, PCA-whitening,
flip averaging, two layers, pad colours), near-duplicate recall per edit, and bfloat16 vs float32,
with the offline ImageNet MobileNet at 224. The default pipeline and the retrieval options are chosen
and measured by ``benchmarks/quality.py``; this script keeps the earlier variant study reproducible.

Run from the repository root (about 12 minutes on 2 busy CPU cores the first time; under a
minute once the features are cached):

    python benchmarks/quality_variants.py

It needs ``../shared/datasets/{oxford17_flowers,ukbench_subset}`` and the offline weights
``../shared/keras/models/mobilenet_1_0_224_tf_no_top.h5`` (copied to a private ``KERAS_HOME``
unless ``KERAS_HOME`` already holds them). Backbone features are computed once per input
preprocessing (one forward pass of a two-output MobileNet: the last conv block, 7x7x1024, and
block 11, 14x14x512) and every pooling variant is derived from that pass. They are cached in
``/tmp/revsearch-quality-cache`` (``--cache-dir``; ``--refresh`` recomputes), never in the repo.

What it measures, on the same data for every pipeline:

* class retrieval, leave-one-out (revsearch.evaluate.retrieval_metrics): Oxford 17 Flowers,
  1,360 photos, 17 classes: precision@9, mAP, recall@1; UKBench subset, 56 photos of 14
  objects: N-S score (1 + 3 x precision@3, max 4) and mAP;
* near duplicates (revsearch.evaluate.make_edits): 10 edited copies of 170 flower photos (10 per
  class, none of the 68 near-identical pairs) and of all 56 UKBench photos query their own
  collection: recall@1 and recall@9 of the original;
* indexing time per pipeline on the 1,360 flower photos: decode + pad/crop + resize, forward
  pass(es), pooling and any fitting, summed (the library overlaps reading with the model, so
  real runs are faster; the ratio to the default is what matters);
* bfloat16: revsearch.Embedder(precision="bfloat16") against float32 on the same prepared
  flower photos: speed, top-9 agreement, precision@9.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import offline_keras_home  # noqa: E402
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = next((p for p in (ROOT.parent / "shared", ROOT.parent.parent / "shared") if p.is_dir()), ROOT.parent / "shared")
WEIGHTS_FILE = "mobilenet_1_0_224_tf_no_top.h5"
FEATURE_VERSION = 1  # bump when the extraction changes, to invalidate caches
SIZE = 224
BATCH = 32
CHUNK = 64
K = 9

#: Input preprocessings: (fit, fill) of prepare_image, then how the batch is normalised.
FITS: dict[str, tuple[str, Any]] = {
    "black": ("pad", (0, 0, 0)),
    "mean": ("pad", "mean"),
    "edge": ("pad", "edge"),
    "crop": ("crop", (0, 0, 0)),
}
#: Network inputs: name -> (fit it is made from, transform of the prepared 0..255 RGB batch).
KINDS: dict[str, tuple[str, str]] = {
    "black": ("black", "preprocess"),
    "flip": ("black", "flip+preprocess"),
    "mean": ("mean", "preprocess"),
    "edge": ("edge", "preprocess"),
    "crop": ("crop", "preprocess"),
    "raw": ("black", "raw-bgr"),
}
#: Features kept per network input (all derived from the same forward pass).
FEATURES: dict[str, tuple[str, ...]] = {
    "black": ("avg13", "max13", "gem13", "avg11", "gem11", "flat13"),
    "flip": ("avg13", "gem13"),
    "mean": ("avg13", "gem13"),
    "edge": ("avg13", "gem13"),
    "crop": ("avg13", "gem13"),
    "raw": ("avg13", "flat13"),
}
GEM_P = 3.0
#: Pipelines an Embedder option set reproduces exactly (used to find which row is the library's default).
LIBRARY_EQUIVALENT: dict[str, dict[str, Any]] = {
    "b": {"fit": "pad", "pooling": "avg"},
    "pad-mean": {"fit": "pad", "fill": "mean", "pooling": "avg"},
    "pad-edge": {"fit": "pad", "fill": "edge", "pooling": "avg"},
    "crop": {"fit": "crop", "pooling": "avg"},
    "max": {"fit": "pad", "pooling": "max"},
    "gem": {"fit": "pad", "pooling": "gem"},
    "crop+gem": {"fit": "crop", "pooling": "gem"},
}
LIBRARY_FEATURES = {"b": ("black", "avg13"), "pad-mean": ("mean", "avg13"), "pad-edge": ("edge", "avg13"),
                    "crop": ("crop", "avg13"), "max": ("black", "max13"), "gem": ("black", "gem13"),
                    "crop+gem": ("crop", "gem13")}


# ============================================================================ setup


def sha_short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class Dataset:
    name: str
    root: Path
    paths: list[str]  # relative
    labels: list[str]
    nd_rows: np.ndarray  # rows of the near-duplicate originals
    class_k: int  # k for the class metric headline

    @property
    def files(self) -> list[Path]:
        return [self.root / p for p in self.paths]


def load_datasets(base: Path, nd_per_class: int) -> list[Dataset]:
    from revsearch.evaluate import class_labels
    from revsearch.images import find_images

    out = []
    flowers = base / "oxford17_flowers"
    files = find_images(flowers)
    rel = [f.relative_to(flowers).as_posix() for f in files]
    labels, _ = class_labels(rel)
    dup: set[str] = set()
    tsv = flowers / "near_identical_pairs.tsv"
    if tsv.is_file():
        for line in tsv.read_text().splitlines():
            if line and not line.startswith("#"):
                a, b, *_ = line.split("\t")
                dup.update((a, b))
    rng = np.random.default_rng(0)
    rows = []
    lab = np.asarray(labels)
    for c in sorted(set(labels)):
        cand = [i for i in np.flatnonzero(lab == c) if rel[i] not in dup]
        rows.extend(rng.choice(cand, size=min(nd_per_class, len(cand)), replace=False).tolist())
    out.append(Dataset("flowers", flowers, rel, labels, np.sort(np.asarray(rows, np.int64)), K))
    ukb = base / "ukbench_subset"
    files = find_images(ukb)
    rel = [f.relative_to(ukb).as_posix() for f in files]
    labels, _ = class_labels(rel)
    out.append(Dataset("ukbench", ukb, rel, labels, np.arange(len(rel), dtype=np.int64), 3))
    return out


# ============================================================================ feature extraction


@dataclass
class Timings:
    prepare: dict[str, float] = field(default_factory=dict)  # per fit
    forward: dict[str, float] = field(default_factory=dict)  # per network input
    reduce: dict[str, float] = field(default_factory=dict)  # per "kind.feature"
    images: int = 0

    def add(self, table: dict[str, float], key: str, seconds: float) -> None:
        table[key] = table.get(key, 0.0) + seconds


class Extractor:
    """MobileNet with two outputs; turns batches of prepared images into pooled features."""

    def __init__(self) -> None:
        import keras

        base = keras.applications.MobileNet(include_top=False, weights="imagenet", input_shape=(SIZE, SIZE, 3))
        self.model = keras.Model(
            base.input, [base.get_layer("conv_pw_13_relu").output, base.get_layer("conv_pw_11_relu").output]
        )
        from keras.applications import mobilenet

        self.preprocess = mobilenet.preprocess_input

    def network_input(self, prepared: np.ndarray, how: str) -> np.ndarray:
        if how == "raw-bgr":
            return np.ascontiguousarray(prepared[..., ::-1])
        x = prepared[:, :, ::-1] if how.startswith("flip") else prepared
        return self.preprocess(np.array(x, dtype=np.float32))

    @staticmethod
    def reduce(name: str, f13: np.ndarray, f11: np.ndarray) -> np.ndarray:
        if name == "avg13":
            return f13.mean(axis=(1, 2))
        if name == "max13":
            return f13.max(axis=(1, 2))
        if name == "gem13":
            return np.power(np.power(np.maximum(f13, 1e-6), GEM_P).mean(axis=(1, 2)), 1 / GEM_P)
        if name == "avg11":
            return f11.mean(axis=(1, 2))
        if name == "gem11":
            return np.power(np.power(np.maximum(f11, 1e-6), GEM_P).mean(axis=(1, 2)), 1 / GEM_P)
        if name == "flat13":
            return f13.reshape(len(f13), -1).astype(np.float16)
        raise KeyError(name)

    def run(
        self, chunks: Iterator[list[Any]], total: int, desc: str, timings: Timings | None
    ) -> dict[str, dict[str, np.ndarray]]:
        """Prepare every chunk of image sources four ways, run the six network inputs, pool."""
        from tqdm.auto import tqdm

        from revsearch.images import prepare_image

        parts: dict[str, dict[str, list[np.ndarray]]] = {k: {f: [] for f in FEATURES[k]} for k in KINDS}
        bar = tqdm(total=total, desc=desc, unit="img")
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            for sources in chunks:
                prepared = {}
                for fit, (how, fill) in FITS.items():
                    t = time.perf_counter()
                    prepared[fit] = np.stack(
                        list(pool.map(lambda s: prepare_image(s, SIZE, fit=how, fill=fill), sources))  # noqa: B023
                    )
                    if timings:
                        timings.add(timings.prepare, fit, time.perf_counter() - t)
                for kind, (fit, how) in KINDS.items():
                    for start in range(0, len(sources), BATCH):
                        x = self.network_input(prepared[fit][start : start + BATCH], how)
                        t = time.perf_counter()
                        f13, f11 = self.model.predict_on_batch(x)
                        f13, f11 = np.asarray(f13), np.asarray(f11)
                        if timings:
                            timings.add(timings.forward, kind, time.perf_counter() - t)
                        for feat in FEATURES[kind]:
                            t = time.perf_counter()
                            parts[kind][feat].append(self.reduce(feat, f13, f11))
                            if timings:
                                timings.add(timings.reduce, f"{kind}.{feat}", time.perf_counter() - t)
                if timings:
                    timings.images += len(sources)
                bar.update(len(sources))
        bar.close()
        return {k: {f: np.concatenate(v) for f, v in fs.items()} for k, fs in parts.items()}


def collection_chunks(ds: Dataset) -> Iterator[list[Any]]:
    files = ds.files
    for start in range(0, len(files), CHUNK):
        yield files[start : start + CHUNK]


def copy_chunks(ds: Dataset, edit_time: list[float]) -> Iterator[list[Any]]:
    from revsearch.edits import make_edits
    from revsearch.images import load_image

    per = max(1, CHUNK // 10)
    rows = ds.nd_rows
    for start in range(0, len(rows), per):
        t = time.perf_counter()
        copies: list[Any] = []
        for r in rows[start : start + per]:
            copies.extend(make_edits(load_image(ds.root / ds.paths[int(r)])).values())
        edit_time[0] += time.perf_counter() - t
        yield copies


class Cache:
    def __init__(self, folder: Path, key: str) -> None:
        self.folder = folder / key
        self.folder.mkdir(parents=True, exist_ok=True)

    def load(self, name: str) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]] | None:
        d = self.folder / name
        meta_path = d / "meta.json"
        if not meta_path.is_file():
            return None
        meta = json.loads(meta_path.read_text())
        feats: dict[str, dict[str, np.ndarray]] = {}
        for kind, names in meta["features"].items():
            feats[kind] = {f: np.load(d / f"{kind}.{f}.npy", mmap_mode="r") for f in names}
        return feats, meta

    def save(self, name: str, feats: dict[str, dict[str, np.ndarray]], meta: dict[str, Any]) -> None:
        d = self.folder / name
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for kind, fs in feats.items():
            for f, arr in fs.items():
                np.save(tmp / f"{kind}.{f}.npy", arr)
        meta = {**meta, "features": {k: list(v) for k, v in feats.items()}}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(d, ignore_errors=True)
        os.replace(tmp, d)


def cache_key(datasets: Sequence[Dataset]) -> str:
    from revsearch.edits import EDITS

    h = hashlib.sha256()
    h.update(f"v{FEATURE_VERSION}|{sorted(EDITS)}|{FEATURES}|{KINDS}|{FITS}".encode())
    h.update((SHARED / "keras" / "models" / WEIGHTS_FILE).read_bytes()[:1 << 20])
    for ds in datasets:
        h.update(ds.name.encode())
        for p in ds.files:
            st = p.stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
        h.update(ds.nd_rows.tobytes())
    return h.hexdigest()[:16]


# ============================================================================ pipelines


def l2(x: np.ndarray) -> np.ndarray:
    from revsearch.embedding import l2_normalize

    return l2_normalize(np.asarray(x, dtype=np.float32))


@dataclass
class PcaWhitening:
    """PCA-whitening fitted on a collection: centre, project on the top ``dim`` axes, scale to unit variance."""

    mean: np.ndarray  # (d,)
    proj: np.ndarray  # (d, dim)

    @classmethod
    def fit(cls, x: np.ndarray, dim: int) -> PcaWhitening:
        x = np.asarray(x, np.float64)
        mu = x.mean(axis=0)
        xc = x - mu
        cov = xc.T @ xc / max(1, len(x) - 1)
        w, v = np.linalg.eigh(cov)
        order = np.argsort(w)[::-1]
        keep = order[: min(dim, len(x) - 1, x.shape[1])]
        return cls(mu.astype(np.float32), (v[:, keep] / np.sqrt(w[keep] + 1e-9 * w.max())).astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        return l2((np.asarray(x, np.float32) - self.mean) @ self.proj)


@dataclass
class Pipeline:
    key: str
    description: str
    build: Callable[[dict[str, dict[str, np.ndarray]]], np.ndarray]  # features -> vectors (n, d)
    kinds: tuple[str, ...]  # network inputs it needs (for the timing)
    feats: tuple[str, ...]  # "kind.feature" reductions it needs
    fit: Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]] | None = None  # fitted on the collection


def concat(*parts: np.ndarray) -> np.ndarray:
    return l2(np.concatenate([l2(p) for p in parts], axis=1))


def pipelines() -> list[Pipeline]:
    def pcaw(dim: int) -> Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]]:
        def fit(x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
            return PcaWhitening.fit(x, dim).apply

        return fit

    b = lambda f: l2(f["black"]["avg13"])  # noqa: E731
    return [
        Pipeline("a", "original notebook: raw BGR 0..255, no preprocess_input, flatten 7x7x1024",
                 lambda f: l2(f["raw"]["flat13"]), ("raw",), ("raw.flat13",)),
        Pipeline("a-avg", "original input, average-pooled (what import-legacy keeps)",
                 lambda f: l2(f["raw"]["avg13"]), ("raw",), ("raw.avg13",)),
        Pipeline("b", "first default: preprocess_input, pad black, average pool, L2", b, ("black",), ("black.avg13",)),
        Pipeline("flat", "preprocess_input, pad black, flatten 7x7x1024",
                 lambda f: l2(f["black"]["flat13"]), ("black",), ("black.flat13",)),
        Pipeline("pad-mean", "as (b), padded with the image's mean colour",
                 lambda f: l2(f["mean"]["avg13"]), ("mean",), ("mean.avg13",)),
        Pipeline("pad-edge", "as (b), padded by repeating the edge pixels",
                 lambda f: l2(f["edge"]["avg13"]), ("edge",), ("edge.avg13",)),
        Pipeline("crop", "as (b), centre square crop instead of padding",
                 lambda f: l2(f["crop"]["avg13"]), ("crop",), ("crop.avg13",)),
        Pipeline("max", "as (b), global max pooling", lambda f: l2(f["black"]["max13"]), ("black",), ("black.max13",)),
        Pipeline("gem", f"as (b), GeM pooling p={GEM_P:g}", lambda f: l2(f["black"]["gem13"]), ("black",), ("black.gem13",)),
        Pipeline("multi", "as (b), avg block 13 (1024) + avg block 11 (512), each L2, concatenated",
                 lambda f: concat(f["black"]["avg13"], f["black"]["avg11"]), ("black",), ("black.avg13", "black.avg11")),
        Pipeline("flip", "as (b), averaged with the mirrored image (2 forward passes)",
                 lambda f: l2(np.asarray(f["black"]["avg13"]) + np.asarray(f["flip"]["avg13"])),
                 ("black", "flip"), ("black.avg13", "flip.avg13")),
        Pipeline("pcaw-128", "(b) + PCA-whitening to 128-d, fitted on the indexed collection", b, ("black",),
                 ("black.avg13",), pcaw(128)),
        Pipeline("pcaw-256", "(b) + PCA-whitening to 256-d, fitted on the indexed collection", b, ("black",),
                 ("black.avg13",), pcaw(256)),
        Pipeline("gem+multi", "GeM p=3 on blocks 13 and 11, each L2, concatenated",
                 lambda f: concat(f["black"]["gem13"], f["black"]["gem11"]), ("black",), ("black.gem13", "black.gem11")),
        Pipeline("crop+gem", "centre crop and GeM pooling p=3 (the two single winners combined)",
                 lambda f: l2(f["crop"]["gem13"]), ("crop",), ("crop.gem13",)),
    ]


# ============================================================================ evaluation


def evaluate_pipeline(
    p: Pipeline, ds: Dataset, coll: dict[str, dict[str, np.ndarray]], copies: dict[str, dict[str, np.ndarray]]
) -> tuple[dict[str, float], Any, float]:
    from revsearch.evaluate import EDITS, near_duplicate_metrics, retrieval_metrics
    from revsearch.search import topk_cosine

    x = p.build(coll)
    q = p.build(copies)
    fit_s = 0.0
    if p.fit is not None:
        t = time.perf_counter()
        transform = p.fit(x)
        fit_s = time.perf_counter() - t
        x, q = transform(x), transform(q)
    rep = retrieval_metrics(x, ds.labels, k=ds.class_k)
    res = {"dim": int(x.shape[1]), "p": rep.precision_at_k, "map": rep.mean_average_precision, "r1": rep.recall_at_1}
    _, found = topk_cosine([x], q, K)
    orig = np.repeat(ds.nd_rows, len(EDITS))
    kinds = list(EDITS) * len(ds.nd_rows)
    nd = near_duplicate_metrics(found, orig, kinds, k=K, n_images=len(x))
    res["nd_r1"], res["nd_r9"] = nd.recall_at_1, nd.recall_at_k
    return res, nd, fit_s


def index_seconds(p: Pipeline, t: dict[str, Any], fit_s: float) -> float:
    fits = {KINDS[k][0] for k in p.kinds}
    s = sum(t["prepare"][f] for f in fits) + sum(t["forward"][k] for k in p.kinds)
    return s + sum(t["reduce"][r] for r in p.feats) + fit_s


# ============================================================================ bfloat16


def bfloat16_check(
    ds: Dataset, cache: Cache, refresh: bool, model: str = "mobilenet", weights: str | None = "imagenet",
    limit: int | None = None,
) -> dict[str, Any]:
    """Embed the prepared photos with the default Embedder in float32 and bfloat16 (interleaved batches)."""
    from tqdm.auto import tqdm

    from revsearch.embedding import Embedder

    e32 = Embedder(model, weights=weights, precision="float32")
    e16 = Embedder(model, weights=weights, precision="bfloat16")
    name = f"{ds.name}-bf16-{model}-{sha_short(e32.preprocessing.encode())}-{limit}"
    cached = None if refresh else cache.load(name)
    if cached is not None:
        feats, meta = cached
        return {"v32": np.asarray(feats["x"]["v32"]), "v16": np.asarray(feats["x"]["v16"]), **meta["timing"]}
    warm = np.zeros((BATCH, SIZE, SIZE, 3), np.float32)
    for _ in range(2):
        e32.embed_prepared(warm), e16.embed_prepared(warm)
    t32 = t16 = 0.0
    v32, v16 = [], []
    files = ds.files[:limit]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for i, start in enumerate(tqdm(range(0, len(files), BATCH), desc=f"{model} bfloat16 vs float32", unit="batch")):
            batch = np.stack(list(pool.map(e32.prepare, files[start : start + BATCH])))
            order = (e32, e16) if i % 2 == 0 else (e16, e32)  # alternate, so load changes hit both alike
            for e in order:
                t = time.perf_counter()
                v = e.embed_prepared(batch)
                dt = time.perf_counter() - t
                if e is e32:
                    t32 += dt
                    v32.append(v)
                else:
                    t16 += dt
                    v16.append(v)
    out = {"v32": np.concatenate(v32), "v16": np.concatenate(v16)}
    timing = {"t32": t32, "t16": t16, "dtype16": str(out["v16"].dtype), "preprocessing": e32.preprocessing}
    cache.save(name, {"x": out}, {"timing": timing})
    return {**out, **timing}


def embedder_timing(ds: Dataset, cache: Cache, refresh: bool, options: dict[str, Any]) -> dict[str, float]:
    """End-to-end Embedder cost (decode, crop/pad, resize, forward, pooling): the first default vs the current one.

    Batches alternate between the two, so a change in the machine's load hits both alike.
    """
    from tqdm.auto import tqdm

    from revsearch.embedding import Embedder

    old = Embedder("mobilenet", weights="imagenet", **options)
    new = Embedder("mobilenet", weights="imagenet")
    name = f"{ds.name}-timing-{sha_short((old.preprocessing + new.preprocessing).encode())}"
    cached = None if refresh else cache.load(name)
    if cached is not None:
        return cached[1]["timing"]
    warm = np.zeros((BATCH, SIZE, SIZE, 3), np.float32)
    old.embed_prepared(warm), new.embed_prepared(warm)
    spent = {"old": 0.0, "new": 0.0}
    files = ds.files
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for i, start in enumerate(tqdm(range(0, len(files), BATCH), desc="first vs current default", unit="batch")):
            pair = [("old", old), ("new", new)]
            for key, e in pair if i % 2 == 0 else pair[::-1]:
                t = time.perf_counter()
                e.embed_prepared(np.stack(list(pool.map(e.prepare, files[start : start + BATCH]))))
                spent[key] += time.perf_counter() - t
    timing = {"old_s": spent["old"], "new_s": spent["new"], "n": float(len(files))}
    cache.save(name, {}, {"timing": timing})
    return timing


def topk_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Mean share of the leave-one-out top-k that two embeddings of the same images agree on."""
    def top(x: np.ndarray) -> np.ndarray:
        s = x @ x.T
        np.fill_diagonal(s, -np.inf)
        return np.argsort(-s, axis=1, kind="stable")[:, :k]

    ta, tb = top(a), top(b)
    return float(np.mean([len(set(r) & set(s)) / k for r, s in zip(ta, tb)]))


# ============================================================================ main


def fmt(x: float, nd: int = 3) -> str:
    return f"{x:.{nd}f}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", type=Path, default=SHARED / "datasets")
    ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "revsearch-quality-cache")
    ap.add_argument("--refresh", action="store_true", help="recompute cached features")
    ap.add_argument("--nd-per-class", type=int, default=10, help="flower photos per class edited for near duplicates")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    offline_keras_home(SHARED / "keras" / "models", WEIGHTS_FILE)
    import logging

    logging.basicConfig(level=logging.ERROR)
    from revsearch.evaluate import EDITS, retrieval_metrics

    t_start = time.perf_counter()
    datasets = load_datasets(args.datasets, args.nd_per_class)
    cache = Cache(args.cache_dir, cache_key(datasets))
    extractor: Extractor | None = None
    feats: dict[str, Any] = {}
    for ds in datasets:
        for part in ("collection", "copies"):
            name = f"{ds.name}-{part}"
            got = None if args.refresh else cache.load(name)
            if got is None:
                extractor = extractor or Extractor()
                timings = Timings()
                edit_time = [0.0]
                if part == "collection":
                    f = extractor.run(collection_chunks(ds), len(ds.paths), name, timings)
                else:
                    f = extractor.run(copy_chunks(ds, edit_time), len(ds.nd_rows) * len(EDITS), name, timings)
                meta = {"timings": timings.__dict__, "edit_seconds": edit_time[0]}
                cache.save(name, f, meta)
                got = cache.load(name)
            assert got is not None
            feats[name] = got

    # ---------------------------------------------------------------- pipelines
    results: dict[str, dict[str, Any]] = {}
    nd_reports: dict[str, Any] = {}
    flowers, ukb = datasets
    t_flowers = feats["flowers-collection"][1]["timings"]
    PcaWhitening.fit(np.random.default_rng(0).standard_normal((1100, 1024)), 8)  # first LAPACK call: warm-up, untimed
    for p in pipelines():
        row: dict[str, Any] = {"description": p.description}
        for ds in datasets:
            res, nd, fit_s = evaluate_pipeline(p, ds, feats[f"{ds.name}-collection"][0], feats[f"{ds.name}-copies"][0])
            row[ds.name] = res
            nd_reports[(p.key, ds.name)] = nd
            if ds is flowers:
                row["index_s"] = index_seconds(p, t_flowers, fit_s)
        results[p.key] = row
    base_s = results["b"]["index_s"]
    from revsearch.embedding import Embedder

    lib_pre = Embedder("mobilenet", weights=None).preprocessing
    lib_key = next((k for k, o in LIBRARY_EQUIVALENT.items()
                    if Embedder("mobilenet", weights=None, **o).preprocessing == lib_pre), None)

    print()
    print(f"MobileNet 1.0/224, offline ImageNet weights ({WEIGHTS_FILE}); float32; "
          f"flowers = Oxford 17 Flowers ({len(flowers.paths)} photos, 17 classes), "
          f"ukbench = UKBench subset ({len(ukb.paths)} photos, 14 objects x 4).")
    print(f"Near duplicates: {len(EDITS)} edits x {len(flowers.nd_rows)} flower photos (searched among "
          f"{len(flowers.paths)}) and x {len(ukb.nd_rows)} UKBench photos (among {len(ukb.paths)}).")
    print(f"Index time: {len(flowers.paths)} flower photos, decode + prepare + forward + pooling (+ fit), "
          f"summed, on {os.cpu_count()} CPU cores.")
    print(f"The library's default now (Embedder('mobilenet'): {lib_pre}) is row {lib_key!r}.")
    print()
    head = ("| pipeline | dim | flowers P@9 | flowers mAP | flowers R@1 | ukbench N-S | ukbench mAP "
            "| near-dup R@1 flowers | near-dup R@9 flowers | near-dup R@1 ukbench | index s (x b) |")
    print(head)
    print("|" + "|".join(["---"] * (head.count("|") - 1)) + "|")
    for key, r in results.items():
        f, u = r["flowers"], r["ukbench"]
        ns = 1 + 3 * u["p"]
        mark = " **(library default)**" if key == lib_key else ""
        print(
            f"| {key}: {r['description']}{mark} | {f['dim']} | {fmt(f['p'])} | {fmt(f['map'])} | {fmt(f['r1'])} | "
            f"{fmt(ns, 2)} | {fmt(u['map'])} | {fmt(f['nd_r1'])} | {fmt(f['nd_r9'])} | {fmt(u['nd_r1'])} | "
            f"{r['index_s']:.1f} ({r['index_s'] / base_s:.2f}x) |"
        )

    # ---------------------------------------------------------------- decision
    b = results["b"]["flowers"]
    eligible = {
        k: r for k, r in results.items()
        if k not in ("a", "a-avg", "b") and r["index_s"] <= 1.5 * base_s
    }
    best_key = max(eligible, key=lambda k: eligible[k]["flowers"]["p"])
    best = results[best_key]["flowers"]
    gain = best["p"] - b["p"]
    print()
    print(f"Best variant within 1.5x the default's indexing time: {best_key} "
          f"(P@9 {best['p']:.4f} vs default {b['p']:.4f}, {gain:+.4f}; "
          f"{results[best_key]['index_s'] / base_s:.2f}x time).")
    print(f"Flowers alone (this study's earlier rule) would pick {best_key if gain >= 0.01 else 'b'}; the library "
          f"default is {lib_key!r}, chosen over every dataset by benchmarks/quality.py (see README, Quality).")
    a = results["a"]["flowers"]
    d = results[lib_key or "b"]
    print(f"Library default ({lib_key}) vs original (a): P@9 {d['flowers']['p']:.4f} vs {a['p']:.4f}; near-dup R@1 "
          f"{d['flowers']['nd_r1']:.4f} vs {a['nd_r1']:.4f} (flowers), {d['ukbench']['nd_r1']:.4f} vs "
          f"{results['a']['ukbench']['nd_r1']:.4f} (ukbench): "
          + ("beats it on both" if d["flowers"]["p"] > a["p"] and d["flowers"]["nd_r1"] > a["nd_r1"]
             and d["ukbench"]["nd_r1"] > results["a"]["ukbench"]["nd_r1"] else "DOES NOT beat it on both"))

    if lib_key is not None and lib_key != "b":
        tm = embedder_timing(flowers, cache, args.refresh, LIBRARY_EQUIVALENT["b"])
        print(f"Measured end to end with revsearch.Embedder (decode, {LIBRARY_EQUIVALENT[lib_key]['fit']}/pad, forward, "
              f"pooling; interleaved batches, {int(tm['n'])} photos): first default (b) {tm['n'] / tm['old_s']:.1f} img/s, "
              f"current default ({lib_key}) {tm['n'] / tm['new_s']:.1f} img/s: x{tm['new_s'] / tm['old_s']:.2f} the time.")

    print()
    shown = list(dict.fromkeys(["a", "b", best_key] + ([lib_key] if lib_key else [])))
    print("Near-duplicate recall@1 / recall@9 per edit, flowers (" + ", ".join(shown) + "):")
    print("| edit | " + " | ".join(f"{s} R@1 | {s} R@9" for s in shown) + " |")
    print("|" + "|".join(["---"] * (1 + 2 * len(shown))) + "|")
    for e in EDITS:
        cells = []
        for s in shown:
            es = nd_reports[(s, "flowers")].per_edit[e]
            cells += [fmt(es.recall_at_1), fmt(es.recall_at_k)]
        print(f"| {e} | " + " | ".join(cells) + " |")

    # ---------------------------------------------------------------- bfloat16
    bf = bfloat16_check(flowers, cache, args.refresh)
    v32, v16 = bf["v32"], bf["v16"]
    r32 = retrieval_metrics(v32, flowers.labels, k=K)
    r16 = retrieval_metrics(v16, flowers.labels, k=K)
    overlap = topk_overlap(v32, v16, K)
    norms = np.linalg.norm(v16, axis=1)
    kind, feat = LIBRARY_FEATURES.get(lib_key or "b", ("black", "avg13"))
    same_as_row = float(np.max(np.abs(1 - np.sum(v32 * l2(feats["flowers-collection"][0][kind][feat]), axis=1))))
    n = len(flowers.paths)
    speedup = bf["t32"] / bf["t16"]
    print()
    print(f"bfloat16 (revsearch.Embedder('mobilenet', precision='bfloat16'), default options) vs float32, {n} flower "
          "photos, same prepared batches, forward pass only, interleaved:")
    print("| precision | img/s | P@9 | mAP | R@1 | top-9 overlap with float32 |")
    print("|---|---|---|---|---|---|")
    print(f"| float32 | {n / bf['t32']:.0f} | {fmt(r32.precision_at_k, 4)} | {fmt(r32.mean_average_precision, 4)} | "
          f"{fmt(r32.recall_at_1, 4)} | 1 |")
    print(f"| bfloat16 | {n / bf['t16']:.0f} | {fmt(r16.precision_at_k, 4)} | {fmt(r16.mean_average_precision, 4)} | "
          f"{fmt(r16.recall_at_1, 4)} | {overlap:.3f} |")
    print(f"bfloat16 speed-up x{speedup:.2f}; output dtype {bf['dtype16']}, norms {norms.min():.6f}..{norms.max():.6f}; "
          f"float32 Embedder vs this benchmark's row {lib_key!r}: max 1-cos {same_as_row:.1e}.")
    rn = bfloat16_check(flowers, cache, args.refresh, model="resnet50", weights=None, limit=4 * BATCH)
    print(f"Speed only, ResNet50 (random weights: same cost as ImageNet's), {4 * BATCH} photos: float32 "
          f"{4 * BATCH / rn['t32']:.1f} img/s, bfloat16 {4 * BATCH / rn['t16']:.1f} img/s (x{rn['t32'] / rn['t16']:.2f}).")
    ok = overlap >= 0.95 and abs(r16.precision_at_k - r32.precision_at_k) <= 0.005
    print("bfloat16 as default: " + ("criteria met (overlap >= 0.95, P@9 within 0.005)" if ok else
                                     "no (needs top-9 overlap >= 0.95 and P@9 within 0.005); float32 stays the default"))
    print(f"\nbenchmark wall time {time.perf_counter() - t_start:.0f} s (features cached in {cache.folder})")

    if args.json:
        out = {
            "pipelines": results,
            "near_duplicates": {f"{k}/{d}": r.to_dict() for (k, d), r in nd_reports.items()},
            "bfloat16": {"t32": bf["t32"], "t16": bf["t16"], "speedup": speedup, "overlap": overlap,
                         "p9_32": r32.precision_at_k, "p9_16": r16.precision_at_k,
                         "resnet50_speedup": rn["t32"] / rn["t16"]},
            "decision": {"best": best_key, "gain": gain, "library_default": lib_key},
        }
        args.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
