"""A tiny CLIP of keras-hub's own classes with random weights, saved as a local preset folder.

Real CLIP weights cannot be downloaded here; this preset has the layout of the published ones
(``config.json``, ``model.weights.h5``, ``image_converter.json``, ``tokenizer.json`` + ``assets/``,
written by keras-hub's ``save_to_preset``), with the real CLIP normalisation constants, a 32x32
image size, an 8-token sequence and a BPE vocabulary of letters and a few whole words. revsearch
loads it with ``weights=<folder>`` through the same ``from_preset`` calls as the published preset.
"""

from __future__ import annotations

import string
from pathlib import Path

#: Merges that make whole words of the test sentences (each merge's parts are in the vocabulary).
MERGES = ["r e", "re d</w>", "c a", "ca r</w>", "a t</w>", "d o", "do g</w>", "o n</w>", "t h", "th e</w>"]
SIZE = 32  # image side
LENGTH = 8  # tokens per text (start + 6 + end)
DIM = 8  # the shared space
#: OpenAI CLIP's image normalisation (RGB on 0..1), as its preprocessor config states them.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def vocabulary() -> dict[str, int]:
    """Letters, letters ending a word, merged words, then the start and end tokens (end last: CLIP pools at
    the position of the largest id)."""
    tokens = list(string.ascii_lowercase) + [c + "</w>" for c in string.ascii_lowercase]
    tokens += ["".join(m.split()) for m in MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def build_preset(folder: Path, seed: int = 7) -> Path:
    """Write the tiny CLIP preset into ``folder`` (created) and return it."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    vocab = vocabulary()
    tokenizer = keras_hub.models.CLIPTokenizer(vocabulary=vocab, merges=MERGES, pad_with_end_token=True)
    vision = keras_hub.models.CLIPVisionEncoder(
        patch_size=8, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32, image_shape=(SIZE, SIZE, 3)
    )
    text = keras_hub.models.CLIPTextEncoder(
        vocabulary_size=len(vocab), embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32,
        max_sequence_length=LENGTH,
    )
    backbone = keras_hub.models.CLIPBackbone(vision, text, projection_dim=DIM)
    converter = keras_hub.layers.CLIPImageConverter(
        image_size=(SIZE, SIZE),
        scale=[1.0 / 255.0 / s for s in OPENAI_STD],
        offset=[-m / s for m, s in zip(OPENAI_MEAN, OPENAI_STD)],
        interpolation="bicubic",
    )
    folder.mkdir(parents=True, exist_ok=True)
    for part in (backbone, converter, tokenizer):
        part.save_to_preset(str(folder))
    return folder


#: SigLIP's image normalisation (x / 127.5 - 1), as its preprocessor config states it (mean = std = 0.5).
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
SIGLIP_LENGTH = 8


def build_siglip_preset(folder: Path, seed: int = 11) -> Path:
    """A tiny SigLIP of keras-hub's own classes (a SentencePiece vocabulary trained here on a few
    sentences), saved as a preset folder like the published ``siglip_base_patch16_224``."""
    import io

    import keras
    import keras_hub
    import sentencepiece as spm

    keras.utils.set_random_seed(seed)
    corpus = ["a red car at night", "a dog on the beach", "the red dog", "a car on the road at night"] * 20
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=proto, vocab_size=20, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
    )
    tokenizer = keras_hub.models.SigLIPTokenizer(proto=proto.getvalue())
    vision = keras_hub.models.SigLIPVisionEncoder(
        patch_size=8, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32, image_shape=(SIZE, SIZE, 3)
    )
    text = keras_hub.models.SigLIPTextEncoder(
        vocabulary_size=tokenizer.vocabulary_size(), embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=2,
        intermediate_dim=32, max_sequence_length=SIGLIP_LENGTH,
    )
    backbone = keras_hub.models.SigLIPBackbone(vision, text)
    converter = keras_hub.layers.SigLIPImageConverter(
        image_size=(SIZE, SIZE),
        scale=[1.0 / 255.0 / s for s in SIGLIP_STD],
        offset=[-m / s for m, s in zip(SIGLIP_MEAN, SIGLIP_STD)],
        interpolation="bicubic",
        antialias=True,
        crop_to_aspect_ratio=False,
    )
    folder.mkdir(parents=True, exist_ok=True)
    for part in (backbone, converter, tokenizer):
        part.save_to_preset(str(folder))
    return folder
