"""What one text query costs with a CLIP-family model, beside one image query, side by side.

Run from the repository root:

    python benchmarks/text_query.py [--model clip-vit-b32] [--runs 15]

Random weights (the same cost as the published ones; no download): the text tower is built from the
catalogue's architecture (``revsearch.models.TEXT_MODELS``) with keras-hub's classes and run on a full
sequence of token ids (as the tokenizer pads every query to), as ``ClipEmbedder.embed_text`` runs it
(Keras); the image query is ``Embedder.embed_prepared`` of one prepared image on the default backend.
Tokenizing is not included (no vocabulary offline). Runs are interleaved; medians are reported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.backbones import cpu_flags  # noqa: E402
from benchmarks.common import cpu_count, cpu_name  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="clip-vit-b32")
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.ERROR)
    import keras
    import keras_hub

    from revsearch.embedding import Embedder
    from revsearch.models import TEXT_MODELS

    info = TEXT_MODELS[args.model]
    arch = info.architecture
    text_encoder = getattr(keras_hub.models, f"{info.family}TextEncoder")(**arch["text"])
    length = int(arch["text"]["max_sequence_length"])
    ids_in = keras.Input((length,), dtype="int32")
    out = text_encoder({"token_ids": ids_in})
    if info.family == "CLIP":  # CLIP pools at the end token and projects (as CLIPBackbone.get_text_embeddings)
        pooled = keras.ops.take_along_axis(
            out, keras.ops.expand_dims(keras.ops.expand_dims(keras.ops.argmax(ids_in, axis=-1), -1), -1), axis=1
        )[:, 0]
        out = keras.layers.Dense(arch["projection_dim"], use_bias=False)(pooled)
    text_model = keras.Model(ids_in, out)
    ids = np.random.default_rng(0).integers(1, 100, (1, length)).astype("int32")
    image = Embedder(args.model, weights=None)
    photo = np.random.default_rng(1).uniform(0, 255, (1, image.input_size, image.input_size, 3)).astype(np.float32)
    text_model.predict_on_batch(ids), image.embed_prepared(photo)  # build + warm up
    t_text, t_image = [], []
    for _ in range(args.runs):
        t = time.perf_counter()
        text_model.predict_on_batch(ids)
        t_text.append(time.perf_counter() - t)
        t = time.perf_counter()
        image.embed_prepared(photo)
        t_image.append(time.perf_counter() - t)
    mt, mi = statistics.median(t_text), statistics.median(t_image)
    print(f"CPU: {cpu_name()} ({cpu_flags()}), {cpu_count()} usable cores; {args.runs} interleaved runs, medians; "
          f"random weights; image tower on {image.backend} {image.precision}, text tower on Keras float32")
    print("| query | time | vs image query |")
    print("|---|---|---|")
    print(f"| one image ({args.model} image tower, prepared {image.input_size}x{image.input_size}) | {mi * 1000:.1f} ms | 1.00x |")
    print(f"| one text ({args.model} text tower, {length} tokens) | {mt * 1000:.1f} ms | {mt / mi:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
