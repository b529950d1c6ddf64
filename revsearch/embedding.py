"""Models and embedding: from images to L2-normalised vectors.

An :class:`Embedder` is a model plus the exact preprocessing it needs. Its :attr:`Embedder.spec`
records both, and the index stores it, so a query is always embedded the way the collection
was. TensorFlow/Keras is imported on first use, never at ``import revsearch``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import backends
from .errors import ImageReadError, RevsearchError, UnknownModelError, WeightsUnavailableError
from .images import ImageSource, SkippedFile, prepare_image
from .models import DEFAULT_FIT, DEFAULT_POOLING, MODELS, TEXT_MODELS, ModelInfo
from .reader import FileInfo, read_files
from .safety import display_name

logger = logging.getLogger(__name__)

__all__ = [
    "GEM_P",
    "MODELS",
    "Embedder",
    "EmbeddedBatch",
    "FileInfo",
    "folder_id",
    "get_embedder",
    "l2_normalize",
    "preprocessing_options",
    "resize_prepared",
    "RMAC_LEVELS",
    "rmac_regions",
]

#: Seed used to initialise a model built with ``weights=None``, so two processes build the same model.
RANDOM_WEIGHTS_SEED = 1234
#: Exponent of generalised-mean (GeM) pooling, ``pooling="gem"``: (mean of x**p over positions)**(1/p).
GEM_P = 3.0
#: Smallest and largest input side accepted by ``resolution`` / ``scales``.
MIN_RESOLUTION, MAX_RESOLUTION = 32, 1024


def _check_scales(resolution: int | None, scales: Sequence[int] | None, default: int) -> tuple[int, ...]:
    """The input sides to embed at, largest first, from ``resolution`` / ``scales``."""

    def side(v: Any, what: str) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not MIN_RESOLUTION <= v <= MAX_RESOLUTION:
            raise ValueError(f"{what} must be whole numbers of pixels from {MIN_RESOLUTION} to {MAX_RESOLUTION}; got {v!r}")
        return int(v)

    if scales is None:
        return (side(resolution, "resolution") if resolution is not None else default,)
    if isinstance(scales, (str, bytes)) or len(scales) == 0:
        raise ValueError(f"scales must be a non-empty sequence of input sides, e.g. (224, 320); got {scales!r}")
    out = tuple(sorted({side(v, "scales") for v in scales}, reverse=True))
    if len(out) != len(scales):
        raise ValueError(f"scales must not repeat a side; got {list(scales)}")
    if resolution is not None and side(resolution, "resolution") != out[0]:
        raise ValueError(f"resolution ({resolution}) must be the largest of scales {list(scales)} (or left out)")
    return out


def resize_prepared(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a prepared image (as :meth:`Embedder.prepare` returns it) to another square side.

    Bicubic, as :func:`revsearch.images.prepare_image`; used for the smaller scales of multi-scale
    descriptors.

    Parameters
    ----------
    image : numpy.ndarray
        Shape (S, S, 3), float32 RGB 0..255.
    size : int
        The new side.

    Returns
    -------
    numpy.ndarray
        Shape (size, size, 3), float32 RGB 0..255.
    """
    from PIL import Image

    arr = np.asarray(image)
    if arr.shape[:2] == (size, size):
        return np.asarray(arr, dtype=np.float32)
    img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    return np.asarray(img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0), dtype=np.float32)


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Scale vectors to unit length.

    Parameters
    ----------
    x : numpy.ndarray
        Shape (n, d) or (d,).
    axis : int, default -1

    Returns
    -------
    numpy.ndarray
        float32, same shape; all-zero vectors stay zero.

    Notes
    -----
    The norm is summed in float64, and any non-zero vector is scaled to unit length however
    short it is: a model (e.g. one with random weights) may output vectors of norm 1e-18.
    """
    x = np.asarray(x, dtype=np.float32)
    moved = np.moveaxis(x, axis, -1)
    sq = np.einsum("...i,...i->...", moved, moved, dtype=np.float64)  # no float64 copy of x
    norm = np.expand_dims(np.sqrt(sq).astype(np.float32), axis)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm != 0)


@dataclass
class EmbeddedBatch:
    """One batch out of :meth:`Embedder.embed_files`.

    Attributes
    ----------
    indices : list of int
        Positions (in the ``paths`` given) of the images embedded in this batch.
    vectors : numpy.ndarray
        Shape (len(indices), dim), float32, L2-normalised.
    infos : list of FileInfo
        The files' size, mtime and hash, aligned with ``indices``.
    skipped : list of SkippedFile
        Files met since the previous batch that could not be read.
    """

    indices: list[int]
    vectors: np.ndarray
    infos: list[FileInfo]
    skipped: list[SkippedFile] = field(default_factory=list)


def weights_id(weights: str | os.PathLike | None) -> str:
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return "none"
    if isinstance(weights, str) and weights == "imagenet":
        return "imagenet"
    p = Path(weights)
    if p.is_dir() and (p / "config.json").is_file():  # a keras-hub preset folder (revsearch.clip)
        return folder_id(p)
    if not p.is_file():
        raise WeightsUnavailableError(
            f"weights file {str(p)!r} does not exist: pass weights='imagenet', weights=None, "
            "or the path of a Keras weights file (.h5 / .weights.h5)"
        )
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"file:{p.name}:sha256:{h.hexdigest()[:16]}"


def folder_id(folder: str | os.PathLike) -> str:
    """The weights id of a weights folder (a keras-hub preset): ``file:<name>:sha256:<hash of its files>``.

    Parameters
    ----------
    folder : path
        Every regular file under it (names and contents, in sorted order) goes into the hash.

    Returns
    -------
    str
    """
    p = Path(folder)
    h = hashlib.sha256()
    for f in sorted(f for f in p.rglob("*") if f.is_file() and not f.is_symlink()):
        h.update(f.relative_to(p).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return f"file:{p.name}:sha256:{h.hexdigest()[:16]}"


def _family(name: str) -> type | None:
    """The Embedder subclass of a catalogue model implemented in a module of its own, or None.

    The image-and-text models of :data:`revsearch.models.TEXT_MODELS` are built by
    :class:`revsearch.clip.ClipEmbedder`, which builds on this module: it is reached here by name at
    run time (a plug-in named by the catalogue), not imported at the top. Importing revsearch.clip
    loads no TensorFlow or keras-hub.
    """
    if name not in TEXT_MODELS:
        return None
    import importlib

    return importlib.import_module(f"{__package__}.clip").ClipEmbedder  # type: ignore[no-any-return]


def _keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


class Embedder:
    """A model and its preprocessing, turning images into L2-normalised vectors.

    Parameters
    ----------
    model : str or keras.Model, default "resnet50"
        A name from :data:`MODELS` (``"resnet50"``, ``"mobilenet"``, ``"resnet50-seed"``), or a Keras
        model whose output has shape (batch, dim) (one vector per image).
    weights : {"imagenet", None} or path, default "imagenet"
        For named models: ImageNet weights (downloaded by Keras to its cache, ``$KERAS_HOME/models``),
        ``None`` for a seeded random initialisation (same speed, meaningless features: for tests and
        speed benchmarks), or the path of a Keras weights file.
    precision : {"float32", "bfloat16", "float16", "int8"}, optional
        Compute precision of the model (the vectors are float32 either way, and comparable whatever
        the precision). Default: the backend's (:func:`revsearch.backends.default_precision`): on
        OpenVINO the fastest precision the CPU runs natively among those within 0.005 mAP of float32
        on every dataset measured (bfloat16 on CPUs with AVX512-BF16 or AMX, else float32); on Keras
        float16/bfloat16 mixed precision on a GPU (:func:`revsearch.backends.gpu_policy`), else
        ``"float32"``. On Keras, ``"bfloat16"``/``"float16"`` build the model under Keras's
        ``mixed_bfloat16``/``mixed_float16`` policy; OpenVINO runs ``"float32"``, ``"bfloat16"`` and
        ``"int8"`` (NNCF post-training quantization, calibrated on ``calibration``).
    calibration : sequence of ImageSource or str, optional
        With ``precision="int8"``: the calibration photos (at most
        :data:`revsearch.backends.DEFAULT_CALIBRATION_SIZE`, a seeded sample of them, see
        :meth:`calibrate`), or the :attr:`calibration_id` of a calibration made before (an index
        records it: its cached int8 model is reused; where that model is not in the cache, the
        embedder runs the default float precision instead, with a warning). Building an index
        calibrates an int8 embedder on a seeded sample of the collection when none is given.
    backend : {"auto", "keras", "openvino"}, default "auto"
        What runs the model: Keras (TensorFlow), or OpenVINO (``pip install "revsearch[openvino]"``;
        converted from the Keras model once and cached on disk, see :mod:`revsearch.backends`).
        ``"auto"``: OpenVINO on CPUs when installed, Keras on GPUs. The backend is recorded in the
        index, but does not restrict searching: vectors of both backends are comparable.
    cache_dir : path, optional
        Where OpenVINO keeps converted and compiled models (default
        :func:`revsearch.backends.default_cache_dir`).
    openvino_hint : {"throughput", "latency"}, default "throughput"
        OpenVINO's ``PERFORMANCE_HINT``: ``"throughput"`` splits each batch over parallel streams.
    fill : tuple of 3 int, ``"edge"`` or ``"mean"``, default black
        Colour used to pad images to a square (with ``fit="pad"``).
    fit : {"crop", "pad"}, optional
        Centre-crop to a square, or pad to a square (as the original project). Default ``"crop"``
        for ``"resnet50"`` and ``"mobilenet"``; ``"pad"`` for ``"resnet50-seed"`` (the original
        pipeline) and for a custom Keras model.
    pooling : {"gem", "avg", "max", "rmac"}, optional
        For named models: how the last convolutional block (7x7 positions) becomes one vector:
        generalised mean (``"gem"``, p = :data:`GEM_P`), average, maximum, or regional maximum
        (``"rmac"``, R-MAC: :func:`rmac_regions` max-pooled, each L2-normalised, summed; no
        whitening; measured for instance collections, see docs/quality.md). Default
        :data:`DEFAULT_POOLING` (``"avg"``) for every named model. A custom Keras model pools itself.
    preprocess : callable, optional
        For a custom Keras model: maps a float32 batch (n, S, S, 3) of RGB 0..255 to the model's
        input. Defaults to the identity.
    name : str, optional
        For a custom Keras model: the name recorded in the index (default ``"keras:<model.name>"``).
    resolution : int, optional
        For named models: side of the square input in pixels (the short side with ``fit="crop"``),
        default the model's own (224; 384 for ``"efficientnetv2-s"``). The backbones are fully
        convolutional: a larger input keeps more detail with the same pre-trained weights, at about
        (resolution / 224)**2 the cost.
    scales : sequence of int, optional
        For named models: multi-scale descriptors. The image is prepared at the largest scale, resized
        (bicubic) to each smaller one, embedded and pooled at each, and the L2-normalised descriptors are
        summed and L2-normalised again. ``scales=(224, 320)`` costs about the sum of the single-scale costs.
        A single scale is the same as ``resolution``.

    Notes
    -----
    The Keras model is built on first use, not in the constructor.

    The defaults (centre crop, average pooling, 224) were chosen by a rule over four sets of real
    photos (``benchmarks/quality.py``; README, Quality): best mean mAP, within 0.03 of the best on
    every set. Crop + GeM, the earlier default, wins on Oxford 17 Flowers alone but loses 0.056 mAP
    on a held-out category set. An index records its pipeline, so indexes built with an earlier
    default are still searched with theirs.
    """

    def __new__(cls, model: Any = "resnet50", *args: Any, **kwargs: Any) -> Embedder:
        # A CLIP-family name builds the subclass with an image and a text tower (revsearch.clip).
        if cls is Embedder and isinstance(model, str) and model.lower() not in MODELS:
            family = _family(model.lower())
            if family is not None:
                return super().__new__(family)
        return super().__new__(cls)

    def __init__(
        self,
        model: Any = "resnet50",
        *,
        weights: str | os.PathLike | None = "imagenet",
        precision: str | None = None,
        fill: tuple[int, int, int] | str = (0, 0, 0),
        fit: str | None = None,
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
        name: str | None = None,
        pooling: str | None = None,
        resolution: int | None = None,
        scales: Sequence[int] | None = None,
        backend: str = "auto",
        cache_dir: str | os.PathLike | None = None,
        openvino_hint: str = "throughput",
        calibration: Sequence[ImageSource] | str | None = None,
    ) -> None:
        if precision is not None and precision not in _ALL_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(_ALL_PRECISIONS)} (or None), not {precision!r}")
        if fit not in (None, "pad", "crop"):
            raise ValueError(f"fit must be 'pad' or 'crop', not {fit!r}")
        if pooling not in (None, "gem", "avg", "max", "rmac"):
            raise ValueError(f"pooling must be 'gem', 'avg', 'max' or 'rmac', not {pooling!r}")
        self.backend = backends.resolve_backend(backend, precision)
        self._chosen = backend == "auto" and self.backend == "openvino"  # may fall back to Keras
        self._precision_given = precision is not None
        if precision is None:
            precision = "float32" if self.backend == "keras" and not isinstance(model, str) else None
        self.precision: str = precision or backends.default_precision(self.backend)
        if self.precision not in backends.PRECISIONS[self.backend]:
            raise ValueError(
                f"the {self.backend} backend does not run precision {self.precision!r}: "
                f"choose one of {', '.join(backends.PRECISIONS[self.backend])}"
            )
        if self.backend == "keras" and self.precision != "float32" and not isinstance(model, str):
            raise ValueError(
                "precision applies to a custom Keras model on the OpenVINO backend only: build your model under "
                f"keras.config.set_dtype_policy('mixed_{self.precision}') instead"
            )
        #: Images per model call when none is given: the GPU policy's on a GPU, else 32.
        self.batch_size = 32
        if self.backend == "keras" and self.precision != "float32":
            devices = backends.gpu_devices()
            if devices:
                self.batch_size = backends.gpu_policy(devices).batch_size
        self.cache_dir = cache_dir
        self.openvino_hint = openvino_hint
        self._ov: backends.OpenVINOModel | None = None
        self.fill = fill
        self.fit = fit
        self._lock = threading.Lock()
        self._calibration_sources: list[ImageSource] | None = None
        self._calibration_id: str | None = None
        if isinstance(calibration, str):
            self._calibration_id = calibration
        elif calibration is not None:
            self.calibrate(calibration)
        self._custom_preprocess = preprocess
        if isinstance(model, str):
            key = model.lower()
            if key not in MODELS:
                raise UnknownModelError(
                    f"unknown model {model!r}: choose one of {', '.join(sorted([*MODELS, *TEXT_MODELS]))}, "
                    "or pass a Keras model whose output is one vector per image"
                )
            self.name = key
            self._info: ModelInfo | None = MODELS[key]
            self._keras_model: Any = None
            self.dim = self._info.dim
            self.scales = _check_scales(resolution, scales, self._info.size)
            self.input_size = self.scales[0]
            self._weights_arg = weights
            self.weights = weights_id(weights)
        else:
            if not (hasattr(model, "predict_on_batch") and hasattr(model, "input_shape")):
                raise UnknownModelError(
                    f"model must be a name ({', '.join(sorted(MODELS))}) or a Keras model; "
                    f"got {type(model).__name__}"
                )
            out = tuple(model.output_shape)
            if len(out) != 2 or out[-1] is None:
                raise ValueError(
                    f"the Keras model's output must be one vector per image, shape (batch, dim); "
                    f"it is {out}: add pooling (e.g. pooling='avg') or a Flatten layer"
                )
            inp = tuple(model.input_shape)
            if len(inp) != 4 or inp[1] is None or inp[1] != inp[2] or inp[3] != 3:
                raise ValueError(f"the Keras model's input must be (batch, S, S, 3) with a fixed S; it is {inp}")
            self.name = name or f"keras:{model.name}"
            self._info = None
            self._keras_model = model
            self.dim = int(out[-1])
            self.input_size = int(inp[1])
            if resolution is not None or scales is not None:
                raise ValueError("resolution and scales apply to named models; a custom Keras model has a fixed input size")
            self.scales = (self.input_size,)
            self._weights_arg = None
            h = hashlib.sha256()
            for w in model.get_weights():
                h.update(np.ascontiguousarray(w).tobytes())
            self.weights = f"sha256:{h.hexdigest()[:16]}"
            if pooling is not None:
                raise ValueError("pooling applies to named models; a custom Keras model pools itself")
        measured = self._info is not None and self._info.preprocess != "raw-bgr"  # not the original pipeline
        self.fit = fit if fit is not None else (DEFAULT_FIT if measured else "pad")
        own = None if self._info is None else (self._info.pooling or (DEFAULT_POOLING if measured else "avg"))
        self.pooling: str | None = pooling or own
        self.resolution = self.input_size
        self._scale_embedders: list[Embedder] | None = None

    # ------------------------------------------------------------------ description
    @property
    def preprocessing(self) -> str:
        """A string naming every preprocessing step (recorded in the index)."""
        fill = self.fill if isinstance(self.fill, str) else "rgb({},{},{})".format(*self.fill)
        if self._info is None:
            fn = self._custom_preprocess
            norm = "identity" if fn is None else getattr(fn, "__qualname__", type(fn).__name__)
        elif self._info.preprocess == "raw-bgr":
            norm = "raw-bgr-0-255"
        else:
            norm = f"keras.applications.{self._info.module}.preprocess_input"
        pool = {None: "", "avg": "", "max": "/pool:max", "gem": f"/pool:gem:p={GEM_P:g}",
                "rmac": f"/pool:rmac:L={RMAC_LEVELS}"}[self.pooling]
        multi = "" if len(self.scales) == 1 else "/scales:" + "+".join(map(str, self.scales)) + ":sum-l2"
        return f"{self.fit}:{fill}/resize:{self.input_size}:bicubic/{norm}{pool}{multi}"

    @property
    def spec(self) -> dict[str, Any]:
        """What made the vectors: ``model``, ``preprocessing``, ``dim``, ``weights``, ``precision``, ``backend``.

        ``precision`` and ``backend`` are recorded for information: vectors made with another
        precision or backend are comparable (the models agree within rounding).
        """
        out = {
            "model": self.name,
            "preprocessing": self.preprocessing,
            "dim": self.dim,
            "weights": self.weights,
            "precision": self.precision,
            "backend": self.backend,
        }
        if self.precision == "int8" and self._calibration_id:
            out["calibration"] = self._calibration_id
        return out

    # ------------------------------------------------------------------ int8 calibration
    @property
    def calibration_id(self) -> str | None:
        """What identifies the int8 calibration photos (``"sha256:..."`` of their contents), or None."""
        return self._calibration_id

    def calibrate(
        self,
        sources: Sequence[ImageSource],
        *,
        size: int = backends.DEFAULT_CALIBRATION_SIZE,
        seed: int = 0,
    ) -> Embedder:
        """Set the photos an int8 model is calibrated on (a seeded sample of at most ``size`` of them).

        The sample is drawn by position from ``sources`` (give them in a stable order, e.g. sorted
        paths), so the same collection always gives the same calibration, and so the same cached
        model. Nothing is read until the int8 model is needed and not in the cache, except the
        files' bytes, hashed into :attr:`calibration_id`.

        Parameters
        ----------
        sources : sequence of ImageSource
            Paths, bytes, arrays or PIL images.
        size : int, default :data:`revsearch.backends.DEFAULT_CALIBRATION_SIZE`
        seed : int, default 0

        Returns
        -------
        Embedder
            ``self``.
        """
        items = list(sources)
        if not items:
            raise ValueError("calibration needs at least one image")
        if len(items) > size:
            pick = np.sort(np.random.default_rng(seed).choice(len(items), size=int(size), replace=False))
            items = [items[i] for i in pick]
        h = hashlib.sha256()
        for item in items:
            if isinstance(item, (str, os.PathLike)):
                data = Path(item).read_bytes()
            elif isinstance(item, (bytes, bytearray, memoryview)):
                data = bytes(item)
            elif isinstance(item, np.ndarray):
                data = np.ascontiguousarray(item).tobytes() + repr(item.shape).encode()
            else:  # a PIL image
                data = np.asarray(item).tobytes() + repr(getattr(item, "size", None)).encode()
            h.update(hashlib.sha256(data).digest())
        new_id = f"sha256:{h.hexdigest()[:24]}:n={len(items)}"
        with self._lock:
            if new_id != self._calibration_id:
                self._ov = None  # another calibration: another model
            self._calibration_sources, self._calibration_id = items, new_id
        return self

    @property
    def needs_calibration(self) -> bool:
        """Whether an int8 embedder lacks both its cached model and the photos to make it."""
        if self.precision != "int8" or self.backend != "openvino" or self._calibration_sources is not None:
            return False
        return self._calibration_id is None or not self._openvino_model().cached

    def _calibration_batch(self) -> np.ndarray:
        assert self._calibration_sources is not None
        out = []
        for s in self._calibration_sources:
            try:
                out.append(self.prepare(s))
            except ImageReadError as e:  # an unreadable photo does not calibrate anything
                logger.warning("calibration: skipped %s", e)
        if not out:
            raise backends.CalibrationUnavailableError("none of the calibration photos could be read")
        return np.stack(out)

    def __repr__(self) -> str:
        return (
            f"Embedder(model={self.name!r}, weights={self.weights!r}, dim={self.dim}, "
            f"precision={self.precision!r}, backend={self.backend!r})"
        )

    def variant(self, *, backend: str | None = None, precision: str | None = None) -> Embedder:
        """The same model, weights and preprocessing on another backend or precision.

        Parameters
        ----------
        backend : {"auto", "keras", "openvino"}, optional
            Default: this embedder's.
        precision : str, optional
            Default: this embedder's if the backend stays the same, else the new backend's default.

        Returns
        -------
        Embedder
            ``self`` if nothing changes.
        """
        if backend is None:  # keep this one's backend, unless it cannot run the precision asked for
            backend = self.backend if precision is None or precision in backends.PRECISIONS[self.backend] else "auto"
        new_backend = backends.resolve_backend(backend, precision)
        if precision is None and new_backend == self.backend:
            precision = self.precision
        if new_backend == self.backend and precision == self.precision:
            return self
        calibration = self._calibration_sources or self._calibration_id
        if self._info is None:
            return Embedder(
                self._keras_model, precision=precision, fill=self.fill, fit=self.fit, preprocess=self._custom_preprocess,
                name=self.name, backend=new_backend, cache_dir=self.cache_dir, openvino_hint=self.openvino_hint,
                calibration=calibration if precision == "int8" else None,
            )  # fmt: skip
        return get_embedder(
            self.name, weights=self._weights_arg, precision=precision, fit=self.fit, fill=self.fill,
            pooling=self.pooling, backend=new_backend, scales=self.scales,
            calibration=calibration if precision == "int8" else None,
        )  # fmt: skip

    # ------------------------------------------------------------------ multi-scale
    def scale_embedders(self) -> list[Embedder]:
        """One single-scale embedder per scale of :attr:`scales` (largest first): ``[self]`` for one scale.

        Returns
        -------
        list of Embedder
        """
        if len(self.scales) == 1:
            return [self]
        if self._scale_embedders is None:
            with self._lock:
                if self._scale_embedders is None:
                    self._scale_embedders = [
                        Embedder(self.name, weights=self._weights_arg, precision=self.precision, fill=self.fill,
                                 fit=self.fit, pooling=self.pooling, resolution=s, backend=self.backend,
                                 cache_dir=self.cache_dir, openvino_hint=self.openvino_hint,
                                 calibration=(self._calibration_sources or self._calibration_id)
                                 if self.precision == "int8" else None)
                        for s in self.scales
                    ]
        return self._scale_embedders

    def _embed_multiscale(self, batch: np.ndarray) -> np.ndarray:
        """Sum of the L2-normalised descriptors of a prepared (n, S, S, 3) batch at every scale, L2-normalised."""
        total = np.zeros((len(batch), self.dim), np.float32)
        for emb in reversed(self.scale_embedders()):  # smaller scales first: ``batch`` is given up last
            if emb.input_size == self.input_size:
                part = emb._embed_own_batch(batch)
            else:
                part = emb._embed_own_batch(np.stack([resize_prepared(im, emb.input_size) for im in batch]))
            total += part
        return l2_normalize(total)

    @property
    def weights_path(self) -> Path | None:
        """The weights file a named model was built from (absolute), or None (ImageNet, random, custom model)."""
        if not self.weights.startswith("file:") or self._weights_arg is None:
            return None
        return Path(self._weights_arg).resolve()

    # ------------------------------------------------------------------ the Keras model
    @property
    def keras_model(self) -> Any:
        """The Keras model, built (and its weights loaded) on first access (with several
        :attr:`scales`: every scale's model is built; the largest scale's is returned)."""
        if len(self.scales) > 1:
            return [e.keras_model for e in self.scale_embedders()][0]
        if self._keras_model is None:
            with self._lock:
                if self._keras_model is None:
                    self._keras_model = self._build()
        return self._keras_model

    def _build(self) -> Any:
        base = self._build_backbone()
        if self.pooling == "rmac":
            return _rmac_model(base)
        if self.pooling != "gem":
            return base
        import keras
        from keras import ops

        x = ops.maximum(ops.cast(base.output, "float32"), 1e-6)
        x = ops.power(ops.mean(ops.power(x, GEM_P), axis=(1, 2)), 1.0 / GEM_P)
        return keras.Model(base.input, x, name=f"{base.name}_gem")

    def _build_backbone(self) -> Any:
        assert self._info is not None
        import keras

        builder = getattr(keras.applications, self._info.keras_name)
        pooling = None if self.pooling in ("gem", "rmac") else self.pooling
        kwargs = dict(include_top=False, pooling=pooling, input_shape=(self.input_size, self.input_size, 3))
        previous_policy = keras.config.dtype_policy()
        if self.backend == "keras" and self.precision != "float32":
            # OpenVINO converts a float32 model and sets its own precision
            keras.config.set_dtype_policy(f"mixed_{self.precision}")
        try:
            if self.weights == "none":
                py_state, np_state = random.getstate(), np.random.get_state()
                try:  # Keras's initialisers consume the global random state: give it back untouched
                    return seed_random_weights(builder(weights=None, **kwargs))
                finally:
                    random.setstate(py_state)
                    np.random.set_state(np_state)
            if self.weights == "imagenet":
                try:
                    return builder(weights="imagenet", **kwargs)
                except Exception as e:  # Keras raises a bare Exception("URL fetch failure ...")
                    if _is_download_failure(e):
                        raise WeightsUnavailableError(
                            f"could not download the ImageNet weights of {self._info.keras_name} ({e}). "
                            f"Keras looks for them in its cache folder {str(_keras_cache_dir())!r} "
                            "($KERAS_HOME/models, default ~/.keras/models). Offline, copy the weights "
                            "file Keras expects there, or pass weights='path/to/weights.h5' "
                            "(or weights=None for random weights, for tests)."
                        ) from e
                    raise
            return builder(weights=str(self._weights_arg), **kwargs)
        finally:
            keras.config.set_dtype_policy(previous_policy)

    # ------------------------------------------------------------------ preprocessing
    def prepare(self, source: ImageSource, *, label: str | None = None, dtype: Any = np.float32) -> np.ndarray:
        """Read one image and pad/resize it to the model's input size.

        Parameters
        ----------
        source : ImageSource
            Path, bytes, array or PIL image (see :func:`revsearch.images.load_image`).
        label : str, optional
            How error messages name the image.
        dtype : numpy dtype, default float32
            ``numpy.uint8`` saves a float copy where the caller copies into a float batch.

        Returns
        -------
        numpy.ndarray
            Shape (S, S, 3), RGB 0..255, with S = :attr:`input_size`.
        """
        return prepare_image(source, self.input_size, fit=self.fit, fill=self.fill, label=label, dtype=dtype)

    def normalize_batch(self, batch: np.ndarray) -> np.ndarray:
        """Apply the model's own input normalisation to prepared images.

        Parameters
        ----------
        batch : numpy.ndarray
            Shape (n, S, S, 3), float32 RGB 0..255 (from :meth:`prepare`). Modified in place.

        Returns
        -------
        numpy.ndarray
            Shape (n, S, S, 3), the model's input.
        """
        if self._info is None:
            return batch if self._custom_preprocess is None else self._custom_preprocess(batch)
        if self._info.preprocess == "raw-bgr":
            return np.ascontiguousarray(batch[..., ::-1])
        import importlib

        module = importlib.import_module(f"keras.applications.{self._info.module}")
        return module.preprocess_input(batch)

    # ------------------------------------------------------------------ embedding
    def embed_prepared(self, batch: np.ndarray) -> np.ndarray:
        """Embed images already brought to the input size by :meth:`prepare`.

        Parameters
        ----------
        batch : numpy.ndarray
            Shape (n, S, S, 3), float32 RGB 0..255.

        Returns
        -------
        numpy.ndarray
            Shape (n, dim), float32, L2-normalised.
        """
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4 or batch.shape[1:] != (self.input_size, self.input_size, 3):
            raise ValueError(
                f"expected a batch of shape (n, {self.input_size}, {self.input_size}, 3); got {batch.shape}"
            )
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        return self._embed_own_batch(batch.copy())

    def load(self) -> Embedder:
        """Build the model now rather than on first use: the Keras model, or the compiled OpenVINO
        model (converted from Keras the first time, then read from the cache). Returns ``self``."""
        loaded = self._ov is not None and self._ov.loaded_from is not None
        if self.backend == "openvino" and self.precision == "int8" and self._calibration_sources is None and not loaded:
            if self._calibration_id is None:
                raise backends.CalibrationUnavailableError(
                    "precision='int8' needs calibration photos: Embedder(..., calibration=[paths]) or "
                    "embedder.calibrate(paths) (building an index calibrates on its own photos)"
                )
            if not self._openvino_model().cached:
                fallback = backends.cpu_precision() if backends.cpu_precision() != "int8" else "float32"
                logger.warning(
                    "the int8 model calibrated as %s is not in the cache %s (and its photos were not given): "
                    "embedding with %s instead (vectors of every precision are comparable)",
                    self._calibration_id, self._openvino_model().cache_dir, fallback,
                )
                with self._lock:
                    self.precision, self._ov, self._calibration_id = fallback, None, None
        if self.backend == "openvino":
            try:
                self._openvino_model().load()
            except RevsearchError:  # e.g. no weights: Keras could not do better
                raise
            except Exception as e:  # noqa: BLE001 - OpenVINO's conversion errors have many types
                if not self._chosen:
                    raise
                # backend="auto" picked OpenVINO: a model it cannot convert still embeds, with Keras
                logger.warning("OpenVINO could not convert %s (%s: %s): embedding with Keras", self.name, type(e).__name__, e)
                self._fall_back_to_keras()
        if self.backend == "keras":
            self.keras_model
        return self

    def _fall_back_to_keras(self) -> None:
        with self._lock:
            self.backend, self._ov, self._chosen = "keras", None, False
            if not self._precision_given or self.precision not in backends.PRECISIONS["keras"] or self._info is None:
                self.precision = "float32" if self._info is None else backends.default_precision("keras")

    def openvino_model(self) -> backends.OpenVINOModel:
        """The OpenVINO model of this embedder (made on first use: read from the cache, or converted).

        Its ``ir_path`` is the cached IR file, its ``loaded_from`` says how it was loaded.
        """
        return self._openvino_model()

    def _openvino_model(self) -> backends.OpenVINOModel:
        if self._ov is None:
            with self._lock:
                if self._ov is None:
                    if self._info is None:
                        norm, arch = "none", _architecture_id(self._keras_model)
                    else:
                        norm = {"raw-bgr": "raw-bgr", "resnet50": "caffe", "mobilenet": "tf"}[
                            "raw-bgr" if self._info.preprocess == "raw-bgr" else self._info.module
                        ]
                        arch = f"keras.applications.{self._info.keras_name}/pool:{self.pooling}:p={GEM_P:g}"
                    key = {"model": self.name, "architecture": arch, "weights": self.weights, "dim": self.dim}
                    int8 = self.precision == "int8"
                    self._ov = backends.OpenVINOModel(
                        key, lambda: self.keras_model, self.input_size, norm, self.precision,
                        hint=self.openvino_hint, cache_dir=self.cache_dir,
                        calibration_id=(self._calibration_id or "none") if int8 else None,
                        calibration=self._calibration_batch if int8 and self._calibration_sources is not None else None,
                    )  # fmt: skip
        return self._ov

    def _embed_own_batch(self, batch: np.ndarray) -> np.ndarray:
        """:meth:`embed_prepared` of a checked (n, S, S, 3) float32 batch the caller gives up:
        it is normalised in place, not copied."""
        if len(self.scales) > 1:
            return self._embed_multiscale(batch)
        if self.backend == "openvino" and (self._chosen or self.precision == "int8"):
            self.load()  # backend="auto": a failed conversion falls back to Keras; int8: to float if uncalibrated
        if self.backend == "openvino":
            if self._info is None and self._custom_preprocess is not None:
                batch = np.asarray(self._custom_preprocess(batch), dtype=np.float32)
            out = self._openvino_model()(batch)  # the named models' normalisation is in the graph
        else:
            out = self.keras_model.predict_on_batch(self.normalize_batch(batch))
        out = np.asarray(out, dtype=np.float32).reshape(len(batch), -1)
        return l2_normalize(out)

    def embed(self, images: ImageSource | Sequence[ImageSource], *, batch_size: int | None = None) -> np.ndarray:
        """Embed one image or a list of images.

        Parameters
        ----------
        images : ImageSource or sequence of ImageSource
            One image (path, bytes, PIL image, or an (H, W, 3) array) or a list of them.
        batch_size : int, optional
            Default :attr:`batch_size`.

        Returns
        -------
        numpy.ndarray
            Shape (dim,) for one image, (n, dim) for a list; float32, L2-normalised.

        Raises
        ------
        ImageReadError
            If an image cannot be read (the message names it).
        """
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)  # type: ignore[list-item]
        batch_size = batch_size or self.batch_size
        parts = []
        for start in range(0, len(items), batch_size):
            prepared = np.stack([self.prepare(s) for s in items[start : start + batch_size]])
            parts.append(self.embed_prepared(prepared))
        vecs = np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
        return vecs[0] if single else vecs

    def embed_files(
        self,
        paths: Sequence[str | os.PathLike],
        *,
        batch_size: int | None = None,
        workers: int | None = None,
        progress: bool = True,
        desc: str = "embedding",
    ) -> Iterator[EmbeddedBatch]:
        """Embed image files, reading them in parallel while the model runs on batches.

        Parameters
        ----------
        paths : sequence of path
            The image files.
        batch_size : int, optional
            Images per model call (default :attr:`batch_size`).
        workers : int, optional
            Threads that read and resize images (default: the number of CPUs, at most 8).
        progress : bool, default True
            Show a ``tqdm.auto`` progress bar.
        desc : str
            Label of the progress bar.

        Yields
        ------
        EmbeddedBatch
            In the order of ``paths``; unreadable files are reported in ``skipped`` (and logged),
            not raised.
        """
        from tqdm.auto import tqdm

        paths = [Path(p) for p in paths]
        batch_size = batch_size or self.batch_size
        if workers is None:
            workers = min(8, os.cpu_count() or 1)
        self.load()  # build before the threads start
        prefetch = max(2 * batch_size, 4 * workers)
        bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress)
        idx: list[int] = []
        # One batch buffer, filled as images arrive and normalised in place (no stacking, no copy).
        buf = np.empty((batch_size, self.input_size, self.input_size, 3), np.float32)
        infos: list[FileInfo] = []
        skipped: list[SkippedFile] = []

        def prepare(data: bytes, label: str) -> np.ndarray:
            return self.prepare(data, label=label, dtype=np.uint8)  # cast into the batch buffer

        try:
            for taken, (i, info, arr, err) in enumerate(read_files(paths, prepare, workers=workers, prefetch=prefetch)):
                if err is not None:
                    logger.warning("skipped %s: %s", display_name(paths[i]), display_name(err))
                    skipped.append(SkippedFile(paths[i], err))
                    bar.update(1)
                else:
                    buf[len(idx)] = arr
                    idx.append(i)
                    infos.append(info)  # type: ignore[arg-type]
                last = taken == len(paths) - 1
                if len(idx) == batch_size or (last and (idx or skipped)):
                    n = len(idx)
                    vecs = self._embed_own_batch(buf[:n]) if n else np.zeros((0, self.dim), np.float32)
                    bar.update(n)
                    yield EmbeddedBatch(idx, vecs, infos, skipped)
                    idx, infos, skipped = [], [], []
        finally:
            bar.close()


def seed_random_weights(model: Any, seed: int = RANDOM_WEIGHTS_SEED) -> Any:
    """Give a Keras model reproducible random weights, drawn from a private generator.

    Keras's own initialisers draw their seeds from Python's global ``random``, which other threads
    (an event loop, a Dask worker) may use at the same time; here every kernel is Glorot-uniform and
    every normalisation/bias variable takes its usual start value, from ``numpy.random.default_rng(seed)``
    alone, so any two processes (or threads) get the same model.

    Parameters
    ----------
    model : keras.Model
    seed : int, default RANDOM_WEIGHTS_SEED

    Returns
    -------
    keras.Model
        The same model, its weights replaced.
    """
    rng = np.random.default_rng(seed)
    values = []
    for var in model.weights:
        shape = tuple(int(d) for d in var.shape)
        leaf = str(getattr(var, "name", "")).rsplit("/", 1)[-1]
        if leaf in ("gamma", "moving_variance"):
            w = np.ones(shape)
        elif leaf in ("beta", "moving_mean", "bias") or len(shape) < 2:
            w = np.zeros(shape)
        else:
            receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
            limit = np.sqrt(6.0 / (receptive * (shape[-2] + shape[-1])))
            w = rng.uniform(-limit, limit, shape)
        values.append(w.astype(str(var.dtype)))
    model.set_weights(values)
    return model


def _is_download_failure(e: BaseException) -> bool:
    import urllib.error

    text = str(e).lower()
    return isinstance(e, (urllib.error.URLError, ConnectionError, TimeoutError)) or any(
        s in text for s in ("url fetch failure", "urlopen error", "name or service not known", "network is unreachable")
    )


def _architecture_id(model: Any) -> str:
    """A hash of a Keras model's architecture (its JSON config, or failing that its layers and shapes)."""
    try:
        text = model.to_json()
    except Exception:  # noqa: BLE001 - a custom layer without get_config: describe it another way
        text = repr([(type(layer).__name__, layer.name) for layer in model.layers]) + repr(model.output_shape)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


_ALL_PRECISIONS = tuple(dict.fromkeys(p for ps in backends.PRECISIONS.values() for p in ps))
_CACHE: dict[tuple, Embedder] = {}
_CACHE_LOCK = threading.Lock()


def get_embedder(
    model: str | Embedder | Any = "resnet50",
    *,
    weights: str | os.PathLike | None = "imagenet",
    precision: str | None = None,
    fit: str | None = None,
    fill: tuple[int, int, int] | str = (0, 0, 0),
    pooling: str | None = None,
    resolution: int | None = None,
    scales: Sequence[int] | None = None,
    backend: str = "auto",
    calibration: Sequence[ImageSource] | str | None = None,
) -> Embedder:
    """Return an :class:`Embedder`, reusing one built earlier for the same name and options.

    Building a model and loading its weights takes seconds, so repeated calls of
    :func:`revsearch.reverse_image_search` with a model name share one embedder.

    Parameters
    ----------
    model : str, Embedder or keras.Model
        An Embedder is returned as it is; a Keras model is wrapped.
    weights : {"imagenet", None} or path
    precision : {"float32", "bfloat16", "float16", "int8"}, optional
        Default: the backend's.
    calibration : sequence of ImageSource or str, optional
        With ``precision="int8"`` (see :class:`Embedder`). An int8 embedder is shared only when
        ``calibration`` is a recorded id (one given photos, or none, is new: :meth:`Embedder.calibrate`
        changes it).
    fit, fill, pooling, backend, resolution, scales
        As for :class:`Embedder` (``None``: the model's default); see :func:`preprocessing_options`
        to get ``fit``, ``fill`` and ``pooling`` back from an index's spec.

    Returns
    -------
    Embedder
    """
    if isinstance(model, Embedder):
        return model
    if not isinstance(model, str):
        return Embedder(model, precision=precision, backend=backend, calibration=calibration)
    new = Embedder(
        model, weights=weights, precision=precision, fit=fit, fill=fill, pooling=pooling, backend=backend,
        resolution=resolution, scales=scales, calibration=calibration,
    )
    if new.precision == "int8" and not isinstance(calibration, str):
        return new  # calibrate() changes it: never shared
    key = (new.name, new.weights, new.precision, new.preprocessing, new.backend, new.calibration_id)  # lazy: cheap
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = new
        return _CACHE[key]


#: Levels of R-MAC regions (``pooling="rmac"``): 1 + 4 + 9 = 14 regions on a square map.
RMAC_LEVELS = 3


def rmac_regions(h: int, w: int, levels: int = RMAC_LEVELS) -> list[tuple[int, int, int, int]]:
    """R-MAC regions ``(y0, y1, x0, x1)`` of an ``h`` x ``w`` feature map (Tolias et al., 2016).

    Level 1 is the largest centred square; at level ``l > 1``, ``l`` x ``l`` squares of side
    ``round(2 min(h, w) / (l + 1))`` spread evenly (with overlap) over the map.

    Returns
    -------
    list of tuple of int
        14 regions on a square map with 3 levels.
    """
    def starts(total: int, side: int, count: int) -> list[int]:
        if count == 1:
            return [(total - side) // 2]
        step = (total - side) / (count - 1)
        return [int(round(i * step)) for i in range(count)]

    out = []
    m = min(h, w)
    for lev in range(1, levels + 1):
        side = m if lev == 1 else max(1, int(round(2 * m / (lev + 1))))
        for y in starts(h, side, lev):
            for x in starts(w, side, lev):
                out.append((y, y + side, x, x + side))
    return out


def _rmac_model(base: Any) -> Any:
    """``base`` (a backbone without pooling) followed by R-MAC pooling of its feature map."""
    import keras
    from keras import ops

    fmap = ops.cast(base.output, "float32")
    h, w = int(base.output.shape[1]), int(base.output.shape[2])
    total = None
    for y0, y1, x0, x1 in rmac_regions(h, w):
        r = ops.max(fmap[:, y0:y1, x0:x1, :], axis=(1, 2))
        # scaled by its largest entry first: features of random weights can be ~1e-18 (their squares underflow)
        r = r / ops.maximum(ops.max(ops.abs(r), axis=-1, keepdims=True), 1e-37)
        r = r / ops.sqrt(ops.sum(r * r, axis=-1, keepdims=True) + 1e-12)
        total = r if total is None else total + r
    return keras.Model(base.input, total, name=f"{base.name}_rmac")


def preprocessing_options(preprocessing: str) -> dict[str, Any]:
    """Read ``fit``, ``fill``, ``pooling`` and the input size(s) back from an :attr:`Embedder.preprocessing` string.

    Parameters
    ----------
    preprocessing : str
        E.g. ``"crop:rgb(0,0,0)/resize:224:bicubic/keras.applications.mobilenet.preprocess_input/pool:gem:p=3"``.
        A string without a ``pool:`` step was made with average pooling; one ending in
        ``/scales:320+224:sum-l2`` with multi-scale descriptors.

    Returns
    -------
    dict
        ``fit``, ``fill``, ``pooling`` and ``resolution`` (or ``scales``, for multi-scale) for
        :class:`Embedder` / :func:`get_embedder`; empty if the string is not one :class:`Embedder` writes.
    """
    import re

    pattern = (
        r"^(pad|crop|stretch):(edge|mean|rgb\((\d+),(\d+),(\d+)\))/resize:(\d+):bicubic/[^/]+(/pool:(gem|max|rmac|own)[^/]*)?"
        r"(/scales:(\d+(?:\+\d+)+):sum-l2)?$"
    )
    m = re.match(pattern, preprocessing)
    if m is None:
        return {}
    fill: Any = m.group(2) if m.group(3) is None else tuple(int(m.group(i)) for i in (3, 4, 5))
    out: dict[str, Any] = {"fit": m.group(1), "fill": fill, "pooling": m.group(8) or "avg"}
    if m.group(10):
        out["scales"] = tuple(int(v) for v in m.group(10).split("+"))
    else:
        out["resolution"] = int(m.group(6))
    return out
