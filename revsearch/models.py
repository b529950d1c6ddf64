"""The model catalogue: the models revsearch knows by name, and their defaults.

:class:`revsearch.embedding.Embedder` builds a model from its entry here (the Keras application,
its input preprocessing, vector size, default input side and pooling). Add a model by adding an
entry to :data:`MODELS`; an index records the name, so the name of an entry must never change
meaning.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_FIT", "DEFAULT_POOLING", "MODELS", "ModelInfo"]

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
