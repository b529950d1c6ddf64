"""The model catalogue: the models revsearch knows by name, and their defaults.

:class:`revsearch.embedding.Embedder` builds a model from its entry here (the Keras application,
its input preprocessing, vector size, default input side and pooling). Add a model by adding an
entry to :data:`MODELS`; an index records the name, so the name of an entry must never change
meaning. :data:`TEXT_MODELS` are the image-and-text (CLIP-family) models, built by
:class:`revsearch.clip.ClipEmbedder` from keras-hub presets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CLIP_MEAN", "CLIP_STD", "DEFAULT_FIT", "DEFAULT_POOLING", "MODELS", "ModelInfo", "TEXT_MODELS", "TextModelInfo"]

#: Default ``fit`` and ``pooling`` of the named models (except the original notebook's ``resnet50-seed``),
#: chosen by the rule of ``benchmarks/quality.py`` over every dataset measured (see docs/quality.md).
DEFAULT_FIT = "crop"
DEFAULT_POOLING = "avg"


@dataclass(frozen=True)
class ModelInfo:
    """A model known by name: how to build it and prepare its input."""

    keras_name: str  # attribute of keras.applications
    module: str  # keras.applications.<module>.preprocess_input
    dim: int
    preprocess: str  # "keras" or "raw-bgr"
    description: str
    size: int = 224  # default input side (the resolution it was trained at)
    pooling: str | None = None  # default pooling (None: DEFAULT_POOLING)


#: The models known by name.
MODELS: dict[str, ModelInfo] = {
    "resnet50": ModelInfo(
        "ResNet50", "resnet50", 2048, "keras", "Keras ResNet50, centre crop, preprocess_input (caffe), average pooled"
    ),
    "mobilenet": ModelInfo(
        "MobileNet", "mobilenet", 1024, "keras", "Keras MobileNet 1.0/224, centre crop, preprocess_input (tf), average pooled"
    ),
    # Backbones known to retrieve better than ResNet50 with ImageNet weights (need internet for the weights;
    # their retrieval quality was not measured here: only MobileNet's weights are available offline).
    "efficientnetv2-b0": ModelInfo(
        "EfficientNetV2B0", "efficientnet_v2", 1280, "keras",
        "Keras EfficientNetV2-B0 (rescales 0..255 inside the model), centre crop, average pooled",
        pooling="avg",
    ),
    "efficientnetv2-s": ModelInfo(
        "EfficientNetV2S", "efficientnet_v2", 1280, "keras",
        "Keras EfficientNetV2-S (rescales 0..255 inside the model), centre crop, 384x384, average pooled", 384,
        pooling="avg",
    ),
    "convnext-tiny": ModelInfo(
        "ConvNeXtTiny", "convnext", 768, "keras",
        "Keras ConvNeXt-Tiny (normalises 0..255 inside the model), centre crop, average pooled",
        pooling="avg",
    ),
    "resnet50-seed": ModelInfo(
        "ResNet50",
        "resnet50",
        2048,
        "raw-bgr",
        "the original notebook's pipeline: ResNet50 on raw BGR 0..255 (no preprocess_input), average pooled",
    ),
}


# ---------------------------------------------------------------------------- image and text (CLIP)
#: OpenAI CLIP's image normalisation (RGB, on 0..1): the preset's image converter applies
#: ``x * scale + offset`` with ``scale = 1 / (255 * std)`` and ``offset = -mean / std``.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class TextModelInfo:
    """A CLIP-family model known by name.

    Attributes
    ----------
    preset : str
        The keras-hub preset (e.g. ``"clip_vit_base_patch32"``).
    family : str
        ``"CLIP"``: the keras-hub class prefix (``CLIPBackbone``, ``CLIPPreprocessor``, ...).
    dim : int
        Dimension of the shared image/text space.
    size : int
        Image side the preset was trained at (its image converter's ``image_size``).
    scale, offset : tuple of 3 float
        The preset's image converter normalisation, per RGB channel, on 0..255 input.
    description : str
    architecture : dict
        The hyper-parameters of the towers, to build the model with random weights (``weights=None``:
        same speed, meaningless vectors; no tokenizer, so image queries only).
    fit : {"crop", "stretch"}
        How the image becomes a square, as the preset's image converter does it: centre crop
        (``crop_to_aspect_ratio=True``, CLIP) or the whole image resized (SigLIP).
    """

    preset: str
    family: str
    dim: int
    size: int
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]
    description: str
    architecture: dict[str, Any] = field(default_factory=dict)
    fit: str = "crop"


def _clip_norm() -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    scale = tuple(1.0 / 255.0 / s for s in CLIP_STD)
    offset = tuple(-m / s for m, s in zip(CLIP_MEAN, CLIP_STD))
    return scale, offset  # type: ignore[return-value]


def _vit_b(patch: int) -> dict[str, Any]:
    return {
        "vision": dict(patch_size=patch, hidden_dim=768, num_layers=12, num_heads=12, intermediate_dim=3072,
                       image_shape=(224, 224, 3)),
        "text": dict(vocabulary_size=49408, embedding_dim=512, hidden_dim=512, num_layers=12, num_heads=8,
                     intermediate_dim=2048, max_sequence_length=77),
        "projection_dim": 512,
    }  # fmt: skip


#: The CLIP-family models known by name (``--model clip-vit-b32``).
TEXT_MODELS: dict[str, TextModelInfo] = {
    "clip-vit-b32": TextModelInfo(
        "clip_vit_base_patch32", "CLIP", 512, 224, *_clip_norm(),
        "OpenAI CLIP ViT-B/32 (keras-hub preset clip_vit_base_patch32): image and text in one 512-d space, "
        "centre crop 224, bicubic, CLIP normalisation",
        _vit_b(32),
    ),
    "clip-vit-b16": TextModelInfo(
        "clip_vit_base_patch16", "CLIP", 512, 224, *_clip_norm(),
        "OpenAI CLIP ViT-B/16 (keras-hub preset clip_vit_base_patch16): as ViT-B/32 with 16-pixel patches, "
        "about 4x the image cost",
        _vit_b(16),
    ),
    "siglip-b16-224": TextModelInfo(
        "siglip_base_patch16_224", "SigLIP", 768, 224, (2.0 / 255.0,) * 3, (-1.0,) * 3,
        "Google SigLIP Base/16 at 224 (keras-hub preset siglip_base_patch16_224): image and text in one 768-d space, "
        "the whole image resized to 224 (no crop), bicubic, (x / 127.5 - 1)",
        {
            "vision": dict(patch_size=16, hidden_dim=768, num_layers=12, num_heads=12, intermediate_dim=3072,
                           image_shape=(224, 224, 3)),
            "text": dict(vocabulary_size=32000, embedding_dim=768, hidden_dim=768, num_layers=12, num_heads=12,
                         intermediate_dim=3072, max_sequence_length=64),
        },
        fit="stretch",
    ),
}  # fmt: skip
