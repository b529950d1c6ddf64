"""Which compute precision may be the default: retrieval quality per precision, on every dataset.

    python benchmarks/precision.py [--datasets DIR ...] [--near-dup-sample 100] [--calibration 300]
                                   [--configs ...] [--json FILE] [--markdown FILE]

MobileNet with its ImageNet weights (the only real weights offline) is run at every precision the
OpenVINO backend offers (float32, bfloat16, int8 = NNCF post-training quantization calibrated, as
``Index.build`` does, on a seeded sample of ``--calibration`` photos of the collection being embedded),
next to Keras float32 (the reference of the speed goals):

* **category / instance retrieval**: leave-one-out mAP and precision@9 (``revsearch.evaluate.retrieval_metrics``)
  on each dataset (Oxford 17 flowers: class = folder; UKBench subset: object = folder);
* **near duplicates**: ``--near-dup-sample`` flowers photos, each edited every way of
  ``revsearch.evaluate.EDITS`` (JPEG q30, half size, crop, rotation, brightness, colour, grey, mirror,
  letterbox, text); each copy queries the flowers collection: recall@1 / recall@9 of its original
  (``near_duplicate_metrics``). The collection holds 68 pairs of near-identical photos
  (``near_identical_pairs.tsv``, many pixel-identical): for a copy of one of them, the first match is a
  coin toss between the two, so ``recall@1 (twin counts)`` also counts the twin as found; that figure
  is the one the rule reads. And the pairs themselves: share of pair members whose partner is their first
  match. Copies whose result changes between float32 and a precision are counted both ways (lost /
  gained), with the scores' margin;
* **the rule** (``revsearch.backends.qualifying_precisions``): a precision may be a CPU default when its mAP
  is within 0.005 of float32's on every dataset (these and the two held-out figures of issue 20) and no
  near-duplicate recall drops. The table to paste into ``revsearch.backends.PRECISION_QUALITY`` is printed.

The int8 model of each dataset is calibrated on that dataset's own photos (what indexing it would do);
``int8 (flowers calibration)`` also runs the UKBench photos through the model calibrated on flowers, to
show how much the calibration set matters.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import common  # noqa: E402

HELD_OUT = {  # issue 20: MobileNet, leave-one-out mAP on the two photo sets kept aside (a category and an instance set)
    "float32": {"held-out category mAP": 0.7764, "held-out instance mAP": 0.8241},
    "bfloat16": {"held-out category mAP": 0.7763, "held-out instance mAP": 0.8235},
    # int8 there was NNCF's performance preset with fast bias correction, all layers quantized: not the recipe of
    # revsearch.backends.INT8_RECIPE, whose held-out figures are not measured (so int8 cannot pass the rule)
    "int8": {"held-out category mAP": None, "held-out instance mAP": None},
}
#: The held-out figures of the earlier int8 recipe (performance preset), reported for reference.
HELD_OUT_INT8_PERFORMANCE_PRESET = {"held-out category mAP": 0.7639, "held-out instance mAP": 0.8235}
CONFIGS = {  # label: (backend, precision)
    "Keras float32": ("keras", "float32"),
    "OpenVINO float32": ("openvino", "float32"),
    "OpenVINO bfloat16": ("openvino", "bfloat16"),
    "OpenVINO int8": ("openvino", "int8"),
}


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.jpg") if p.is_file())


def embed(emb, files: list[Path]) -> np.ndarray:
    out = np.zeros((len(files), emb.dim), np.float32)
    for b in emb.embed_files(files, progress=False):
        assert not b.skipped, b.skipped
        out[b.indices] = b.vectors
    return out


def near_dup_queries(files: list[Path], sample: int, seed: int = 0):
    from PIL import Image

    from revsearch.evaluate import make_edits, sample_rows

    rows = sample_rows(len(files), sample, seed=seed)
    images, orig, names = [], [], []
    for r in rows:
        with Image.open(files[r]) as im:
            for name, copy in make_edits(im.convert("RGB")).items():
                images.append(np.asarray(copy))
                orig.append(int(r))
                names.append(name)
    return images, np.asarray(orig), names


def twins_of(files: list[Path], root: Path) -> dict[int, set[int]]:
    """Row -> rows of its near-identical photos (near_identical_pairs.tsv)."""
    tsv = root / "near_identical_pairs.tsv"
    where = {f.relative_to(root).as_posix(): i for i, f in enumerate(files)}
    out: dict[int, set[int]] = {}
    if tsv.is_file():
        for line in tsv.read_text().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            a, b = line.split("\t")[:2]
            if a in where and b in where:
                out.setdefault(where[a], set()).add(where[b])
                out.setdefault(where[b], set()).add(where[a])
    return out


def near_dup_scores(emb, base: np.ndarray, images, orig, names, twins: dict[int, set[int]]) -> tuple[dict, np.ndarray]:
    from revsearch.evaluate import near_duplicate_metrics

    q = np.concatenate([emb.embed(images[i : i + 32]) for i in range(0, len(images), 32)])
    top = np.argsort(-(q @ base.T), axis=1, kind="stable")[:, :9]
    rep = near_duplicate_metrics(top, orig, names, k=9, n_images=len(base))
    hit = np.array([t == o or t in twins.get(int(o), ()) for t, o in zip(top[:, 0], orig)])
    return {"recall@1": rep.recall_at_1, "recall@1 (twin counts)": float(hit.mean()), "recall@9": rep.recall_at_k}, hit


def pair_scores(vecs: np.ndarray, files: list[Path], root: Path) -> float:
    tsv = root / "near_identical_pairs.tsv"
    if not tsv.is_file():
        return float("nan")
    where = {f.relative_to(root).as_posix(): i for i, f in enumerate(files)}
    s = vecs @ vecs.T
    np.fill_diagonal(s, -np.inf)
    best = s.argmax(1)
    hits = n = 0
    for line in tsv.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        a, b = line.split("\t")[:2]
        if a in where and b in where:
            hits += int(best[where[a]] == where[b]) + int(best[where[b]] == where[a])
            n += 2
    return hits / max(1, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = common.SHARED / "datasets"
    ap.add_argument("--datasets", nargs="+", default=[str(shared / "oxford17_flowers"), str(shared / "ukbench_subset")])
    ap.add_argument("--near-dup-sample", type=int, default=300)
    ap.add_argument("--calibration", type=int, default=300)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args()
    common.offline_keras_home()
    t_start = time.perf_counter()

    from revsearch import backends
    from revsearch.embedding import Embedder
    from revsearch.evaluate import retrieval_metrics

    info = common.machine_lines({"CPU features (revsearch.backends.cpu_features)": str(sorted(backends.cpu_features()))})
    print("\n".join(info), flush=True)
    cache = Path(tempfile.mkdtemp(prefix="revsearch-bench-precision-"))
    roots = [Path(d) for d in args.datasets]
    data = {r.name: files_of(r) for r in roots}
    flowers = next((r for r in roots if "flower" in r.name), None)
    dup = near_dup_queries(data[flowers.name], args.near_dup_sample) if flowers and args.near_dup_sample else None
    twins = twins_of(data[flowers.name], flowers) if flowers else {}
    hits: dict[str, np.ndarray] = {}
    results: dict[str, dict[str, float]] = {}
    timing: dict[str, float] = {}
    flowers_calibration = None
    for label in args.configs:
        backend, precision = CONFIGS[label]
        res: dict[str, float] = {}
        t0 = time.perf_counter()
        for root in roots:
            files = data[root.name]
            emb = Embedder("mobilenet", backend=backend, precision=precision, cache_dir=cache)
            if precision == "int8":
                emb.calibrate(files, size=args.calibration)
                if root == flowers:
                    flowers_calibration = emb.calibration_id
            vecs = embed(emb, files)
            labels = [f.relative_to(root).parts[0] for f in files]
            rep = retrieval_metrics(vecs, labels, 9)
            res[f"{root.name} mAP"] = rep.mean_average_precision
            res[f"{root.name} P@9"] = rep.precision_at_k
            if root == flowers:
                if dup is not None:
                    nd, hits[label] = near_dup_scores(emb, vecs, *dup, twins)
                    res["near-duplicate recall@1"], res["near-duplicate recall@9"] = nd["recall@1"], nd["recall@9"]
                    res["near-duplicate recall@1 (twin counts)"] = nd["recall@1 (twin counts)"]
                res["near-identical pairs recall@1"] = pair_scores(vecs, files, root)
            print(f"  {label} {root.name}: mAP {rep.mean_average_precision:.4f} P@9 {rep.precision_at_k:.4f}", flush=True)
        timing[label] = time.perf_counter() - t0
        results[label] = res
        if precision == "int8" and flowers_calibration:
            for root in roots:
                if root == flowers:
                    continue
                emb = Embedder("mobilenet", backend=backend, precision="int8", cache_dir=cache, calibration=flowers_calibration)
                files = data[root.name]
                vecs = embed(emb, files)
                rep = retrieval_metrics(vecs, [f.relative_to(root).parts[0] for f in files], 9)
                results.setdefault("OpenVINO int8 (flowers calibration)", {})[f"{root.name} mAP"] = rep.mean_average_precision
                results["OpenVINO int8 (flowers calibration)"][f"{root.name} P@9"] = rep.precision_at_k
        print(f"  {label}: {json.dumps({k: round(v, 4) for k, v in res.items()})}", flush=True)

    # the rule, over these datasets and the held-out figures
    quality = {}
    for label, (_, precision) in CONFIGS.items():
        if label not in results or label == "Keras float32":
            continue
        q = {k: round(v, 4) for k, v in results[label].items() if k.endswith(("mAP", "(twin counts)", "pairs recall@1"))}
        ref = hits.get("OpenVINO float32")
        if ref is not None and label in hits and precision != "float32":
            key = "near-duplicate recall@1 (twin counts)"
            q[f"{key} lost"], q[f"{key} gained"] = int((ref & ~hits[label]).sum()), int((~ref & hits[label]).sum())
        q.update(HELD_OUT.get(precision, {}))
        quality[precision] = q
    ok = backends.qualifying_precisions(quality) if "float32" in quality else []
    keys = sorted({k for r in results.values() for k in r})
    rows = [[label] + [f"{r[k]:.4f}" if k in r else "-" for k in keys] for label, r in results.items()]
    lines = ["## Precision and retrieval quality", "", f"Command: `{common.command_line()}`", ""]
    lines += [f"- {x}" for x in info] + ["", common.table(["configuration"] + keys, rows), ""]
    lines.append("Held-out figures (issue 20): " + json.dumps(HELD_OUT) + "; int8 with the performance preset there: "
                 + json.dumps(HELD_OUT_INT8_PERFORMANCE_PRESET))  # fmt: skip
    ref = hits.get("OpenVINO float32")
    for label, h in hits.items():
        if ref is not None and label != "OpenVINO float32":
            lines.append(f"Near-duplicate copies, {label} vs OpenVINO float32 (first match, twin counts): "
                         f"{int((ref & ~h).sum())} lost, {int((~ref & h).sum())} gained of {len(h)}")  # fmt: skip
    lines.append(f"Precisions that pass the rule (mAP within {backends.MAP_TOLERANCE} of float32 on every dataset, "
                 f"no near-duplicate recall drop), fastest first: **{', '.join(ok)}**")  # fmt: skip
    lines.append(f"Default on this CPU ({sorted(backends.cpu_features())}): **{backends.cpu_precision(quality=quality)}**")
    lines.append("Seconds per configuration (embedding both sets, near-duplicate copies, int8 calibration): "
                 + ", ".join(f"{k} {v:.0f}" for k, v in timing.items()))  # fmt: skip
    lines += ["", "PRECISION_QUALITY = " + json.dumps(quality, indent=1)]
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "quality": quality, "qualifying": ok}, indent=1))
    common.emit("\n".join(lines), t_start, args.markdown)


if __name__ == "__main__":
    main()
