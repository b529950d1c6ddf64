"""Duplicate detection: mode copies end to end and its cost, mode similar's threshold, pHash/dHash, scale.

Four parts (run from the repository root):

``python benchmarks/duplicates.py copies --flowers 300 --originals 40``
    Mode copies end to end on real photos (flowers, UKBench, the demo photos), every edit of
    :data:`revsearch.media.edits.COPY_EDITS` of some originals, and hard negatives (UKBench's other views,
    :func:`revsearch.media.edits.burst_neighbours` frames): the library indexes the folder (MobileNet, real
    weights) and :func:`revsearch.duplicates.find_duplicates` groups it. Pair precision/recall, recall
    per edit, false positives per kind of negative, against mode similar, plain cosine and pHash/dHash;
    the cosine floor keeping 99.5% of the copy pairs (the shortlist's calibration).
``python benchmarks/duplicates.py copies-cost --n 100000``
    The verifier's cost per image and per pair on real thumbnails, the two shortlists timed on n
    synthetic images, and the total extrapolated to n images.

``python benchmarks/duplicates.py calibrate``  (``REVSEARCH_SHARED=/path/to/shared`` if the
data is not in ``../shared``)
    Real photos (``../shared/datasets/oxford17_flowers`` and ``ukbench_subset``). Each chosen
    original gets 3 edited copies (3 different edits drawn from JPEG q30, half size, 80% crop,
    10-degree rotation, brightness x1.4, caption, white border, letterbox bars; every copy saved
    as a JPEG file would be), put among all the photos of its set, which are unrelated photos
    (UKBench's other views of the same object are hard negatives). A pair of images is a true
    duplicate pair if both come from the same original (the flowers' 68 listed near-identical
    pairs count as duplicates too). Every pair of the collection is scored with the model's cosine
    (Keras MobileNet, real ImageNet weights, the library's default pipeline) and with 64-bit
    pHash and dHash (``imagehash``) Hamming distances.

    The threshold rule: on each calibration set, the lowest threshold (0.005 grid) from which up
    pair precision stays >= 0.99; the default is the highest of those over the sets. It is then
    measured on a held-out set (other flower originals, other edits) and end to end with
    :func:`revsearch.duplicates.find_duplicates` (pairs within the groups it returns). Vectors
    are cached in ``/tmp/revsearch-dup-cache`` (``--refresh`` recomputes); a changed pipeline
    gets a new cache key, so rerunning after a pipeline change recalibrates.

``python benchmarks/duplicates.py scale --sizes 100000 300000``
    Time and peak memory of :func:`revsearch.duplicates.duplicate_edges` +
    ``connected_components`` (what ``find_duplicates`` runs) on synthetic 2048-d clustered unit
    vectors, memory-mapped from a file in ``--tmp``, with planted groups of an original and 3
    noisy copies; recall of the planted pairs and precision of the pairs found. Peak memory is
    the process's anonymous memory high-water mark minus the start (the memory-mapped vectors
    are file pages, not counted).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import offline_keras_home  # noqa: E402
from common import (  # noqa: E402
    SHARED,
    command_line,
    emit,
    machine_lines,
    proc_kib,
    synthetic_spec,
    table,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
WEIGHTS_FILE = "mobilenet_1_0_224_tf_no_top.h5"
CACHE_VERSION = 1
EDIT_NAMES = ("jpeg_q30", "resize_50", "crop_80", "rotate_10", "brightness", "text", "border", "letterbox")
COPIES_PER_ORIGINAL = 3
GRID = np.round(np.arange(0.700, 0.9951, 0.005), 3)
HASH_GRID = np.arange(0, 25)
TARGET_PRECISION = 0.99


# ============================================================================ calibration data


def _border(img: Any) -> Any:
    from PIL import ImageOps

    w, h = img.size
    return ImageOps.expand(img, border=max(4, round(0.06 * max(w, h))), fill=(255, 255, 255))


def make_copy(img: Any, edit: str) -> Any:
    """The edited copy, as the file a user would have (re-saved as JPEG q90 unless it is the q30 edit)."""
    from revsearch.media.edits import jpeg_roundtrip, make_edits

    out = _border(img) if edit == "border" else make_edits(img, [edit])[edit]
    return out if edit == "jpeg_q30" else jpeg_roundtrip(out, 90)


class Collection:
    """Images of one benchmark set: photos of the dataset plus edited copies of some of them."""

    def __init__(self, name: str, folder: Path, rel: list[str], originals: list[int], seed: int,
                 near_identical: list[tuple[int, int]]) -> None:
        self.name, self.folder, self.rel, self.originals, self.seed = name, folder, rel, originals, seed
        rng = np.random.default_rng(seed)
        self.copies: list[tuple[int, str]] = []  # (photo row, edit)
        for r in originals:
            for e in rng.choice(len(EDIT_NAMES), size=COPIES_PER_ORIGINAL, replace=False):
                self.copies.append((r, EDIT_NAMES[int(e)]))
        n = len(rel)
        # group id of each image (photos 0..n-1, copies n..): union of original+copies and listed pairs
        parent = list(range(n + len(self.copies)))

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for j, (r, _) in enumerate(self.copies):
            parent[find(n + j)] = find(r)
        for a, b in near_identical:
            parent[find(a)] = find(b)
        self.group = np.array([find(i) for i in range(len(parent))])
        self.edit = np.array([""] * n + [e for _, e in self.copies], dtype=object)

    def __len__(self) -> int:
        return len(self.rel) + len(self.copies)


def load_sets(seed: int, flowers_originals: int) -> dict[str, Collection]:
    from revsearch.media.images import find_images

    base = Path(os.environ.get("REVSEARCH_SHARED", SHARED)) / "datasets"
    out = {}
    flowers = base / "oxford17_flowers"
    rel = [p.relative_to(flowers).as_posix() for p in find_images(flowers)]
    where = {r: i for i, r in enumerate(rel)}
    pairs = []
    tsv = flowers / "near_identical_pairs.tsv"
    for line in tsv.read_text().splitlines() if tsv.is_file() else []:
        if line and not line.startswith("#"):
            a, b, *_ = line.split("\t")
            pairs.append((where[a], where[b]))
    labels = Path(__file__).resolve().parent / "data" / "flowers_visual_labels.tsv"
    for line in labels.read_text().splitlines():
        if line and not line.startswith("#"):
            a, b, _, label = line.split("\t")
            if label == "duplicate":
                pairs.append((where[a], where[b]))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(rel))
    calib, held = sorted(perm[:flowers_originals].tolist()), sorted(perm[flowers_originals : 2 * flowers_originals].tolist())
    out["flowers"] = Collection("flowers", flowers, rel, calib, seed + 1, pairs)
    out["flowers-heldout"] = Collection("flowers-heldout", flowers, rel, held, seed + 2, pairs)
    ukb = base / "ukbench_subset"
    rel_u = [p.relative_to(ukb).as_posix() for p in find_images(ukb)]
    out["ukbench"] = Collection("ukbench", ukb, rel_u, list(range(len(rel_u))), seed + 3, [])
    return out


def features(sets: dict[str, Collection], cache: Path, refresh: bool) -> dict[str, dict[str, np.ndarray]]:
    """Per set: MobileNet vectors (n, 1024), pHash and dHash (n,) uint64 of every image."""
    import imagehash

    from revsearch.models.embedding import Embedder
    from revsearch.media.images import load_image

    emb = Embedder("mobilenet")
    pipe = hashlib.sha256(json.dumps(emb.spec, sort_keys=True).encode()).hexdigest()[:10]
    key = f"v{CACHE_VERSION}-{emb.spec['model']}-{pipe}-{imagehash.__version__}"
    cache.mkdir(parents=True, exist_ok=True)

    def h64(h: Any) -> int:
        return int(str(h), 16)

    out = {}
    photo_cache: dict[str, dict[str, np.ndarray]] = {}
    for name, col in sets.items():
        f = cache / f"{name}-{key}-s{col.seed}-o{len(col.originals)}.npz"
        if f.is_file() and not refresh:
            out[name] = dict(np.load(f))
            continue
        t0 = time.perf_counter()
        pc_key = str(col.folder)
        if pc_key not in photo_cache:  # the dataset's own photos: once per folder
            vec, ph, dh = [], [], []
            for s in range(0, len(col.rel), 32):
                imgs = [load_image(col.folder / r) for r in col.rel[s : s + 32]]
                vec.append(emb.embed(imgs))
                ph += [h64(imagehash.phash(i)) for i in imgs]
                dh += [h64(imagehash.dhash(i)) for i in imgs]
            photo_cache[pc_key] = {"vectors": np.concatenate(vec), "phash": np.array(ph, np.uint64),
                                   "dhash": np.array(dh, np.uint64)}
        base = photo_cache[pc_key]
        vec, ph, dh = [], [], []
        for s in range(0, len(col.copies), 32):
            imgs = [make_copy(load_image(col.folder / col.rel[r]), e) for r, e in col.copies[s : s + 32]]
            vec.append(emb.embed(imgs))
            ph += [h64(imagehash.phash(i)) for i in imgs]
            dh += [h64(imagehash.dhash(i)) for i in imgs]
        out[name] = {
            "vectors": np.concatenate([base["vectors"], *vec]),
            "phash": np.concatenate([base["phash"], np.array(ph, np.uint64)]),
            "dhash": np.concatenate([base["dhash"], np.array(dh, np.uint64)]),
        }
        np.savez(f, **out[name])
        print(f"{name}: {len(col)} images embedded and hashed in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    out["_pipeline"] = {"spec": emb.spec}  # type: ignore[assignment]
    return out


# ============================================================================ metrics


def _popcount64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    c = np.zeros(x.shape, np.uint8)
    for shift in range(0, 64, 8):
        c += _POP8[((x >> np.uint64(shift)) & np.uint64(255)).astype(np.uint8)]
    return c


_POP8 = np.array([bin(i).count("1") for i in range(256)], np.uint8)


def pair_arrays(col: Collection, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Upper-triangle pair values: cosine, pHash and dHash distances, truth, and the edit of a copy pair."""
    n = len(col)
    iu = np.triu_indices(n, 1)
    v = feats["vectors"]
    cos = (v @ v.T)[iu]
    ph, dh = feats["phash"], feats["dhash"]
    pd = _popcount64(ph[:, None] ^ ph[None, :])[iu]
    dd = _popcount64(dh[:, None] ^ dh[None, :])[iu]
    truth = col.group[iu[0]] == col.group[iu[1]]
    planted = truth & (iu[1] >= len(col.rel))  # pairs with an edited copy in them (i < j)
    return {"cos": cos, "phash": pd, "dhash": dd, "truth": truth, "planted": planted, "i": iu[0], "j": iu[1]}


def pr(pred: np.ndarray, P: dict[str, np.ndarray]) -> tuple[float, float, int, int]:
    """Precision over every predicted pair (true: same original, or a listed/eye-labelled dataset
    duplicate); recall over the planted pairs only (pairs with an edited copy)."""
    truth = P["truth"]
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    found = int(np.count_nonzero(pred & P["planted"]))
    pos = int(np.count_nonzero(P["planted"]))
    return (tp / (tp + fp) if tp + fp else 1.0), (found / pos if pos else 1.0), tp, fp


def lowest_safe_threshold(P: dict[str, np.ndarray]) -> float:
    """Lowest grid threshold from which up pair precision stays >= TARGET_PRECISION."""
    ok = [pr(P["cos"] >= t, P)[0] >= TARGET_PRECISION for t in GRID]
    best = float(GRID[-1])
    for t, good in zip(GRID[::-1], ok[::-1]):
        if not good:
            break
        best = float(t)
    return best


def best_hash_threshold(P: dict[str, np.ndarray], kind: str) -> int:
    """Highest Hamming threshold up to which precision stays >= TARGET_PRECISION."""
    best = -1
    for h in HASH_GRID:
        if pr(P[kind] <= h, P)[0] < TARGET_PRECISION:
            break
        best = int(h)
    return best


def group_pairs_pr(
    col: Collection, feats: dict[str, np.ndarray], P: dict[str, np.ndarray], threshold: float, tmp: Path
) -> tuple[float, float, int]:
    """Pair precision/recall of find_duplicates' groups (every pair inside a returned group)."""
    from revsearch.duplicates import find_duplicates
    from revsearch import Index

    folder = tmp / f"idx-{col.name}"
    shutil.rmtree(folder, ignore_errors=True)
    paths = [f"img{i:06d}.jpg" for i in range(len(col))]
    index = Index.from_vectors(folder, feats["vectors"], paths, synthetic_spec(feats["vectors"].shape[1]))
    rep = find_duplicates(index, threshold)
    label = np.arange(len(col))
    for g in rep.groups:
        rows = [f.row for f in g.files]
        label[rows] = min(rows)
    pred = label[P["i"]] == label[P["j"]]
    p, r, _, _ = pr(pred, P)
    shutil.rmtree(folder, ignore_errors=True)
    return p, r, len(rep.groups)


def calibrate(args: argparse.Namespace) -> str:
    offline_keras_home(Path(os.environ.get("REVSEARCH_SHARED", SHARED)) / "keras" / "models", WEIGHTS_FILE)
    t_start = time.perf_counter()
    sets = load_sets(args.seed, args.originals)
    feats = features(sets, Path(args.cache_dir), args.refresh)
    spec = feats.pop("_pipeline")["spec"]  # type: ignore[index]
    calib_sets = ["flowers", "ukbench"]
    pairs = {name: pair_arrays(sets[name], feats[name]) for name in sets}
    per_set_t = {name: lowest_safe_threshold(pairs[name]) for name in calib_sets}
    chosen = max(per_set_t.values())
    hash_best = {h: min(best_hash_threshold(pairs[n], h) for n in calib_sets) for h in ("phash", "dhash")}
    lines = machine_lines({"model": f"{spec['model']} ({spec['weights']}), preprocessing {spec['preprocessing']}"})
    lines.append(f"command: {command_line()}")
    lines.append("")
    lines.append(
        f"Threshold rule: per calibration set, the lowest cosine threshold (grid step 0.005) from which up pair "
        f"precision stays >= {TARGET_PRECISION}: " + ", ".join(f"{k} {v:.3f}" for k, v in per_set_t.items())
        + f"; default = the highest: **{chosen:.3f}**"
    )
    lines.append("")
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="revsearch-dupbench-"))
    for name, col in sets.items():
        P = pairs[name]
        npos = int(P["planted"].sum())
        desc = f"{name} ({len(col.rel)} photos + {len(col.copies)} copies of {len(col.originals)}; {npos} planted pairs)"
        p, r, _, fp = pr(P["cos"] >= chosen, P)
        gp, gr, ng = group_pairs_pr(col, feats[name], P, chosen, tmp)
        rows.append([desc, f"cosine >= {chosen:.3f}", f"{p:.4f}", f"{r:.4f}", fp, f"{gp:.4f} / {gr:.4f} ({ng} groups)"])
        t_own = lowest_safe_threshold(P)
        p2, r2, _, fp2 = pr(P["cos"] >= t_own, P)
        rows.append(["", f"cosine >= {t_own:.3f} (this set's own)", f"{p2:.4f}", f"{r2:.4f}", fp2, ""])
        for h in ("phash", "dhash"):
            for ht in sorted({10, hash_best[h]}):
                if ht < 0:
                    continue
                p, r, _, fp = pr(P[h] <= ht, P)
                label = f"{h} Hamming <= {ht}" + (" (usual)" if ht == 10 else " (best with precision >= 0.99 on the calibration sets)")
                rows.append(["", label, f"{p:.4f}", f"{r:.4f}", fp, ""])
    lines.append(table(["set", "method", "pair precision", "pair recall", "false pairs", "find_duplicates groups: precision / recall"], rows))
    lines.append("")
    lines.append("Cosine thresholds (pair precision / recall of planted pairs; then the same for the pairs inside find_duplicates' groups):")
    crows = []
    for t in (0.85, 0.87, 0.89, 0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96):
        row: list[Any] = [f"{t:.2f}"]
        for name in sets:
            P = pairs[name]
            p, r, _, _ = pr(P["cos"] >= t, P)
            gp, gr, _ = group_pairs_pr(sets[name], feats[name], P, t, tmp)
            row.append(f"{p:.3f} / {r:.3f}; {gp:.3f} / {gr:.3f}")
        crows.append(row)
    lines.append(table(["threshold", *sets], crows))
    shutil.rmtree(tmp, ignore_errors=True)
    # per edit: recall of original-copy pairs
    lines.append("")
    lines.append("Recall of (original, copy) pairs per edit, all sets together:")
    erows = []
    for e in EDIT_NAMES:
        hits = {"cos": 0, "phash": 0, "dhash": 0}
        total = 0
        for name, col in sets.items():
            P = pairs[name]
            n = len(col.rel)
            for j, (r0, ed) in enumerate(col.copies):
                if ed != e:
                    continue
                total += 1
                v = feats[name]["vectors"]
                hits["cos"] += int(float(v[r0] @ v[n + j]) >= chosen)
                for h in ("phash", "dhash"):
                    d = int(_popcount64(np.array([feats[name][h][r0] ^ feats[name][h][n + j]]))[0])
                    hits[h] += int(d <= 10)
        erows.append([e, total, f"{hits['cos'] / total:.3f}", f"{hits['phash'] / total:.3f}", f"{hits['dhash'] / total:.3f}"])
    lines.append(table(["edit", "copies", f"cosine >= {chosen:.3f}", "pHash <= 10", "dHash <= 10"], erows))
    lines.append("")
    lines.append("Entry for revsearch/duplicates.py CALIBRATIONS:")
    lines.append(json.dumps({"model": spec["model"], "threshold": chosen, "preprocessing": spec["preprocessing"]}))
    text = "\n".join(lines)
    emit(text, t_start, args.markdown)
    return text


# ============================================================================ scale


def make_synthetic(path: Path, n: int, dim: int, groups: int, seed: int, noise: float) -> np.ndarray:
    """Write n clustered unit vectors to a .npy file; plant ``groups`` groups of an original and 3
    noisy copies (rows of each group returned, shape (groups, 4))."""
    rng = np.random.default_rng(seed)
    n_clusters = 4096
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    chunk = 32768
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        c = centres[rng.integers(0, n_clusters, m)]
        x = c + rng.standard_normal((m, dim)).astype(np.float32) * np.float32(1.2 / np.sqrt(dim))
        arr[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    planted = rng.choice(n, size=(groups, 4), replace=False)
    for g in planted:
        o = np.asarray(arr[g[0]])
        for r in g[1:]:
            x = o + rng.standard_normal(dim).astype(np.float32) * np.float32(noise / np.sqrt(dim))
            arr[r] = x / np.linalg.norm(x)
    arr.flush()
    del arr
    return planted


class AnonPeak:
    """Samples the process's anonymous memory (RssAnon: not the memory-mapped file) every 20 ms."""

    def __init__(self) -> None:
        self.peak = proc_kib("RssAnon") or 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, proc_kib("RssAnon") or 0)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return max(self.peak, proc_kib("RssAnon") or 0)


def scale(args: argparse.Namespace) -> str:
    from revsearch.duplicates import connected_components, duplicate_edges

    t_start = time.perf_counter()
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    lines = machine_lines()
    lines.append(f"command: {command_line()}")
    rows = []
    for n in args.sizes:
        path = tmp / f"dup-synthetic-{n}-{args.dim}.npy"
        groups = max(10, n // 100)
        t0 = time.perf_counter()
        planted = make_synthetic(path, n, args.dim, groups, args.seed, args.noise)
        t_make = time.perf_counter() - t0
        x = np.load(path, mmap_mode="r")
        sample = np.asarray(x[planted[:200]])
        within = np.concatenate([(g @ g.T)[np.triu_indices(4, 1)] for g in sample])
        rss0 = proc_kib("RssAnon") or 0
        with contextlib.suppress(OSError):  # reset the RSS high-water mark (Linux)
            Path("/proc/self/clear_refs").write_text("5")
        sampler = AnonPeak()
        info: dict[str, Any] = {}
        t0 = time.perf_counter()
        src, dst, sc = duplicate_edges(x, args.threshold, k=16, method=args.method, progress=False, info=info)
        labels = connected_components(n, src, dst)
        secs = time.perf_counter() - t0
        anon_peak = sampler.stop()
        peak = proc_kib("VmHWM") or 0
        # planted pairs found (same component) and pairs found that were not planted
        found = sum(int(labels[g[a]] == labels[g[b]]) for g in planted for a in range(4) for b in range(a + 1, 4))
        total = len(planted) * 6
        planted_set = {frozenset((int(a), int(b))) for g in planted for a in g for b in g if a != b}
        und = {frozenset((int(a), int(b))) for a, b in zip(src.tolist(), dst.tolist())}
        false_edges = sum(1 for e in und if e not in planted_set)
        rows.append([
            f"{n:,}", info.get("method"), f"{secs:.0f} s",
            f"{(anon_peak - rss0) / 2**20:.0f} MiB (peak RSS incl. mapped vector pages {peak / 2**20:.0f} MiB)",
            f"{found / total:.4f} ({found}/{total})", false_edges,
            f"nlist {info.get('nlist')}, nprobe {info.get('nprobe')}, {info.get('pairs_scored', 0) / max(1, n * n / 2):.4f} of all pairs scored"
            if info.get("method") == "approximate" else "every pair scored",
        ])
        lines.append(
            f"n={n:,}: made in {t_make:.0f} s; planted pair cosines {within.min():.3f}..{within.max():.3f} "
            f"(median {np.median(within):.3f}); info {info}"
        )
        del x
        if not args.keep_files:
            path.unlink()
    lines.append("")
    lines.append(
        f"synthetic {args.dim}-d unit vectors around 4,096 random centres (unrelated same-centre cosine about 0.4), "
        f"n/100 planted groups of an original + 3 copies (noise {args.noise}), threshold {args.threshold}, k=16"
    )
    lines.append(table(["vectors", "method", "time", "memory above start", "planted pairs found", "other edges", "work"], rows))
    text = "\n".join(lines)
    emit(text, t_start, args.markdown)
    return text


# ============================================================================ mode copies


def _copies_sets(seed: int, flowers: int, originals: int) -> list[tuple[str, Any, str, int]]:
    """(file name, image, kind, group) of the copies benchmark: photos, their edited copies, burst frames.

    kind: "photo", an edit name, or "burst". group: the original's number (copies share it; each
    burst frame gets its own, as do unrelated photos); UKBench views carry their object in the name.
    """
    from PIL import Image
    import skimage.data as sd

    from revsearch.media.edits import COPY_EDITS, burst_neighbours, jpeg_roundtrip

    rng = np.random.default_rng(seed)
    root = Path(os.environ.get("REVSEARCH_SHARED", SHARED)) / "datasets"
    fl = sorted((root / "oxford17_flowers").glob("*/*.jpg"))
    uk = sorted((root / "ukbench_subset").glob("*/*.jpg"))
    chosen = [fl[i] for i in sorted(rng.choice(len(fl), size=min(flowers, len(fl)), replace=False))]
    listed = []
    tsv = root / "oxford17_flowers" / "near_identical_pairs.tsv"
    for line in tsv.read_text().splitlines():
        if line and not line.startswith("#"):
            a, b, _ = line.split("\t")
            listed += [root / "oxford17_flowers" / a, root / "oxford17_flowers" / b]
    photos = sorted(set(chosen) | set(listed)) + uk
    items: list[tuple[str, Any, str, int]] = []
    for g, p in enumerate(photos):
        tag = f"uk-{p.parent.name}" if "ukbench" in str(p) else f"fl-{p.parent.name}"
        items.append((f"{tag}-{p.stem}.jpg", p, "photo", g))
    demo = [Image.fromarray(getattr(sd, n)()).convert("RGB") for n in ("astronaut", "coffee", "chelsea", "rocket")]
    g0 = len(items)
    origin_rows = list(rng.choice([i for i, it in enumerate(items) if "fl-" in it[0]], size=originals, replace=False))
    origin_rows += [i for i, it in enumerate(items) if it[0].startswith("uk-")][::4]
    sources = [(items[r][1], items[r][3], items[r][0][:-4]) for r in origin_rows]
    for j, img in enumerate(demo):
        items.append((f"demo-{j}.jpg", img, "photo", g0 + j))
        sources.append((img, g0 + j, f"demo-{j}"))
    g = g0 + len(demo)
    for src, group, stem in sources:
        img = src if not isinstance(src, Path) else Image.open(src).convert("RGB")
        for e, fn in COPY_EDITS.items():
            out = fn(img)
            items.append((f"{stem}~{e}.jpg", out if e in ("jpeg_q30", "tiny_jpeg") else jpeg_roundtrip(out, 90), e, group))
        f1, f2 = burst_neighbours(img, seed=int(rng.integers(1 << 30)))
        items.append((f"{stem}~burst1.jpg", f1, "burst", g))
        items.append((f"{stem}~burst2.jpg", f2, "burst", g + 1))
        g += 2
    return items


def copies(args: argparse.Namespace) -> str:
    """Mode copies end to end (index, shortlist, verifier) against cosine and pHash/dHash."""
    import imagehash
    from PIL import Image

    from revsearch.duplicates import find_duplicates
    from revsearch.models.embedding import get_embedder
    from revsearch.storage.indexing import update_folder

    offline_keras_home(Path(os.environ.get("REVSEARCH_SHARED", SHARED)) / "keras" / "models", WEIGHTS_FILE)
    t_start = time.perf_counter()
    work = Path(args.tmp)
    shutil.rmtree(work, ignore_errors=True)
    ds = work / "photos"
    ds.mkdir(parents=True)
    items = _copies_sets(args.seed, args.flowers, args.originals)
    names, kinds, groups = [], [], []
    for name, src, kind, group in items:
        if isinstance(src, Path):
            shutil.copyfile(src, ds / name)
        else:
            src.save(ds / name, quality=95)
        names.append(name)
        kinds.append(kind)
        groups.append(group)
    emb = get_embedder("mobilenet")
    t0 = time.perf_counter()
    index, _ = update_folder(ds, work / "vectors", emb, progress=False)
    t_index = time.perf_counter() - t0
    row = {p: i for i, p in enumerate(index.paths)}
    order = np.array([row[n] for n in names])
    kinds_a, groups_a = np.array(kinds, dtype=object), np.array(groups)
    stems = [n.split("~")[0].removesuffix(".jpg") for n in names]
    ukobj = np.array([n.split("-")[1] if n.startswith("uk-") else "" for n in stems], dtype=object)
    n = len(names)
    # the truth: same group = a copy pair (the flowers' listed near-identical pairs are one photo stored twice: copies)
    listed = {}
    tsv = Path(os.environ.get("REVSEARCH_SHARED", SHARED)) / "datasets" / "oxford17_flowers" / "near_identical_pairs.tsv"
    for line in tsv.read_text().splitlines():
        if line and not line.startswith("#"):
            a, b, _ = line.split("\t")
            listed[f"fl-{a.split('/')[0]}-{Path(a).stem}"] = f"fl-{b.split('/')[0]}-{Path(b).stem}"
    parent = list(range(int(groups_a.max()) + 1))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    # ... and so are the crops/zooms of one photograph the dataset holds twice, labelled by eye (as in `calibrate`)
    labels = Path(__file__).resolve().parent / "data" / "flowers_visual_labels.tsv"
    for line in labels.read_text().splitlines():
        if line and not line.startswith("#"):
            a, b, _, label = line.split("\t")
            if label == "duplicate":
                listed[f"fl-{a.split('/')[0]}-{Path(a).stem}"] = f"fl-{b.split('/')[0]}-{Path(b).stem}"
    stem_group = {stems[i]: groups[i] for i in range(n) if kinds[i] == "photo"}
    for a, b in listed.items():
        if a in stem_group and b in stem_group:
            parent[find(stem_group[a])] = find(stem_group[b])
    true_group = np.array([find(int(x)) for x in groups_a])
    iu, ju = np.triu_indices(n, 1)
    same = true_group[iu] == true_group[ju]
    # the edit of a true pair: the copy's edit (photo-photo pairs: "identical file")
    def pair_kind(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        ki, kj = kinds_a[i], kinds_a[j]
        out = np.where(ki == "photo", kj, ki)
        both = (ki != "photo") & (kj != "photo")
        out = np.where(both, "copy-copy", out)
        return np.where((ki == "photo") & (kj == "photo"), "stored twice", out)

    def neg_kind(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        out = np.full(len(i), "unrelated", dtype=object)
        out[(ukobj[i] != "") & (ukobj[i] == ukobj[j])] = "ukbench other view"
        burst = (kinds_a[i] == "burst") & (kinds_a[j] == "burst") & (np.array([stems[a] for a in i]) == np.array([stems[b] for b in j]))
        out[burst] = "burst neighbours"
        sb = np.array([s for s in stems], dtype=object)
        near = ((kinds_a[i] == "burst") | (kinds_a[j] == "burst")) & (sb[i] == sb[j]) & ~burst
        out[near] = "burst frame vs photo"
        return out

    # ---- methods: every pair scored (cosine, hashes); mode copies end to end
    x = np.asarray(index.vectors, np.float32)[order]
    cos = (x @ x.T)[iu, ju]
    hashes = {}
    for h, fn in (("phash", imagehash.phash), ("dhash", imagehash.dhash)):
        bits = np.array([fn(Image.open(ds / nm)).hash.ravel() for nm in names], bool)
        hashes[h] = (bits[iu] != bits[ju]).sum(axis=1)
    t0 = time.perf_counter()
    rep = find_duplicates(index, mode="copies", workers=args.workers)
    t_dup = time.perf_counter() - t0
    found = np.zeros(len(iu), bool)
    pos_of = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(iu.tolist(), ju.tolist()))}
    inv = np.empty(n, np.int64)
    inv[order] = np.arange(n)
    for g in rep.groups:
        rows = sorted(inv[f.row] for f in g.files)
        for a in range(len(rows)):
            for b in range(a + 1, len(rows)):
                found[pos_of[(rows[a], rows[b])]] = True
    if args.dump:  # the verified matches joining images of different originals, and why they matched
        wrong = []
        for g in rep.groups:
            for i, j, v in g.matches:
                a, b = inv[g.files[i].row], inv[g.files[j].row]
                if true_group[a] != true_group[b]:
                    wrong.append({"a": names[a], "b": names[b], **v.to_dict()})
        Path(args.dump).write_text(json.dumps(wrong, indent=1))
    sim = find_duplicates(index, mode="similar")
    found_sim = np.zeros(len(iu), bool)
    for g in sim.groups:
        rows = sorted(inv[f.row] for f in g.files)
        for a in range(len(rows)):
            for b in range(a + 1, len(rows)):
                found_sim[pos_of[(rows[a], rows[b])]] = True
    # shortlist calibration: the cosine floor keeping 99.5% of the copy pairs (turns/mirrors are reached by thumbnails)
    pk = pair_kind(iu[same], ju[same])
    turned = np.isin(pk, ["rot90", "rot270", "rot180", "hflip"])
    floor = float(np.quantile(cos[same][~turned], 0.005))
    preds = {
        "copies (verified)": found,
        "similar (cosine >= %.3f)" % sim.threshold: found_sim,
        "cosine >= %.3f (0.5%% floor)" % floor: cos >= floor,
        "pHash <= 10": hashes["phash"] <= 10,
        "dHash <= 10": hashes["dhash"] <= 10,
    }
    lines = machine_lines({"model": f"mobilenet (ImageNet), preprocessing {emb.preprocessing}"})
    lines.append(f"command: {command_line()}")
    lines.append(
        f"{n} images ({sum(k == 'photo' for k in kinds)} photos; {len(set(kinds) - {'photo', 'burst'})} edits of "
        f"{args.originals} flower, 14 UKBench and 4 demo originals; {sum(k == 'burst' for k in kinds)} burst frames); "
        f"{int(same.sum())} true copy pairs among {len(iu)}; indexing {t_index:.0f} s"
    )
    lines.append(
        f"mode copies: {rep.info.get('candidates')} candidate pairs ({rep.info.get('candidates_vectors')} from the vectors "
        f"by rank, {rep.info.get('candidates_turned')} from turned/mirrored thumbnails), {rep.info.get('verified')} verified, "
        f"{t_dup:.1f} s ({rep.info.get('ms_per_pair')} ms per candidate pair with {args.workers or 'all'} threads, features "
        f"included); thumbnails made from photos: {rep.info.get('thumbnails_from_photos')}"
    )
    lines.append(f"shortlist: cosine floor keeping 99.5% of the copy pairs (turns and mirrors excluded): {floor:.3f}")
    lines.append("")
    rows = []
    for name, pred in preds.items():
        tp = int((pred & same).sum())
        fp = int((pred & ~same).sum())
        rows.append([name, f"{tp / max(1, tp + fp):.3f}", f"{tp / max(1, int(same.sum())):.3f}", tp, fp])
    lines.append(table(["method", "pair precision", "recall", "TP", "FP"], rows))
    lines.append("")
    edits = sorted(set(pk.tolist()))
    rows = []
    for e in edits:
        m = pk == e
        rows.append([e, int(m.sum())] + [f"{preds[k][same][m].mean():.3f}" for k in preds])
    lines.append("recall per edit (pairs of an original and its copy; copy-copy: two copies of one original)")
    lines.append(table(["edit", "pairs", *preds], rows))
    lines.append("")
    nk = neg_kind(iu[~same], ju[~same])
    rows = []
    for kname in ("ukbench other view", "burst neighbours", "burst frame vs photo", "unrelated"):
        m = nk == kname
        rows.append([kname, int(m.sum())] + [f"{preds[k][~same][m].mean():.4f} ({int(preds[k][~same][m].sum())})" for k in preds])
    lines.append("false positives per kind of negative pair (rate, count)")
    lines.append(table(["negative", "pairs", *preds], rows))
    text = "\n".join(lines)
    emit(text, t_start, args.markdown)
    if not args.keep_files:
        shutil.rmtree(work, ignore_errors=True)
    return text


def copies_cost(args: argparse.Namespace) -> str:
    """Mode copies at scale: the cost per image (features) and per candidate pair (verification) on real
    thumbnails, and the two shortlists timed on n synthetic images; the total extrapolated to n."""
    from PIL import Image

    from revsearch.duplicates.candidates import knn_pairs, turn_descriptors, turn_pairs
    from revsearch.duplicates.verify import features, verify_pair
    from revsearch.media.edits import COPY_EDITS, jpeg_roundtrip
    from revsearch import Index
    from revsearch.storage.thumbs import THUMB_SIDE, make_thumbnail

    t_start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    root = Path(os.environ.get("REVSEARCH_SHARED", SHARED)) / "datasets"
    fl = sorted((root / "oxford17_flowers").glob("*/*.jpg"))
    photos = [Image.open(fl[i]).convert("RGB") for i in rng.choice(len(fl), size=args.photos, replace=False)]
    thumbs_ = [make_thumbnail(p) for p in photos]
    edits = list(COPY_EDITS)
    copies_ = [make_thumbnail(jpeg_roundtrip(COPY_EDITS[edits[i % len(edits)]](p), 90)) for i, p in enumerate(photos)]
    t0 = time.perf_counter()
    feats = [features(t) for t in thumbs_]
    t_feat = (time.perf_counter() - t0) / len(thumbs_)
    cfeats = [features(t) for t in copies_]
    t0 = time.perf_counter()
    acc_true = [verify_pair(a, b).accepted for a, b in zip(feats, cfeats)]
    t_true = (time.perf_counter() - t0) / len(feats)
    t0 = time.perf_counter()
    acc_false = [verify_pair(feats[i], feats[(i + 1) % len(feats)]).accepted for i in range(len(feats))]
    t_false = (time.perf_counter() - t0) / len(feats)
    lines = machine_lines({"threads": "1 (per-image and per-pair costs); the library runs 2 threads on 2 cores"})
    lines.append(f"command: {command_line()}")
    lines.append(
        f"features (SIFT on a {THUMB_SIDE}-px thumbnail, mirror by descriptor permutation): {t_feat * 1000:.2f} ms per image; "
        f"verification: {t_true * 1000:.2f} ms per copy pair ({np.mean(acc_true):.2f} accepted), "
        f"{t_false * 1000:.2f} ms per pair of different photos ({np.mean(acc_false):.2f} accepted)"
    )
    print(lines[-1], file=sys.stderr, flush=True)
    n = args.n
    work = Path(args.tmp)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # the turn/mirror shortlist on n synthetic thumbnails (smooth random images)
    small = rng.integers(0, 256, size=(n, 6, 8), dtype=np.uint8)
    import cv2

    th = [cv2.resize(s_, (96, 72), interpolation=cv2.INTER_CUBIC) for s_ in small]
    t0 = time.perf_counter()
    base = turn_descriptors(th).astype(np.float16)
    t_desc = time.perf_counter() - t0
    t0 = time.perf_counter()
    tp = turn_pairs(base)
    t_turn = time.perf_counter() - t0
    del th, base
    # the vectors' shortlist by rank (no calibration: the most candidates) on n clustered unit vectors
    dim = args.dim
    centres = rng.standard_normal((4096, dim)).astype(np.float32)
    x = centres[rng.integers(0, 4096, n)] + rng.standard_normal((n, dim)).astype(np.float32) * 0.8
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx = Index.from_vectors(work / "v", x, [f"f{i:07d}.jpg" for i in range(n)], synthetic_spec(dim))
    del x
    t0 = time.perf_counter()
    info: dict[str, Any] = {}
    pairs, _ = knn_pairs(idx, 10, None, info=info)
    t_knn = time.perf_counter() - t0
    cand = len(pairs) + len(tp)
    threads = 2
    t_feat_all = n * t_feat / threads
    t_ver = cand * t_false / threads
    total = t_knn + t_desc + t_turn + t_feat_all + t_ver
    lines.append(
        f"n = {n:,}: vectors' shortlist by rank (k=10, {info.get('method')}) {t_knn:.0f} s, {len(pairs):,} pairs; "
        f"turn descriptors {t_desc:.1f} s; turn/mirror shortlist {t_turn:.1f} s, {len(tp):,} pairs"
    )
    lines.append(
        f"extrapolated for n = {n:,} on {threads} threads: features {t_feat_all:.0f} s + verification of {cand:,} "
        f"candidate pairs {t_ver:.0f} s + shortlists {t_knn + t_desc + t_turn:.0f} s = {total:.0f} s ({total / 60:.1f} min); "
        f"candidate pairs per image: {cand / n:.1f}"
    )
    text = "\n".join(lines)
    emit(text, t_start, args.markdown)
    shutil.rmtree(work, ignore_errors=True)
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="part", required=True)
    c = sub.add_parser("calibrate", help="calibrate the threshold on real photos, compare with pHash/dHash")
    c.add_argument("--originals", type=int, default=200, help="flower originals per set (calibration and held-out)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--cache-dir", default="/tmp/revsearch-dup-cache")
    c.add_argument("--refresh", action="store_true")
    c.add_argument("--markdown", default=None)
    s = sub.add_parser("scale", help="time and memory on synthetic vectors")
    s.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    s.add_argument("--dim", type=int, default=2048)
    s.add_argument("--threshold", type=float, default=0.95)
    s.add_argument("--noise", type=float, default=0.2, help="copy noise (norm relative to the unit original)")
    s.add_argument("--method", default="auto")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--tmp", default="/tmp/revsearch-dup-scale")
    s.add_argument("--keep-files", action="store_true")
    s.add_argument("--markdown", default=None)
    cp = sub.add_parser("copies", help="mode copies end to end on real photos, their edits and hard negatives")
    cp.add_argument("--flowers", type=int, default=300, help="flower photos (besides the listed stored-twice pairs)")
    cp.add_argument("--originals", type=int, default=40, help="flower photos that get every edit")
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--workers", type=int, default=None)
    cp.add_argument("--tmp", default="/tmp/revsearch-dup-copies")
    cp.add_argument("--keep-files", action="store_true")
    cp.add_argument("--dump", default=None, help="write the false matches (JSON) to this file")
    cp.add_argument("--markdown", default=None)
    cc = sub.add_parser("copies-cost", help="mode copies: cost per image and per pair, shortlists at n images")
    cc.add_argument("--n", type=int, default=100_000)
    cc.add_argument("--dim", type=int, default=1024)
    cc.add_argument("--photos", type=int, default=200)
    cc.add_argument("--seed", type=int, default=0)
    cc.add_argument("--tmp", default="/tmp/revsearch-dup-cost")
    cc.add_argument("--markdown", default=None)
    args = p.parse_args()
    {"calibrate": calibrate, "scale": scale, "copies": copies, "copies-cost": copies_cost}[args.part](args)


if __name__ == "__main__":
    main()
