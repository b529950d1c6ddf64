"""The notebook's two ``VECTORS`` choices side by side: the original project's pipeline vs the default.

Run from the repository root (about 3-6 minutes on 2 busy CPU cores):

    python benchmarks/notebook_vectors.py [--dataset ../shared/datasets/oxford17_flowers]

The photos are laid out like the original project's data: one flat folder of
``CCCC_NNNNNN.jpg`` files (class number, running number), copied into a temporary folder
(never into the repository). Two indexes are built with MobileNet's real ImageNet weights
(``../shared/keras/models``):

* **original pipeline**: what "use the original vectors" amounts to, with MobileNet in place of
  ResNet50 (whose weights are not available offline): raw BGR 0..255 pixels (no
  ``preprocess_input``), padded to a square, average pooled - the ``resnet50-seed`` recipe;
* **default pipeline**: ``revsearch index DIR VEC --model mobilenet`` (today's default
  preprocessing, recorded in the report).

Both are scored by the command users run, ``revsearch evaluate DIR VEC --layout prefix --json``
(leave-one-out class retrieval: precision@9, mAP, recall@1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DEFAULT_DATASET, DEFAULT_KERAS_MODELS, REPO, emit, machine_lines, table

WEIGHTS_FILE = "mobilenet_1_0_224_tf_no_top.h5"


def flat_copy(dataset: Path, dest: Path) -> int:
    """Copy a class-per-folder dataset into ``dest`` as ``CCCC_NNNNNN.jpg``; return the count."""
    dest.mkdir(parents=True)
    n = 0
    classes = sorted(p for p in dataset.iterdir() if p.is_dir())
    for c, folder in enumerate(classes, start=1):
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in (".jpg", ".jpeg"):
                n += 1
                shutil.copyfile(f, dest / f"{c:04d}_{n:06d}.jpg")
    return n


def _bgr(batch):  # the original pipeline fed raw BGR 0..255 pixels to the network
    return batch[..., ::-1]


def original_pipeline_embedder():
    """MobileNet (ImageNet) with the original project's recipe: pad, raw BGR, average pooling."""
    import keras

    from revsearch.embedding import Embedder

    model = keras.applications.MobileNet(
        include_top=False, pooling="avg", weights="imagenet", input_shape=(224, 224, 3)
    )
    return Embedder(model, preprocess=_bgr, fit="pad", name="mobilenet-original-pipeline")


def evaluate(photos: Path, vectors: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, "-m", "revsearch", "evaluate", str(photos), str(vectors), "--layout", "prefix", "--json"],
        env=env, capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", type=Path, default=DEFAULT_DATASET)
    ap.add_argument("--keras-models", type=Path, default=DEFAULT_KERAS_MODELS)
    ap.add_argument("--markdown", default=None, help="also write the report to this file")
    args = ap.parse_args()
    t_start = time.perf_counter()
    machine = machine_lines()  # at the start: the load average before the runs

    if not (args.keras_models / WEIGHTS_FILE).is_file():
        sys.exit(f"needs {args.keras_models / WEIGHTS_FILE} (MobileNet's ImageNet weights)")
    tmp = Path(tempfile.mkdtemp(prefix="revsearch-nbvec-"))
    try:
        shutil.copytree(args.keras_models, tmp / "keras" / "models")
        os.environ["KERAS_HOME"] = str(tmp / "keras")
        photos = tmp / "imagenet_resized"
        n = flat_copy(args.dataset, photos)

        from revsearch.embedding import get_embedder
        from revsearch import Index

        rows = []
        for label, make in (
            ("original pipeline (raw BGR, pad, avg pool)", original_pipeline_embedder),
            ("default pipeline (revsearch index --model mobilenet)", lambda: get_embedder("mobilenet")),
        ):
            embedder = make()
            vectors = tmp / f"vectors-{len(rows)}"
            t0 = time.perf_counter()
            index, _ = Index.build(photos, vectors, embedder, progress=False)
            seconds = time.perf_counter() - t0
            rep = evaluate(photos, vectors)
            rows.append((label, embedder.preprocessing, rep, seconds, len(index)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    lines = [
        "# The notebook's VECTORS choices: original pipeline vs default (MobileNet, ImageNet weights)",
        "",
        *machine,
        f"dataset: {args.dataset} ({n} photos, renamed CCCC_NNNNNN.jpg in one flat folder)",
        "",
        table(
            ["pipeline", "precision@9", "mAP", "recall@1", "index time (s)", "preprocessing"],
            [
                (label, f"{r['precision_at_k']:.3f}", f"{r['mean_average_precision']:.3f}",
                 f"{r['recall_at_1']:.3f}", f"{s:.0f}", f"`{pre}`")
                for label, pre, r, s, _ in rows
            ],
        ),
    ]
    emit("\n".join(lines), t_start, args.markdown)


if __name__ == "__main__":
    main()
