"""CLIP-family models: an image tower and a text tower that land in one vector space.

A CLIP index is searched by image like any other index, and also by words: the text tower turns
"a red car at night" into a vector of the same space, and the search is the same cosine top-k.
The models come from ``keras-hub`` (``pip install "revsearch[clip]"``), through its presets:
``CLIPBackbone.from_preset``, ``CLIPImageConverter.from_preset`` and ``CLIPPreprocessor.from_preset``,
with a preset name (downloaded by keras-hub from Kaggle into the kagglehub cache) or the path of a
local preset folder (as ``save_to_preset`` writes it).

The image path is the :class:`~revsearch.embedding.Embedder`'s (read, centre-crop, bicubic resize
to the preset's image size, in parallel), then the preset's own normalisation (its image
converter's ``scale`` and ``offset``) and the image tower, both in one Keras model, so the OpenVINO
backend converts and caches it like the other models. The text tower runs on Keras.

Nothing here imports TensorFlow or keras-hub at import time.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import random
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import backends
from .embedding import Embedder, folder_id, get_embedder, l2_normalize, seed_random_weights
from .errors import ModelMismatchError, OptionalDependencyError, UnknownModelError, WeightsUnavailableError
from .models import CLIP_MEAN, CLIP_STD, TEXT_MODELS, TextModelInfo

logger = logging.getLogger(__name__)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "TEXT_MODELS",
    "ClipEmbedder",
    "TextModelInfo",
    "clean_texts",
    "embed_text",
    "supports_text",
]

def supports_text(model: str) -> bool:
    """Whether the model of that name (as an index records it) embeds text queries.

    Parameters
    ----------
    model : str
        E.g. ``index.spec["model"]``.

    Returns
    -------
    bool
    """
    return isinstance(model, str) and model.lower() in TEXT_MODELS


def _need_keras_hub() -> None:
    if importlib.util.find_spec("keras_hub") is None:
        raise OptionalDependencyError(
            'CLIP models need keras-hub: pip install "revsearch[clip]" (or pip install keras-hub)'
        )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightsUnavailableError(f"cannot read {str(path)!r} of the keras-hub preset: {e}") from None
    if not isinstance(data, dict):
        raise WeightsUnavailableError(f"{str(path)!r} of the keras-hub preset is not a JSON object")
    return data


def _triple(value: Any, what: str, where: Path) -> tuple[float, float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * 3
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or not all(np.isfinite(out)):
        raise WeightsUnavailableError(f"the image converter in {str(where)!r} has no usable {what} ({value!r})")
    return out  # type: ignore[return-value]


def _local_preset(folder: Path, info: TextModelInfo) -> tuple[int, int, tuple[float, float, float], tuple[float, float, float]]:
    """Image size, dim, scale and offset of a local preset folder, read from its JSON files (no TensorFlow)."""
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise WeightsUnavailableError(
            f"{str(folder)!r} is not a keras-hub preset folder (no config.json): pass the folder that "
            f"{info.family}Backbone.save_to_preset wrote, or leave weights out to use the published preset {info.preset!r}"
        )
    config = _read_json(folder / "config.json")
    cls = str(config.get("class_name", ""))
    if cls != f"{info.family}Backbone":
        raise WeightsUnavailableError(
            f"the preset in {str(folder)!r} holds a {cls or 'unknown model'}, not a {info.family}Backbone"
        )
    conv_path = folder / "image_converter.json"
    if not conv_path.is_file():
        raise WeightsUnavailableError(
            f"the preset in {str(folder)!r} has no image_converter.json: its image size and normalisation are unknown "
            f"(save the {info.family}ImageConverter to the preset too)"
        )
    conv = _read_json(conv_path).get("config", {})
    size = conv.get("image_size")
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1] and isinstance(size[0], int):
        side = int(size[0])
    else:
        raise WeightsUnavailableError(f"the image converter in {str(folder)!r} has image_size {size!r}, not a square")
    cfg = config.get("config", {})
    dim = cfg.get("projection_dim")  # CLIP projects both towers; SigLIP's vision tower ends at its hidden size
    if dim is None and isinstance(cfg.get("vision_encoder"), dict):
        dim = cfg["vision_encoder"].get("config", {}).get("hidden_dim")
    if not isinstance(dim, int) or dim < 1:
        raise WeightsUnavailableError(f"the preset in {str(folder)!r} has projection_dim {dim!r}")
    return side, dim, _triple(conv.get("scale"), "scale", folder), _triple(conv.get("offset"), "offset", folder)


def _fmt(values: Sequence[float]) -> str:
    return "(" + ",".join(f"{v:.7g}" for v in values) + ")"


class ClipEmbedder(Embedder):
    """An :class:`~revsearch.embedding.Embedder` of a CLIP-family model: image and text vectors in one space.

    Built by ``Embedder("clip-vit-b32", ...)`` (or :func:`revsearch.get_embedder`); a subclass, so
    everything that embeds images (indexing, search, duplicates, evaluation) works with it.

    Parameters
    ----------
    model : str
        A name of :data:`TEXT_MODELS`.
    weights : {"imagenet", "pretrained", None} or path, default "imagenet"
        ``"imagenet"``/``"pretrained"`` (the default of every model): the published preset, which
        keras-hub downloads from Kaggle into the kagglehub cache (``$KAGGLEHUB_CACHE``, default
        ``~/.cache/kagglehub``) the first time. A path: a local keras-hub preset folder (``config.json``,
        ``model.weights.h5``, ``image_converter.json``, ``tokenizer.json`` and ``assets/``), loaded with
        the same ``from_preset`` calls. ``None``: the architecture with seeded random weights (same
        speed, meaningless vectors, no text tower): for speed tests.
    precision, backend, cache_dir, openvino_hint
        As for :class:`~revsearch.embedding.Embedder`: the image tower runs on OpenVINO (converted
        once and cached) or Keras; the text tower on Keras. Default precision on OpenVINO: ``"float32"``
        (the CPU rule that picks bfloat16 was measured on the CNNs only); ``"bfloat16"`` on request.
    fit : {"crop", "stretch", "pad"}, optional
        Default: as the preset's own image converter does it: a centre crop for CLIP, the whole image
        resized (``"stretch"``) for SigLIP.
    fill : tuple of 3 int, ``"edge"`` or ``"mean"``, default black
        Padding colour with ``fit="pad"``.
    pooling : {None, "own"}
        The model pools itself (CLIP: the class token, projected; SigLIP: its attention-pooling head):
        only for symmetry with the other models.
    resolution : int, optional
        Must be the preset's image size (the position embeddings are learnt for it).
    scales : None
        Multi-scale descriptors are not offered for CLIP models.
    calibration : None
        int8 calibration is not offered for CLIP models yet.
    """

    def __init__(
        self,
        model: str = "clip-vit-b32",
        *,
        weights: str | os.PathLike | None = "imagenet",
        precision: str | None = None,
        fill: tuple[int, int, int] | str = (0, 0, 0),
        fit: str | None = None,
        preprocess: Any = None,
        name: str | None = None,
        pooling: str | None = None,
        resolution: int | None = None,
        scales: Sequence[int] | None = None,
        backend: str = "auto",
        cache_dir: str | os.PathLike | None = None,
        openvino_hint: str = "throughput",
        calibration: Any = None,
    ) -> None:
        key = str(model).lower()
        if key not in TEXT_MODELS:
            raise UnknownModelError(f"unknown CLIP model {model!r}: choose one of {', '.join(sorted(TEXT_MODELS))}")
        if preprocess is not None or name is not None:
            raise ValueError("preprocess and name apply to custom Keras models, not to CLIP models")
        if fit not in (None, "pad", "crop", "stretch"):
            raise ValueError(f"fit must be 'pad', 'crop' or 'stretch', not {fit!r}")
        if pooling not in (None, "own"):
            raise ValueError(f"a CLIP model pools itself (its class token): pooling must be left out, not {pooling!r}")
        if scales is not None and len(tuple(scales)) > 1:
            raise ValueError("multi-scale descriptors (scales) are not offered for CLIP models")
        _need_keras_hub()
        info = TEXT_MODELS[key]
        self.text_info = info
        if precision is not None and precision not in {p for ps in backends.PRECISIONS.values() for p in ps}:
            raise ValueError(f"unknown precision {precision!r}")
        if precision == "int8" or calibration is not None:
            raise ValueError(
                f"int8 (calibrated) precision is not offered for {key} yet: use precision='float32' or 'bfloat16'"
            )
        self._calibration_sources: Any = None  # int8 calibration (revsearch.backends): not for CLIP models
        self._calibration_id: str | None = None
        self.backend = backends.resolve_backend(backend, precision)
        self._chosen = backend == "auto" and self.backend == "openvino"
        self._precision_given = precision is not None
        if precision is None:
            # OpenVINO: float32. The CPU precision rule (bfloat16/int8 where they pass) was measured on the CNNs'
            # retrieval quality; nothing was measured for CLIP-family models, so they keep float32 unless asked.
            # Keras: the backend's default (mixed precision on a GPU, float32 on a CPU).
            precision = "float32" if self.backend == "openvino" else backends.default_precision(self.backend)
            precision = precision if precision in ("float32", "bfloat16", "float16") else "float32"
        self.precision = precision
        if self.precision not in backends.PRECISIONS[self.backend]:
            raise ValueError(
                f"the {self.backend} backend does not run precision {self.precision!r}: "
                f"choose one of {', '.join(backends.PRECISIONS[self.backend])}"
            )
        self.batch_size = 32
        if self.backend == "keras" and self.precision != "float32":
            devices = backends.gpu_devices()
            if devices:
                self.batch_size = backends.gpu_policy(devices).batch_size
        self.cache_dir = cache_dir
        self.openvino_hint = openvino_hint
        self._ov = None
        self.fill = fill
        self.fit = fit or TEXT_MODELS[key].fit
        self._lock = threading.Lock()
        self._custom_preprocess = None
        self._info = None
        self._keras_model = None
        self._backbone: Any = None
        self._text_fn: Any = None
        self._preprocessor: Any = None
        self._scale_embedders = None
        self.name = key
        self.pooling = "own"
        # where the weights come from: the published preset, a local preset folder, or random
        if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
            self._source: str | None = None
            self._weights_arg = None
            self.weights = "none"
            side, dim, scale, offset = info.size, info.dim, info.scale, info.offset
        elif isinstance(weights, str) and weights.lower() in ("imagenet", "pretrained", f"keras-hub:{info.preset}"):
            self._source = info.preset
            self._weights_arg = "imagenet"
            self.weights = f"keras-hub:{info.preset}"
            side, dim, scale, offset = info.size, info.dim, info.scale, info.offset
        else:
            folder = Path(weights).expanduser()
            if not folder.exists():
                raise WeightsUnavailableError(
                    f"weights {str(weights)!r} is neither 'imagenet' (the published preset {info.preset!r}) nor an "
                    "existing keras-hub preset folder"
                )
            side, dim, scale, offset = _local_preset(folder, info)
            self._source = str(folder.resolve())
            self._weights_arg = folder
            self.weights = folder_id(folder)
        if resolution is not None and resolution != side:
            raise ValueError(f"{key} takes {side}x{side} images (its position embeddings are learnt for it), not {resolution}")
        if scales is not None and tuple(scales) != (side,):
            raise ValueError(f"{key} takes {side}x{side} images, not scales {list(scales)}")
        self.dim = dim
        self.input_size = self.resolution = side
        self.scales = (side,)
        self.scale, self.offset = scale, offset

    # ------------------------------------------------------------------ description
    @property
    def preprocessing(self) -> str:
        """Every preprocessing step, with the preset's normalisation constants (recorded in the index)."""
        fill = self.fill if isinstance(self.fill, str) else "rgb({},{},{})".format(*self.fill)
        norm = f"keras_hub.{self.text_info.family}ImageConverter:scale={_fmt(self.scale)}:offset={_fmt(self.offset)}"
        return f"{self.fit}:{fill}/resize:{self.input_size}:bicubic/{norm}/pool:own"

    @property
    def spec(self) -> dict[str, Any]:
        """As :attr:`Embedder.spec`, plus ``preset`` (the keras-hub preset or folder) and ``text`` (the text tower)."""
        out = super().spec
        out["preset"] = self.text_info.preset if self._source is None or self._weights_arg == "imagenet" else self._source
        out["text"] = "none" if self._source is None else f"keras_hub.{self.text_info.family}Preprocessor"
        return out

    def __repr__(self) -> str:
        return f"ClipEmbedder(model={self.name!r}, weights={self.weights!r}, dim={self.dim}, backend={self.backend!r})"

    def variant(self, *, backend: str | None = None, precision: str | None = None) -> Embedder:
        """The same model, weights and preprocessing on another backend or precision (see :meth:`Embedder.variant`)."""
        if backend is None:
            backend = self.backend if precision is None or precision in backends.PRECISIONS[self.backend] else "auto"
        new_backend = backends.resolve_backend(backend, precision)
        if precision is None and new_backend == self.backend:
            precision = self.precision
        if new_backend == self.backend and precision == self.precision:
            return self
        return get_embedder(
            self.name, weights=self._weights_arg, precision=precision, fit=self.fit, fill=self.fill, backend=new_backend
        )

    # ------------------------------------------------------------------ the models
    def _load_backbone(self) -> Any:
        """The keras-hub backbone: ``<Family>Backbone.from_preset`` (or the architecture, random weights)."""
        if self._backbone is not None:
            return self._backbone
        import keras
        import keras_hub

        family = self.text_info.family
        cls = getattr(keras_hub.models, f"{family}Backbone")
        dtype = f"mixed_{self.precision}" if self.backend == "keras" and self.precision != "float32" else None
        if self._source is None:
            arch = self.text_info.architecture
            py_state, np_state = random.getstate(), np.random.get_state()
            try:
                vision = getattr(keras_hub.models, f"{family}VisionEncoder")(**arch["vision"], dtype=dtype)
                text = getattr(keras_hub.models, f"{family}TextEncoder")(**arch["text"], dtype=dtype)
                extra = {"projection_dim": arch["projection_dim"]} if "projection_dim" in arch else {}
                backbone = seed_random_weights(cls(vision, text, dtype=dtype, **extra))
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
        else:
            backbone = self._from_preset(cls, dtype=dtype)
            conv = self._from_preset(getattr(keras_hub.layers, f"{family}ImageConverter"))
            got = (_triple(conv.scale, "scale", Path(self._source)), _triple(conv.offset, "offset", Path(self._source)))
            if not (np.allclose(got[0], self.scale, rtol=1e-5) and np.allclose(got[1], self.offset, rtol=1e-5)):
                raise ModelMismatchError(
                    f"the image converter of preset {self._source!r} normalises with scale {_fmt(got[0])}, offset "
                    f"{_fmt(got[1])}; revsearch records {_fmt(self.scale)}, {_fmt(self.offset)} for {self.name}: "
                    "the preset changed upstream; pass a preset folder (weights=DIR) to use it"
                )
        del keras
        self._backbone = backbone
        return backbone

    def _from_preset(self, cls: Any, **kwargs: Any) -> Any:
        """``cls.from_preset(source)`` with one clear error when the published preset cannot be fetched."""
        assert self._source is not None
        try:
            return cls.from_preset(self._source, **{k: v for k, v in kwargs.items() if v is not None})
        except (OSError, ConnectionError, TimeoutError) as e:  # requests' and kagglehub's errors are OSErrors
            if Path(self._source).is_dir():
                raise WeightsUnavailableError(f"cannot load the keras-hub preset in {self._source!r}: {e}") from e
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise WeightsUnavailableError(
                f"could not fetch the keras-hub preset {self._source!r} of {self.name} ({type(e).__name__}: {first[:200]}). "
                f"keras-hub downloads it from Kaggle (kaggle://keras/{self.text_info.family.lower()}/keras/{self._source}) "
                "into the kagglehub cache "
                f"({os.environ.get('KAGGLEHUB_CACHE', '~/.cache/kagglehub')}). Offline: on a machine with internet run "
                f"keras_hub.models.{self.text_info.family}Backbone.from_preset({self._source!r}).save_to_preset(DIR) "
                f"(and the same for {self.text_info.family}ImageConverter and {self.text_info.family}Tokenizer), copy DIR "
                "here and pass it: weights=DIR (--weights DIR)."
            ) from e

    def _build(self) -> Any:
        """The image tower as one Keras model: (n, S, S, 3) RGB 0..255 -> normalised -> projected (n, dim)."""
        import keras

        backbone = self._load_backbone()
        s = self.input_size
        inp = keras.Input((s, s, 3), name="images_0_255")
        scale = np.asarray(self.scale, np.float32).reshape(1, 1, 1, 3)
        offset = np.asarray(self.offset, np.float32).reshape(1, 1, 1, 3)
        x = keras.layers.Rescaling(scale=scale, offset=offset, name="converter_normalisation")(inp)
        out = backbone.get_vision_embeddings(x)
        out = keras.ops.cast(out, "float32")
        return keras.Model(inp, out, name=f"{self.name.replace('-', '_')}_image_tower")

    def _openvino_model(self) -> backends.OpenVINOModel:
        if self._ov is None:
            with self._lock:
                if self._ov is None:
                    key = {"model": self.name, "architecture": f"keras_hub.{self.text_info.family}Backbone/"
                           f"get_vision_embeddings/{self.preprocessing}", "weights": self.weights, "dim": self.dim}
                    self._ov = backends.OpenVINOModel(
                        key, lambda: self.keras_model, self.input_size, "none", self.precision,
                        hint=self.openvino_hint, cache_dir=self.cache_dir,
                    )  # fmt: skip
        return self._ov

    # ------------------------------------------------------------------ text
    @property
    def sequence_length(self) -> int:
        """Tokens per text query (longer ones are cut): the preset's preprocessor's."""
        return int(self._text_preprocessor().sequence_length)

    def _text_preprocessor(self) -> Any:
        if self._source is None:
            raise WeightsUnavailableError(
                f"{self.name} with random weights (weights=None) has no tokenizer: text queries need the "
                "preset (weights='imagenet' or a local preset folder)"
            )
        if self._preprocessor is None:
            with self._lock:
                if self._preprocessor is None:
                    import keras_hub

                    # the text tower's position embeddings cap the length: pack to exactly that many tokens
                    length = int(self._load_backbone().text_encoder.max_sequence_length)
                    cls = getattr(keras_hub.models, f"{self.text_info.family}Preprocessor")
                    pre = self._from_preset(cls, sequence_length=length)
                    pre.image_converter = None  # text only: images are prepared by the image path
                    self._preprocessor = pre
        return self._preprocessor

    def tokenize(self, texts: str | Sequence[str]) -> np.ndarray:
        """Token ids of text queries, as the text tower reads them.

        Parameters
        ----------
        texts : str or sequence of str

        Returns
        -------
        numpy.ndarray
            Shape (n, L) int32, L = :attr:`sequence_length`: a start token, the text's tokens (cut to
            fit), the end token, then padding.
        """
        items = clean_texts(texts)
        out = self._text_preprocessor()({"prompts": items, "images": None})
        ids = out["token_ids"] if isinstance(out, dict) else out[0]["token_ids"]
        return np.asarray(ids, dtype=np.int32)

    def embed_text(self, texts: str | Sequence[str]) -> np.ndarray:
        """Embed text queries into the image space.

        Parameters
        ----------
        texts : str or sequence of str
            E.g. ``"a red car at night"``.

        Returns
        -------
        numpy.ndarray
            Shape (dim,) for one text, (n, dim) for a list; float32, L2-normalised.
        """
        single = isinstance(texts, str)
        ids = self.tokenize(texts)
        backbone = self._load_backbone()
        if self._text_fn is None:
            import keras

            with self._lock:
                if self._text_fn is None:
                    tok = keras.Input((ids.shape[1],), dtype="int32", name="token_ids")
                    model = keras.Model(tok, keras.ops.cast(backbone.get_text_embeddings(tok), "float32"))
                    self._text_fn = model
        vecs = l2_normalize(np.asarray(self._text_fn.predict_on_batch(ids), dtype=np.float32))
        return vecs[0] if single else vecs


def clean_texts(texts: str | Sequence[str]) -> list[str]:
    """Text queries checked and with their white space collapsed.

    Parameters
    ----------
    texts : str or sequence of str

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        For no text, an empty one, or one that is not a string.
    """
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items:
        raise ValueError("no text query given")
    for t in items:
        if not isinstance(t, str):
            raise ValueError(f"a text query must be a string, not {type(t).__name__}")
        if not t.strip():
            raise ValueError("the text query is empty: describe the photos to find, e.g. 'a red car at night'")
    return [" ".join(t.split()) for t in items]


def embed_text(embedder: Embedder, texts: str | Sequence[str]) -> np.ndarray:
    """Embed text queries with an embedder's text tower, or say in one line why it has none.

    Parameters
    ----------
    embedder : Embedder
    texts : str or sequence of str

    Returns
    -------
    numpy.ndarray
        Shape (dim,) or (n, dim), float32, L2-normalised.

    Raises
    ------
    ModelMismatchError
        If the embedder's model is an image-only model (a CNN): it has no text tower.
    """
    if not isinstance(embedder, ClipEmbedder):
        raise ModelMismatchError(
            f"{embedder.name} is an image model: it cannot embed words. Text queries need an index built with a CLIP "
            f"model ({', '.join(sorted(TEXT_MODELS))}), e.g. revsearch index PHOTOS NEW_VECTOR_DIR --model clip-vit-b32"
        )
    return embedder.embed_text(texts)
