"""Indexing speed: ``Index.build`` end to end vs the model alone vs the original notebook's loop.

    python benchmarks/indexing.py [--images 160] [--runs 3] [--models resnet50 mobilenet]
                                  [--dataset DIR] [--keras-models DIR] [--memory-sizes 100 300]

For each model, on the same N real photos (copied to a temporary folder), each run measures:

* **model alone**: ``keras_model.predict_on_batch`` on already-prepared, already-normalised arrays,
  in batches of ``--batch-size`` (the ceiling for indexing: no decoding, no resizing);
* **embed_prepared**: the same arrays through ``Embedder.embed_prepared`` (adds the model's
  ``preprocess_input`` and the L2 normalisation);
* **Index.build**: the whole thing from the image files to a committed index folder (listing,
  hashing, JPEG decoding and resizing in threads while the model runs on batches, writing);
* **original**: the notebook's loop (``benchmarks/original_baseline.py``): full decode, one
  ``model.predict`` per image; the time spent writing its ``.pbz2`` files is reported apart.

The runs interleave the four, so all see the same machine load; medians are reported, and the
ratios are of the medians. Peak memory of ``Index.build`` is then measured in a fresh process per
model and collection size (``--memory-sizes``).

ResNet50 is built with ``weights=None`` (same speed as the ImageNet weights); MobileNet uses its
ImageNet weights when the file ``mobilenet_1_0_224_tf_no_top.h5`` is found (``--keras-models``,
``$KERAS_HOME/models``, ``~/.keras/models`` or ``../shared/keras/models``), else random weights.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import common  # noqa: E402  (puts the repository on sys.path)

MOBILENET_FILE = "mobilenet_1_0_224_tf_no_top.h5"


# ---------------------------------------------------------------------------- setup
def find_mobilenet_weights(explicit: str | None) -> Path | None:
    candidates = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get("KERAS_HOME"):
        candidates.append(Path(os.environ["KERAS_HOME"]) / "models")
    candidates += [Path.home() / ".keras" / "models", common.DEFAULT_KERAS_MODELS]
    for c in candidates:
        if (c / MOBILENET_FILE).is_file():
            return c / MOBILENET_FILE
    return None


def private_keras_home(weights_file: Path | None) -> str:
    """A temporary KERAS_HOME holding only the MobileNet weights: Keras never downloads or writes elsewhere."""
    home = Path(tempfile.mkdtemp(prefix="revsearch-bench-keras-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    (home / "models").mkdir()
    if weights_file is not None:
        shutil.copy2(weights_file, home / "models" / MOBILENET_FILE)
    os.environ["KERAS_HOME"] = str(home)
    return str(home)


def pick_images(dataset: Path, n: int) -> list[Path]:
    """``n`` images spread evenly over the sorted file list (so over all classes)."""
    from revsearch.images import find_images

    files = find_images(dataset)
    if len(files) < n:
        raise SystemExit(f"{dataset} holds {len(files)} images, fewer than --images {n}")
    idx = np.linspace(0, len(files) - 1, n).round().astype(int)
    return [files[i] for i in idx]


def copy_dataset(files: list[Path], root: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for f in files:
        target = dest / f.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    return dest


def model_weights(name: str, mobilenet_file: Path | None) -> str | None:
    if name == "mobilenet" and mobilenet_file is not None:
        return "imagenet"
    return None


# ---------------------------------------------------------------------------- one model
def bench_model(
    name: str,
    weights: str | None,
    dataset: Path,
    files: list[Path],
    runs: int,
    batch_size: int,
    workers: int | None,
    baseline: bool,
    work: Path,
) -> dict:
    from original_baseline import build_original_model, index_one_predict_per_image

    from revsearch.embedding import Embedder
    from revsearch import Index

    n = len(files)
    emb = Embedder(name, weights=weights)
    model = emb.keras_model
    prepared = np.stack([emb.prepare(p) for p in files])
    normalised = emb.normalize_batch(prepared.copy())
    batches = [normalised[i : i + batch_size] for i in range(0, n, batch_size)]
    # warm up: trace the model for the full and the last (partial) batch shapes, and one small build
    for b in {len(b): b for b in batches}.values():
        model.predict_on_batch(b)
    emb.embed_prepared(prepared[:batch_size])
    Index.build(dataset, work / f"{name}-warmup", embedder=emb, batch_size=batch_size, workers=workers, progress=False)
    orig_model = None
    if baseline:
        orig_model = build_original_model(name, weights)
        index_one_predict_per_image(files[:2], orig_model)

    res: dict[str, list[float]] = {"model": [], "embed_prepared": [], "build": [], "original": [], "original_write": []}
    cpu: dict[str, list[float]] = {"model": [], "build": [], "original": []}  # CPU ms per image, all threads
    for r in range(runs):
        c0 = cpu_seconds()
        t, _ = common.timed(lambda: [model.predict_on_batch(b) for b in batches])
        cpu["model"].append((cpu_seconds() - c0) / n * 1e3)
        res["model"].append(n / t)
        t, _ = common.timed(
            lambda: [emb.embed_prepared(prepared[i : i + batch_size]) for i in range(0, n, batch_size)]
        )
        res["embed_prepared"].append(n / t)
        vec_dir = work / f"{name}-vec-{r}"
        c0 = cpu_seconds()
        t, (index, report) = common.timed(
            lambda: Index.build(dataset, vec_dir, embedder=emb, batch_size=batch_size, workers=workers, progress=False)
        )
        cpu["build"].append((cpu_seconds() - c0) / n * 1e3)
        assert len(index) == n and not report.skipped, report.summary()
        res["build"].append(n / t)
        shutil.rmtree(vec_dir)
        if orig_model is not None:
            out = work / f"{name}-orig-{r}"
            out.mkdir()
            c0 = cpu_seconds()
            o = index_one_predict_per_image(files, orig_model, out)
            cpu["original"].append((cpu_seconds() - c0) / n * 1e3)
            res["original"].append(n / (o["total"] - o["writing"]))
            res["original_write"].append(n / o["total"])
            shutil.rmtree(out)
        line = ", ".join(f"{k} {v[-1]:.1f}" for k, v in res.items() if v)
        line += "; CPU ms/image: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in cpu.items() if v)
        print(f"  {name} run {r + 1}/{runs}: images/s: {line}", flush=True)
    return {"name": name, "weights": weights or "none", "n": n, "batch_size": batch_size, **res, "cpu": cpu}


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------------------- memory (child process)
def memory_child(name: str, weights: str | None, dataset: Path, warmup: Path, batch_size: int, workers: int | None) -> None:
    """Build the index of ``dataset`` after a warm-up build, print peak memory figures as JSON."""
    import tracemalloc

    from revsearch.embedding import Embedder
    from revsearch import Index

    emb = Embedder(name, weights=weights)
    work = Path(tempfile.mkdtemp(prefix="revsearch-bench-mem-"))
    try:
        Index.build(warmup, work / "warm", embedder=emb, batch_size=batch_size, workers=workers, progress=False)
        rss_before = common.proc_kib("VmRSS")
        try:  # reset the peak-RSS counter (Linux >= 4.0), so VmHWM is the peak of the build alone
            Path("/proc/self/clear_refs").write_text("5")
            reset = True
        except OSError:
            reset = False
        tracemalloc.start()
        index, _ = Index.build(dataset, work / "vec", embedder=emb, batch_size=batch_size, workers=workers, progress=False)
        _, traced_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        hwm = common.proc_kib("VmHWM") if reset else None
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(
            json.dumps(
                {
                    "n": len(index),
                    "dim": index.dim,
                    "rss_before": rss_before,
                    "peak_rss_build": hwm if hwm is not None else maxrss,
                    "peak_is_build_only": hwm is not None,
                    "tracemalloc_peak": traced_peak,
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_memory(name, weights, all_files, root, sizes, batch_size, workers, work: Path) -> list[dict]:
    out = []
    warm = copy_dataset(all_files[-(batch_size + 8) :], root, work / f"mem-warm-{name}")
    for size in sizes:
        ds = copy_dataset(all_files[:size], root, work / f"mem-{name}-{size}")
        cmd = [
            sys.executable, __file__, "--memory-child", name, str(ds), str(warm),
            "--batch-size", str(batch_size), "--weights", weights or "none",
        ]  # fmt: skip
        if workers:
            cmd += ["--workers", str(workers)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"memory measurement failed for {name} at {size} images")
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {name} memory at {size} images: {rec}", flush=True)
        out.append({"name": name, **rec})
        shutil.rmtree(ds)
    shutil.rmtree(warm)
    return out


# ---------------------------------------------------------------------------- report
def report(results: list[dict], memory: list[dict], args: argparse.Namespace, info: list[str]) -> str:
    med = common.median
    lines = ["## Indexing", "", f"Command: `{common.command_line()}`", ""]
    lines += [f"- {x}" for x in info]
    lines.append("")
    header = [
        "model", "images", "model alone (img/s)", "embed_prepared (img/s)", "Index.build (img/s)",
        "original loop (img/s)", "build / model alone (target >= 85%)", "build / original (target >= 2.5x)",
        "CPU ms/img: model alone", "CPU ms/img: build", "same ratio by CPU time",
    ]  # fmt: skip
    rows = []
    for r in results:
        m, b = med(r["model"]), med(r["build"])
        o = med(r["original"]) if r["original"] else None
        cm, cb = med(r["cpu"]["model"]), med(r["cpu"]["build"])
        rows.append(
            [
                f"{r['name']} (weights={r['weights']})",
                r["n"],
                f"{m:.1f}",
                f"{med(r['embed_prepared']):.1f}",
                f"{b:.1f}",
                f"{o:.2f}" if o else "-",
                f"**{b / m:.0%}**",
                f"**{b / o:.2f}x**" if o else "-",
                f"{cm:.1f}",
                f"{cb:.1f}",
                f"{cm / cb:.0%}",
            ]
        )
    lines.append(
        f"Median of {args.runs} runs, batch size {args.batch_size}; ratios are of the medians. The CPU columns are "
        "the process's CPU time (all threads) per image: their ratio is what the throughput ratio would be with "
        "both saturating the cores, independent of other load on the machine."
    )
    lines.append("")
    lines.append(common.table(header, rows))
    lines.append("")
    detail = []
    for r in results:
        for key, label in (("model", "model alone"), ("embed_prepared", "embed_prepared"), ("build", "Index.build"),
                           ("original", "original loop"), ("original_write", "original loop incl. .pbz2 writes")):  # fmt: skip
            if r[key]:
                detail.append([r["name"], label, f"{med(r[key]):.2f}", common.spread(r[key]), len(r[key])])
        for key, label in (("model", "CPU ms/img, model alone"), ("build", "CPU ms/img, Index.build"),
                           ("original", "CPU ms/img, original loop incl. .pbz2 writes")):  # fmt: skip
            if r["cpu"][key]:
                detail.append([r["name"], label, f"{med(r['cpu'][key]):.2f}", common.spread(r["cpu"][key]), len(r["cpu"][key])])
    lines.append("All runs (images/s unless stated):")
    lines.append("")
    lines.append(common.table(["model", "what", "median", "min..max", "runs"], detail))
    if memory:
        lines += ["", "Peak memory of `Index.build` (fresh process per row, after a warm-up build):", ""]
        mrows = []
        for m in memory:
            vec = m["n"] * m["dim"] * 4
            mrows.append(
                [
                    m["name"], m["n"], common.fmt_mb(vec), common.fmt_mb(m["rss_before"]),
                    common.fmt_mb(m["peak_rss_build"]), common.fmt_mb(m["peak_rss_build"] - m["rss_before"]),
                    common.fmt_mb(m["tracemalloc_peak"]),
                ]  # fmt: skip
            )
        lines.append(
            common.table(
                ["model", "images", "vectors", "RSS before", "peak RSS in build", "peak - before", "tracemalloc peak"],
                mrows,
            )
        )
        if not all(m["peak_is_build_only"] for m in memory):
            lines.append("")
            lines.append("(peak RSS is the process's whole-life maximum: /proc/self/clear_refs was not available)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=160, help="images per run (default 160)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=None, help="image-reading threads (default: revsearch's)")
    ap.add_argument("--models", nargs="+", default=["resnet50", "mobilenet"], choices=["resnet50", "mobilenet"])
    ap.add_argument("--dataset", default=str(common.DEFAULT_DATASET), help="folder of real photos")
    ap.add_argument("--keras-models", default=None, help=f"folder holding {MOBILENET_FILE}")
    ap.add_argument("--memory-sizes", type=int, nargs="*", default=[100, 300], help="collection sizes for peak memory")
    ap.add_argument("--no-baseline", action="store_true", help="skip the original notebook's loop")
    ap.add_argument("--markdown", default=None, help="also write the report to this file")
    ap.add_argument("--memory-child", nargs=3, metavar=("MODEL", "DATASET", "WARMUP"), help=argparse.SUPPRESS)
    ap.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.memory_child:
        name, ds, warm = args.memory_child
        weights = None if args.weights in (None, "none") else args.weights
        memory_child(name, weights, Path(ds), Path(warm), args.batch_size, args.workers)
        return

    dataset = Path(args.dataset)
    if not dataset.is_dir():
        raise SystemExit(f"dataset folder {dataset} not found: pass --dataset DIR (a folder of photos)")
    mobilenet_file = find_mobilenet_weights(args.keras_models) if "mobilenet" in args.models else None
    private_keras_home(mobilenet_file)

    import keras
    import tensorflow as tf

    t_start = time.perf_counter()
    info = common.machine_lines(
        {
            "TensorFlow": f"{tf.__version__} (Keras {keras.__version__}), intra-op threads "
            f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default (= cores)'}",
            "dataset": f"{dataset} ({args.images} images spread over the sorted list)",
        }
    )
    print("\n".join(info), flush=True)
    work = Path(tempfile.mkdtemp(prefix="revsearch-bench-index-"))
    try:
        files = pick_images(dataset, args.images)
        ds = copy_dataset(files, dataset, work / "dataset")
        local = sorted(p for p in ds.rglob("*") if p.is_file())
        results = []
        for name in args.models:
            weights = model_weights(name, mobilenet_file)
            print(f"{name} (weights={weights or 'none'}): {len(local)} images, {args.runs} runs", flush=True)
            results.append(
                bench_model(name, weights, ds, local, args.runs, args.batch_size, args.workers, not args.no_baseline, work)
            )
        memory = []
        if args.memory_sizes:
            mem_files = pick_images(dataset, max(args.memory_sizes))
            for name in args.models:
                memory += measure_memory(
                    name, model_weights(name, mobilenet_file), mem_files, dataset, sorted(args.memory_sizes),
                    args.batch_size, args.workers, work,
                )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(results, memory, args, info)
    common.emit(text, t_start, args.markdown)


if __name__ == "__main__":
    main()
