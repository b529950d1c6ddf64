"""Backends and precisions side by side: Keras float32 (the baseline), Keras bfloat16, OpenVINO float32,
OpenVINO bfloat16 (latency and throughput hints), on the same images in one run.

    python benchmarks/backends.py [--images 96] [--runs 3] [--models resnet50 mobilenet]
                                  [--quality-images 1360] [--dataset DIR] [--keras-models DIR]

For each model and configuration:

* **model alone**: ``Embedder.embed_prepared`` on images already decoded and resized (the model, its
  input normalisation and the L2 normalisation; no decoding), batches of ``--batch-size``;
* **Index.build**: from the JPEG files to a committed index folder (reading, hashing, decoding and
  resizing in threads while the model runs);
* **decode alone**: ``Embedder.prepare`` of every file with the same reading threads, no model;
* CPU time per image (all threads) of the model alone and of the build, whose ratio does not depend
  on other load on the machine.

Runs interleave the configurations; medians are reported, ratios are of the medians against Keras
float32. Then, with MobileNet's real ImageNet weights, every configuration embeds ``--quality-images``
Oxford-flowers photos: top-9 agreement with Keras float32 (mean overlap of each photo's 9 nearest
neighbours) and precision@9 (leave-one-out, class = folder). Last, the start time of an OpenVINO
embedder in a fresh process: first start (conversion) and second start (cached IR and compiled blob),
next to Keras's, to the first vector.

ResNet50 runs with ``weights=None`` (same speed as ImageNet's); MobileNet with its ImageNet weights when
``mobilenet_1_0_224_tf_no_top.h5`` is found (see ``benchmarks/indexing.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import common  # noqa: E402  (puts the repository on sys.path)
from indexing import copy_dataset, find_mobilenet_weights, pick_images, private_keras_home  # noqa: E402

#: (label, backend, precision, OpenVINO hint)
ALL_CONFIGS = [
    ("Keras float32", "keras", "float32", None),
    ("Keras bfloat16", "keras", "bfloat16", None),
    ("OpenVINO float32", "openvino", "float32", "throughput"),
    ("OpenVINO bfloat16", "openvino", "bfloat16", "throughput"),
    ("OpenVINO int8", "openvino", "int8", "throughput"),
    ("OpenVINO float32 LATENCY", "openvino", "float32", "latency"),
    ("OpenVINO bfloat16 LATENCY", "openvino", "bfloat16", "latency"),
]
#: Run by default (--configs): the baseline and the library's three OpenVINO precisions with its default hint.
DEFAULT_CONFIGS = ["Keras float32", "OpenVINO float32", "OpenVINO bfloat16", "OpenVINO int8"]
CONFIGS = [c for c in ALL_CONFIGS if c[0] in DEFAULT_CONFIGS]


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "?"
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    keep = [f for f in flags if f.startswith(("avx512", "amx", "avx_vnni")) or f in ("avx2", "fma")]
    return " ".join(keep) + ("" if any(f.startswith("amx") for f in flags) else "  (no AMX)")


def openvino_line() -> str:
    try:
        import openvino as ov
    except ImportError:
        return "not installed"
    core = ov.Core()
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    hint = core.get_property("CPU", "INFERENCE_PRECISION_HINT")
    return f"{ov.get_version()}; CPU plugin OPTIMIZATION_CAPABILITIES={list(caps)}, default INFERENCE_PRECISION_HINT={hint}"


def make_embedder(name: str, weights: str | None, backend: str, precision: str, hint: str | None, cache: Path,
                  calibration: list[Path] | None = None):  # fmt: skip
    from revsearch.embedding import Embedder

    e = Embedder(name, weights=weights, backend=backend, precision=precision, openvino_hint=hint or "throughput",
                 cache_dir=cache)  # fmt: skip
    if precision == "int8":
        e.calibrate(calibration or [])  # as Index.build does: a seeded sample of the collection
    return e


def decode_all(emb, files: list[Path], workers: int) -> None:
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda p: emb.prepare(p.read_bytes()), files))


def bench_speed(name, weights, ds: Path, files: list[Path], args, cache: Path, work: Path) -> dict:
    from revsearch import Index

    n, bs = len(files), args.batch_size
    workers = args.workers or min(8, os.cpu_count() or 1)
    embs = {c[0]: make_embedder(name, weights, c[1], c[2], c[3], cache, files).load() for c in CONFIGS}
    first = next(iter(embs.values()))
    prepared = np.stack([first.prepare(p) for p in files])
    for e in embs.values():  # warm up every shape (full and last batch) and one small build
        for i in range(0, n, bs):
            e.embed_prepared(prepared[i : i + bs])
    res: dict[str, dict[str, list[float]]] = {k: {"model": [], "build": [], "cpu_model": [], "cpu_build": []} for k in embs}
    res["decode alone"] = {"decode": [], "cpu_decode": []}
    for r in range(args.runs):
        c0, t0 = cpu_seconds(), time.perf_counter()
        decode_all(first, files, workers)
        res["decode alone"]["decode"].append(n / (time.perf_counter() - t0))
        res["decode alone"]["cpu_decode"].append((cpu_seconds() - c0) / n * 1e3)
        for label, e in embs.items():
            c0, t0 = cpu_seconds(), time.perf_counter()
            for i in range(0, n, bs):
                e.embed_prepared(prepared[i : i + bs])
            res[label]["model"].append(n / (time.perf_counter() - t0))
            res[label]["cpu_model"].append((cpu_seconds() - c0) / n * 1e3)
            vec = work / f"vec-{name}-{r}"
            c0, t0 = cpu_seconds(), time.perf_counter()
            index, report = Index.build(ds, vec, e, batch_size=bs, workers=args.workers, progress=False)
            res[label]["build"].append(n / (time.perf_counter() - t0))
            res[label]["cpu_build"].append((cpu_seconds() - c0) / n * 1e3)
            assert len(index) == n and not report.skipped
            shutil.rmtree(vec)
        print(f"  {name} run {r + 1}/{args.runs}: " + "; ".join(
            f"{k}: model {v['model'][-1]:.1f} build {v['build'][-1]:.1f}" for k, v in res.items() if "model" in v
        ) + f"; decode alone {res['decode alone']['decode'][-1]:.1f} img/s", flush=True)  # fmt: skip
    return res


def bench_quality(weights, files: list[Path], root: Path, cache: Path, batch: int) -> dict:
    """MobileNet (real weights) vectors of ``files`` per configuration: P@9 and agreement with Keras float32."""
    labels = np.array([f.relative_to(root).parts[0] for f in files])
    vecs = {}
    for label, backend, precision, hint in CONFIGS:
        if "THROUGHPUT" in label:
            continue  # same precision as the latency hint: the same numbers up to rounding
        e = make_embedder("mobilenet", weights, backend, precision, hint, cache, files)
        out = np.zeros((len(files), e.dim), np.float32)
        for b in e.embed_files(files, batch_size=batch, progress=False):
            out[b.indices] = b.vectors
        vecs[label] = out
        print(f"  quality: embedded {len(files)} photos with {label}", flush=True)

    def top9(v):
        s = v @ v.T
        np.fill_diagonal(s, -np.inf)
        return np.argsort(-s, axis=1, kind="stable")[:, :9]

    ref = top9(vecs["Keras float32"])
    out = {}
    for label, v in vecs.items():
        t = top9(v)
        agree = float(np.mean([len(set(a) & set(b)) / 9 for a, b in zip(t, ref)]))
        p9 = float((labels[t] == labels[:, None]).mean())
        out[label] = {"agreement": agree, "p9": p9}
    return out


START_CODE = """
import sys, time, json
t0 = time.perf_counter()
import numpy as np
from revsearch.embedding import Embedder
e = Embedder(sys.argv[1], weights=None if sys.argv[2] == "none" else sys.argv[2], backend=sys.argv[3],
             precision=sys.argv[4], cache_dir=sys.argv[5])
e.embed(np.full((64, 64, 3), 100, np.uint8))
print(json.dumps({"seconds": time.perf_counter() - t0, "from": getattr(e._ov, "loaded_from", None),
                  "tensorflow": "tensorflow" in sys.modules}))
"""


def start_time(name, weights, backend, precision, cache: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(common.REPO))
    cmd = [sys.executable, "-c", START_CODE, name, weights or "none", backend, precision, str(cache)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(speed: dict, quality: dict, starts: list, args, info: list[str]) -> str:
    med = common.median
    lines = ["## Backends", "", f"Command: `{common.command_line()}`", ""] + [f"- {x}" for x in info] + [""]
    lines.append(
        f"Speed: {args.images} photos, batch {args.batch_size}, median of {args.runs} interleaved runs; x = ratio of "
        "medians to Keras float32's; CPU ms/img = process CPU time (all threads) per image."
    )
    lines.append("")
    header = ["model", "configuration", "model alone img/s", "x", "Index.build img/s", "x", "build / model alone",
              "CPU ms/img model", "CPU ms/img build"]  # fmt: skip
    rows = []
    for name, res in speed.items():
        base_m, base_b = med(res["Keras float32"]["model"]), med(res["Keras float32"]["build"])
        for label, v in res.items():
            if "model" not in v:
                continue
            m, b = med(v["model"]), med(v["build"])
            rows.append([name, label, f"{m:.1f}", f"{m / base_m:.2f}x", f"{b:.1f}", f"**{b / base_b:.2f}x**",
                         f"{b / m:.0%}", f"{med(v['cpu_model']):.1f}", f"{med(v['cpu_build']):.1f}"])  # fmt: skip
        d = res["decode alone"]
        rows.append([name, "decode + resize alone (no model)", "-", "-", f"{med(d['decode']):.1f}", "-", "-", "-",
                     f"{med(d['cpu_decode']):.2f}"])  # fmt: skip
    lines.append(common.table(header, rows))
    if quality:
        lines += ["", f"Quality, MobileNet with ImageNet weights, {args.quality_images} Oxford-flowers photos "
                  "(every photo queries all others):", ""]  # fmt: skip
        qrows = []
        base = quality["Keras float32"]["p9"]
        for label, q in quality.items():
            ok = q["agreement"] >= 0.95 and abs(q["p9"] - base) <= 0.005
            qrows.append([label, f"{q['agreement']:.3f}", f"{q['p9']:.4f}", f"{q['p9'] - base:+.4f}", "yes" if ok else "no"])
        lines.append(common.table(["configuration", "top-9 agreement with Keras float32", "precision@9", "vs float32",
                                   "meets the default rule (>= 0.95, within 0.005)"], qrows))  # fmt: skip
    if starts:
        lines += ["", "Start to the first vector, fresh process (import, model, one image):", ""]
        lines.append(common.table(["model", "backend", "run", "seconds", "how", "TensorFlow imported"],
                                  [[s["model"], s["backend"], s["run"], f"{s['seconds']:.2f}", s["from"] or "Keras build",
                                    s["tensorflow"]] for s in starts]))  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--models", nargs="+", default=["resnet50", "mobilenet"], choices=["resnet50", "mobilenet"])
    ap.add_argument("--quality-images", type=int, default=0,
                    help="flowers photos for agreement / P@9 (0: skip; benchmarks/precision.py measures mAP per dataset)")
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=[c[0] for c in ALL_CONFIGS])
    ap.add_argument("--starts", type=int, default=3, help="second-start measurements per backend (0: skip)")
    ap.add_argument("--dataset", default=str(common.DEFAULT_DATASET))
    ap.add_argument("--keras-models", default=None)
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args()
    global CONFIGS
    CONFIGS = [c for c in ALL_CONFIGS if c[0] in args.configs]
    if CONFIGS[0][0] != "Keras float32":
        ap.error("--configs must start with the baseline, Keras float32")

    dataset = Path(args.dataset)
    mobilenet_file = find_mobilenet_weights(args.keras_models)
    private_keras_home(mobilenet_file)
    import keras
    import tensorflow as tf

    t_start = time.perf_counter()
    info = common.machine_lines({
        "CPU flags": cpu_flags(),
        "TensorFlow": f"{tf.__version__} (Keras {keras.__version__})",
        "OpenVINO": openvino_line(),
    })  # fmt: skip
    print("\n".join(info), flush=True)
    work = Path(tempfile.mkdtemp(prefix="revsearch-bench-backends-"))
    cache = work / "ov-cache"
    try:
        files = pick_images(dataset, args.images)
        ds = copy_dataset(files, dataset, work / "dataset")
        local = sorted(p for p in ds.rglob("*") if p.is_file())
        speed = {}
        for name in args.models:
            weights = "imagenet" if name == "mobilenet" and mobilenet_file else None
            print(f"{name} (weights={weights or 'none'}):", flush=True)
            speed[f"{name} ({weights or 'random'} weights)"] = bench_speed(name, weights, ds, local, args, cache, work)
        quality = {}
        if args.quality_images and mobilenet_file:
            qfiles = pick_images(dataset, args.quality_images)
            quality = bench_quality("imagenet", qfiles, dataset, cache, args.batch_size)
        starts = []
        for name in args.models if args.starts else []:
            weights = "imagenet" if name == "mobilenet" and mobilenet_file else None
            fresh = work / f"start-cache-{name}"
            for run in ["first (converts)"] + [f"second+ ({i + 1})" for i in range(args.starts)]:
                s = start_time(name, weights, "openvino", "bfloat16", fresh)
                starts.append({"model": name, "backend": "OpenVINO bfloat16", "run": run, **s})
            s = start_time(name, weights, "keras", "float32", fresh)
            starts.append({"model": name, "backend": "Keras float32", "run": "any", **s})
            print(f"  starts {name}: {[round(x['seconds'], 2) for x in starts if x['model'] == name]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    common.emit(report(speed, quality, starts, args, info), t_start, args.markdown)


if __name__ == "__main__":
    main()
