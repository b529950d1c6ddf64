"""Inference backends of :class:`revsearch.embedding.Embedder`: Keras (TensorFlow) and OpenVINO.

Which backend and which compute precision an embedder uses is decided here:

* ``backend="auto"`` runs OpenVINO on CPUs when it is installed (``pip install "revsearch[openvino]"``)
  and Keras when TensorFlow sees a GPU, or when OpenVINO is missing;
* the default precision on a CPU is chosen by retrieval quality (:func:`cpu_precision`): the fastest
  precision whose mAP stays within :data:`MAP_TOLERANCE` of float32's on every dataset measured
  (:data:`PRECISION_QUALITY`) and whose near-duplicate recall does not drop, among those the CPU runs
  natively: bfloat16 where it has AVX512-BF16 or AMX units, int8 (if it passes) where it has VNNI,
  float32 elsewhere. On a GPU: the mixed precision of :func:`gpu_policy` (float16 from compute
  capability 7.0, bfloat16 from 8.0).
* ``precision="int8"`` (OpenVINO only) quantizes the converted model with NNCF's post-training
  quantization (:func:`quantize_model`), calibrated on photos the caller gives (an index: a seeded
  sample of its own collection, see :class:`revsearch.embedding.Embedder`), and caches the result.

Precision never changes which vectors are comparable: every precision of one model and
preprocessing makes vectors of the same space (they agree within rounding), so an index built at one
precision is searched at any other.

An OpenVINO model is converted once from the Keras model (its input normalisation folded into the
graph, so the input is RGB 0..255 as :meth:`Embedder.prepare` makes it), saved as OpenVINO IR under
:func:`default_cache_dir`, keyed by model, weights, input size and preprocessing, and compiled with
OpenVINO's own ``CACHE_DIR``: a second start reads the compiled blob, without TensorFlow.

Nothing here imports TensorFlow or OpenVINO at import time.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RevsearchError

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "GpuDevice",
    "GpuPolicy",
    "CalibrationUnavailableError",
    "DEFAULT_CALIBRATION_SIZE",
    "MAP_TOLERANCE",
    "OpenVINOModel",
    "PRECISIONS",
    "PRECISION_QUALITY",
    "PRECISION_SPEED_ORDER",
    "cpu_bfloat16",
    "cpu_features",
    "cpu_precision",
    "qualifying_precisions",
    "quantize_model",
    "significant_drop",
    "default_cache_dir",
    "default_precision",
    "gpu_devices",
    "gpu_policy",
    "openvino_installed",
    "resolve_backend",
]

#: Values of ``Embedder(backend=...)``.
BACKENDS = ("auto", "keras", "openvino")
#: Compute precisions each backend can run (vectors are float32 either way).
PRECISIONS: dict[str, tuple[str, ...]] = {
    "keras": ("float32", "bfloat16", "float16"),
    "openvino": ("float32", "bfloat16", "int8"),
}
#: INFERENCE_PRECISION_HINT per precision (int8: see :func:`_int8_rest_hint`).
_OV_HINT = {"float32": "f32", "bfloat16": "bf16", "int8": "f32"}


def _int8_rest_hint() -> str:
    """The precision of the layers an int8 model keeps unquantized: bfloat16 where the CPU has its units
    (bfloat16 passes the quality rule; MobileNet int8 ran 1.22x faster than bfloat16 with it, and 0.93x
    with float32, on a Sapphire Rapids CPU), else float32."""
    return "bf16" if "bfloat16" in cpu_features() else "f32"
#: Bumped when the converted model's layout changes, so old cache entries are not reused.
_IR_FORMAT = 1
#: Calibration photos of an int8 model (NNCF's own default subset size).
DEFAULT_CALIBRATION_SIZE = 300
#: How :func:`quantize_model` quantizes (part of the cache key of an int8 model).
INT8_RECIPE = {
    "rest": "bfloat16 where the CPU has its units, else float32",  # INFERENCE_PRECISION_HINT of unquantized layers
    "preset": "mixed",  # symmetric weights, asymmetric activations: ReLU6/ReLU outputs use all 256 levels
    "fast_bias_correction": False,  # the full bias correction: slower to quantize, more accurate
    "keep_float": "first and last convolution",  # ignored_scope: the layers that hurt most when quantized
    "target_device": "CPU",
}

#: Most a precision may lose in mAP against float32, on every dataset, to be a default.
MAP_TOLERANCE = 0.005
#: Fastest first: the order :func:`cpu_precision` tries the qualifying precisions in.
PRECISION_SPEED_ORDER = ("int8", "bfloat16", "float32")
#: Retrieval quality measured per precision (OpenVINO, MobileNet with its ImageNet weights): leave-one-out mAP on
#: Oxford 17 flowers (category) and the UKBench subset (instance), near-duplicate recall@1 of 3,000 edited copies
#: of 300 flowers photos (the near-identical twin of a photo counts as found; with the copies lost / gained against
#: float32) and of the 68 near-identical pairs, from ``python benchmarks/precision.py`` on a Sapphire Rapids CPU
#: (README, Precision), plus the two held-out mAP figures of issue 20. ``None``: not measured (int8 with this
#: recipe on the held-out sets: int8 cannot qualify until it is; its figures are of INT8_RECIPE with the unquantized
#: layers in bfloat16). The rule (:func:`qualifying_precisions`) reads
#: this table, so a new measurement changes the default by changing a number here.
PRECISION_QUALITY: dict[str, dict[str, float | None]] = {
    "float32": {
        "oxford17_flowers mAP": 0.5635,
        "ukbench_subset mAP": 0.9970,
        "held-out category mAP": 0.7764,
        "held-out instance mAP": 0.8241,
        "near-duplicate recall@1 (twin counts)": 0.9960,
        "near-identical pairs recall@1": 1.0,
    },
    "bfloat16": {
        "oxford17_flowers mAP": 0.5627,
        "ukbench_subset mAP": 0.9970,
        "held-out category mAP": 0.7763,
        "held-out instance mAP": 0.8235,
        "near-duplicate recall@1 (twin counts)": 0.9957,
        "near-duplicate recall@1 (twin counts) lost": 1,
        "near-duplicate recall@1 (twin counts) gained": 0,
        "near-identical pairs recall@1": 1.0,
    },
    "int8": {
        "oxford17_flowers mAP": 0.5633,
        "ukbench_subset mAP": 0.9970,
        "held-out category mAP": None,  # 0.7639 with NNCF's performance preset, all layers quantized (issue 20)
        "held-out instance mAP": None,  # 0.8235 likewise
        "near-duplicate recall@1 (twin counts)": 0.9960,
        "near-duplicate recall@1 (twin counts) lost": 0,
        "near-duplicate recall@1 (twin counts) gained": 0,
        "near-identical pairs recall@1": 1.0,
    },
}


# ---------------------------------------------------------------------------- devices
@dataclass(frozen=True)
class GpuDevice:
    """A GPU as TensorFlow describes it.

    Attributes
    ----------
    name : str
        E.g. ``"Tesla T4"``.
    compute_capability : tuple of 2 int or None
        E.g. (7, 5); None where TensorFlow does not say (not an NVIDIA GPU).
    memory_bytes : int or None
        Total memory, where known.
    """

    name: str
    compute_capability: tuple[int, int] | None = None
    memory_bytes: int | None = None


@dataclass(frozen=True)
class GpuPolicy:
    """How to embed on the GPUs present: ``precision``, ``batch_size`` and why."""

    precision: str
    batch_size: int
    reason: str


def gpu_device_nodes() -> bool:
    """Whether the machine has device files a GPU build of TensorFlow could use (cheap, no import)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg"))


def gpu_devices() -> list[GpuDevice]:
    """The GPUs TensorFlow can use.

    TensorFlow is imported only where the machine has GPU device files (``/dev/nvidia*``, ROCm's
    ``/dev/kfd``, WSL's ``/dev/dxg``), so a CPU-only machine pays nothing.

    Returns
    -------
    list of GpuDevice
        Empty on a machine without a GPU (or with a CPU-only TensorFlow).
    """
    if not gpu_device_nodes():
        return []
    return list(_tf_gpus())


@functools.lru_cache(maxsize=1)
def _tf_gpus() -> tuple[GpuDevice, ...]:
    import tensorflow as tf

    out = []
    for dev in tf.config.list_physical_devices("GPU"):
        try:
            details = tf.config.experimental.get_device_details(dev)
        except (ValueError, RuntimeError):  # pragma: no cover - depends on the driver
            details = {}
        cc = details.get("compute_capability")
        out.append(GpuDevice(str(details.get("device_name", dev.name)), tuple(cc) if cc else None))  # type: ignore[arg-type]
    return tuple(out)


def gpu_policy(devices: Sequence[GpuDevice]) -> GpuPolicy:
    """The precision and batch size for embedding on these GPUs (Keras mixed precision).

    float16 where every GPU has float16 tensor cores (compute capability >= 7.0: V100, T4, ...),
    bfloat16 where they also have bfloat16 ones (>= 8.0: A100, L4, H100, ...; as fast as float16
    and without float16's narrow range), float32 otherwise. Half precision halves the activations,
    so the batch is larger: 128 (64 in float32; 32 where a GPU has under 8 GiB).

    Parameters
    ----------
    devices : sequence of GpuDevice
        From :func:`gpu_devices` (or made up, for tests). Empty: the CPU policy.

    Returns
    -------
    GpuPolicy
    """
    if not devices:
        return GpuPolicy("float32", 32, "no GPU: float32 on the CPU")
    ccs = [d.compute_capability for d in devices]
    small = any(d.memory_bytes is not None and d.memory_bytes < 8 * 2**30 for d in devices)
    names = ", ".join(f"{d.name} (compute capability {'.'.join(map(str, d.compute_capability)) if d.compute_capability else '?'})" for d in devices)
    if all(cc is not None and cc >= (8, 0) for cc in ccs):
        precision, why = "bfloat16", "bfloat16 tensor cores"
    elif all(cc is not None and cc >= (7, 0) for cc in ccs):
        precision, why = "float16", "float16 tensor cores, no fast bfloat16"
    else:
        precision, why = "float32", "no fast half precision"
    batch = 32 if small else (128 if precision != "float32" else 64)
    return GpuPolicy(precision, batch, f"{names}: {why}")


def openvino_installed() -> bool:
    """Whether the ``openvino`` package can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=1)
def _ov_cpu_capabilities() -> tuple[str, ...]:
    import openvino as ov

    return tuple(str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


@functools.lru_cache(maxsize=1)
def _proc_cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_features(flags: Sequence[str] | None = None, ov_capabilities: Sequence[str] | None = None) -> frozenset[str]:
    """What this CPU runs natively: a subset of ``{"bfloat16", "int8"}`` (float32 always).

    ``"bfloat16"``: AVX512-BF16 or AMX-BF16 units (``avx512_bf16`` / ``amx_bf16`` in the CPU flags, or
    ``BF16`` in OpenVINO's ``OPTIMIZATION_CAPABILITIES``). ``"int8"``: VNNI dot products (``avx512_vnni``,
    ``avx_vnni`` or ``amx_int8``); OpenVINO's ``INT8`` capability alone does not count (it runs int8 on
    any AVX2 CPU, but without VNNI no faster than float32).

    Parameters
    ----------
    flags : sequence of str, optional
        CPU flags as ``/proc/cpuinfo`` lists them (default: read it; empty where there is none).
    ov_capabilities : sequence of str, optional
        OpenVINO's CPU ``OPTIMIZATION_CAPABILITIES`` (default: asked from OpenVINO where it is installed
        and ``flags`` is not given and the OS lists no CPU flags).

    Returns
    -------
    frozenset of str
    """
    if flags is None:
        flags = _proc_cpu_flags()
        # OpenVINO is asked only where the OS lists no flags (no /proc/cpuinfo): importing it costs
        # a start-up that constructing an Embedder should not pay.
        if not flags and ov_capabilities is None and openvino_installed():
            ov_capabilities = _ov_cpu_capabilities()
    f = {x.lower() for x in flags}
    caps = {str(c).upper() for c in (ov_capabilities or ())}
    out = set()
    if f & {"avx512_bf16", "amx_bf16"} or "BF16" in caps:
        out.add("bfloat16")
    if f & {"avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8"}:
        out.add("int8")
    return frozenset(out)


def cpu_bfloat16() -> bool:
    """Whether this CPU has bfloat16 units (AVX512-BF16 or AMX), by its flags or OpenVINO's capabilities."""
    return "bfloat16" in cpu_features()


def significant_drop(lost: int, gained: int, alpha: float = 0.05) -> bool:
    """Whether ``lost`` queries failing where float32 succeeded, against ``gained`` the other way, is a real drop.

    An exact one-sided sign test (McNemar's) on the queries whose outcome differs: near-ties that swap
    both ways are not a drop; losses clearly outnumbering gains are.

    Parameters
    ----------
    lost, gained : int
        Queries found by float32 only / by the other precision only.
    alpha : float, default 0.05

    Returns
    -------
    bool
    """
    import math

    n = int(lost) + int(gained)
    if n == 0 or lost <= gained:
        return False
    p = sum(math.comb(n, i) for i in range(int(lost), n + 1)) / 2**n
    return p < alpha


def qualifying_precisions(
    quality: dict[str, dict[str, float | None]] | None = None, *, tolerance: float = MAP_TOLERANCE
) -> list[str]:
    """The precisions that may be a default: within ``tolerance`` mAP of float32 on every dataset, and
    no near-duplicate recall drop.

    A precision must have every figure float32 has (one missing figure: it does not qualify). A
    recall figure ``F`` must not be below float32's, unless the precision also records ``"F lost"``
    and ``"F gained"`` (queries whose outcome differs from float32's, each way) and the difference
    is not a significant drop (:func:`significant_drop`: near-ties swapping both ways).

    Parameters
    ----------
    quality : dict, optional
        ``{precision: {figure: value}}``, figures named ``"... mAP"`` or ``"... recall@1"`` (default
        :data:`PRECISION_QUALITY`).
    tolerance : float, default :data:`MAP_TOLERANCE`

    Returns
    -------
    list of str
        In the order of :data:`PRECISION_SPEED_ORDER` (fastest first); always holds ``"float32"``.
    """
    quality = PRECISION_QUALITY if quality is None else quality
    base = quality.get("float32", {})
    out = []
    for p in PRECISION_SPEED_ORDER:
        if p == "float32":
            out.append(p)
            continue
        mine = quality.get(p)
        if not mine or any(mine.get(k) is None for k in base):
            continue

        def ok(k: str) -> bool:
            if k.endswith("mAP"):
                return mine[k] >= base[k] - tolerance
            if mine[k] >= base[k] - 1e-9:
                return True
            lost, gained = mine.get(f"{k} lost"), mine.get(f"{k} gained")
            return lost is not None and gained is not None and not significant_drop(int(lost), int(gained))

        if all(ok(k) for k in base if not k.endswith((" lost", " gained"))):
            out.append(p)
    return out


def cpu_precision(
    features: frozenset[str] | set[str] | None = None, *, quality: dict[str, dict[str, float | None]] | None = None
) -> str:
    """The default OpenVINO precision on a CPU: the fastest one that qualifies and the CPU runs natively.

    Parameters
    ----------
    features : set of str, optional
        From :func:`cpu_features` (default: this CPU's).
    quality : dict, optional
        Default :data:`PRECISION_QUALITY`.

    Returns
    -------
    str
        ``"int8"``, ``"bfloat16"`` or ``"float32"``.
    """
    features = cpu_features() if features is None else features
    for p in qualifying_precisions(quality):
        if p == "float32" or p in features:
            return p
    return "float32"


def resolve_backend(
    backend: str = "auto", precision: str | None = None, *, devices: Sequence[GpuDevice] | None = None
) -> str:
    """The backend an embedder runs on.

    Parameters
    ----------
    backend : {"auto", "keras", "openvino"}
        ``"auto"``: OpenVINO when it is installed, no GPU is present, and it runs ``precision``;
        Keras otherwise.
    precision : str, optional
        The precision asked for (None: the backend's default).
    devices : sequence of GpuDevice, optional
        The GPUs (default: :func:`gpu_devices`).

    Returns
    -------
    str
        ``"keras"`` or ``"openvino"``.

    Raises
    ------
    ValueError
        For an unknown backend, or ``"openvino"`` when it is not installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "openvino":
        if not openvino_installed():
            raise ValueError(
                "backend='openvino' needs the OpenVINO runtime: pip install \"revsearch[openvino]\" "
                "(or use backend='keras' / 'auto')"
            )
        return "openvino"
    if backend == "keras":
        return "keras"
    if not openvino_installed() or (precision is not None and precision not in PRECISIONS["openvino"]):
        return "keras"
    return "keras" if (gpu_devices() if devices is None else devices) else "openvino"


def default_precision(
    backend: str, *, devices: Sequence[GpuDevice] | None = None, features: frozenset[str] | set[str] | None = None
) -> str:
    """The precision used when none is given.

    OpenVINO: :func:`cpu_precision` (the fastest precision the CPU runs natively among those the
    retrieval-quality rule admits: bfloat16 on CPUs with AVX512-BF16 or AMX today). Keras:
    :func:`gpu_policy`'s precision on a GPU, ``"float32"`` on a CPU.

    Parameters
    ----------
    backend : {"keras", "openvino"}
    devices : sequence of GpuDevice, optional
        Default :func:`gpu_devices`.
    features : set of str, optional
        The CPU's, as :func:`cpu_features` (default: this CPU's).
    """
    if backend == "openvino":
        return cpu_precision(features)
    return gpu_policy(gpu_devices() if devices is None else devices).precision


def default_cache_dir() -> Path:
    """Where converted and compiled OpenVINO models are kept.

    ``$REVSEARCH_CACHE_DIR/openvino`` if set, else ``$XDG_CACHE_HOME/revsearch/openvino``
    (default ``~/.cache/revsearch/openvino``).
    """
    if os.environ.get("REVSEARCH_CACHE_DIR"):
        return Path(os.environ["REVSEARCH_CACHE_DIR"]) / "openvino"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "revsearch" / "openvino"


# ---------------------------------------------------------------------------- OpenVINO
class CalibrationUnavailableError(RevsearchError):
    """An int8 model is neither in the cache nor can be made: no calibration photos were given."""


def _keep_float_layers(ov_model: Any) -> list[str]:
    """Names of the first and the last convolution (or matrix product) of a model: kept in float by NNCF."""
    kinds = ("Convolution", "GroupConvolution", "MatMul")
    names = [op.get_friendly_name() for op in ov_model.get_ordered_ops() if op.get_type_name() in kinds]
    return sorted({names[0], names[-1]}) if len(names) > 2 else []


def quantize_model(ov_model: Any, calibration: Sequence[np.ndarray] | np.ndarray, *, subset_size: int | None = None) -> Any:
    """Post-training int8 quantization of an OpenVINO model with NNCF (:data:`INT8_RECIPE`).

    Parameters
    ----------
    ov_model : openvino.Model
        A float model whose input is what ``calibration`` holds.
    calibration : numpy.ndarray or sequence of numpy.ndarray
        Shape (n, S, S, 3): the model's inputs (one image per calibration step).
    subset_size : int, optional
        Calibration steps (default: all of ``calibration``).

    Returns
    -------
    openvino.Model
        The quantized model (int8 convolutions, float elsewhere).
    """
    import nncf

    items = [np.ascontiguousarray(x[None], dtype=np.float32) for x in calibration]
    if not items:
        raise CalibrationUnavailableError("int8 quantization needs at least one calibration image")
    keep = _keep_float_layers(ov_model)
    logging.getLogger("nncf").setLevel(logging.WARNING)
    return nncf.quantize(
        ov_model,
        nncf.Dataset(items),
        preset=nncf.QuantizationPreset.MIXED,
        target_device=nncf.TargetDevice.CPU,
        subset_size=int(subset_size or len(items)),
        fast_bias_correction=INT8_RECIPE["fast_bias_correction"],
        ignored_scope=nncf.IgnoredScope(names=keep) if keep else None,
    )


class OpenVINOModel:
    """An embedding model compiled by OpenVINO for the CPU, converted from Keras once and cached.

    Parameters
    ----------
    key : dict
        What identifies the model (name, weights, input size, preprocessing...): hashed into the
        name of its cache folder.
    keras_model : callable
        Returns the Keras model; called only when the converted model is not in the cache.
    input_size : int
        S: the input is (n, S, S, 3).
    normalization : {"caffe", "tf", "raw-bgr", "none"}
        The input normalisation folded into the graph: ``"caffe"`` (BGR, ImageNet means subtracted:
        ResNet50's ``preprocess_input``), ``"tf"`` (x / 127.5 - 1: MobileNet's), ``"raw-bgr"``
        (channels reversed only) or ``"none"``.
    precision : {"float32", "bfloat16", "int8"}
        ``INFERENCE_PRECISION_HINT`` of the CPU plugin; ``"int8"``: the model quantized by
        :func:`quantize_model` (cached under its own key, which names the calibration set).
    hint : {"throughput", "latency"}, default "throughput"
        ``PERFORMANCE_HINT``: throughput splits a batch over parallel streams.
    cache_dir : path, optional
        Default :func:`default_cache_dir`.
    threads : int, optional
        ``INFERENCE_NUM_THREADS`` (default: OpenVINO's, all cores).
    calibration_id : str, optional
        With ``precision="int8"``: what identifies the calibration photos (a hash of their contents);
        part of the cache key.
    calibration : callable, optional
        With ``precision="int8"``: returns the calibration inputs, shape (n, S, S, 3) float32 RGB
        0..255; called only when the int8 model is not in the cache. Without it, a missing int8 model
        raises :class:`CalibrationUnavailableError`.
    """

    def __init__(
        self,
        key: dict[str, Any],
        keras_model: Callable[[], Any],
        input_size: int,
        normalization: str,
        precision: str,
        *,
        hint: str = "throughput",
        cache_dir: str | os.PathLike | None = None,
        threads: int | None = None,
        calibration_id: str | None = None,
        calibration: Callable[[], np.ndarray] | None = None,
    ) -> None:
        if precision not in _OV_HINT:
            raise ValueError(f"OpenVINO runs precision float32, bfloat16 or int8, not {precision!r}")
        if precision == "int8" and not calibration_id:
            raise ValueError("an int8 OpenVINO model needs a calibration_id (what its calibration photos are)")
        if hint not in ("throughput", "latency"):
            raise ValueError(f"hint must be 'throughput' or 'latency', not {hint!r}")
        if normalization not in ("caffe", "tf", "raw-bgr", "none"):
            raise ValueError(f"unknown normalization {normalization!r}")
        self.key = dict(key, input_size=input_size, normalization=normalization, ir_format=_IR_FORMAT)
        self._float_key = dict(self.key)
        if precision == "int8":
            self.key["int8"] = {"calibration": calibration_id, **INT8_RECIPE}
        self._calibration = calibration
        self.calibration_id = calibration_id if precision == "int8" else None
        self._keras_model = keras_model
        self.input_size = input_size
        self.normalization = normalization
        self.precision = precision
        self.hint = hint
        self.threads = threads
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._compiled: Any = None
        self._queue: Any = None
        self._lock = threading.Lock()
        #: How the model was obtained on load: "converted" or "cached IR" (+ "compiled blob" when OpenVINO's cache hit).
        self.loaded_from: str | None = None

    @staticmethod
    def _digest_of(key: dict[str, Any]) -> str:
        import openvino as ov

        extra: dict[str, Any] = {"openvino": ov.get_version()}
        if "int8" in key:
            import nncf

            extra["nncf"] = nncf.__version__
        text = json.dumps({**key, **extra}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @property
    def digest(self) -> str:
        """The cache key: a hash of :attr:`key` and OpenVINO's version (and NNCF's, for int8)."""
        return self._digest_of(self.key)

    @property
    def ir_path(self) -> Path:
        """The converted model (``model.xml`` with ``model.bin`` beside it)."""
        return self.cache_dir / "ir" / self.digest / "model.xml"

    @property
    def cached(self) -> bool:
        """Whether the converted (for int8: quantized) model is in the cache folder."""
        return self.ir_path.is_file()

    def _float_model(self) -> Any:
        """The float converted model: from the cache when there (int8 is quantized from it), else converted."""
        import openvino as ov

        path = self.cache_dir / "ir" / self._digest_of(self._float_key) / "model.xml"
        if path.is_file():
            try:
                return ov.Core().read_model(str(path))
            except RuntimeError:  # damaged: convert again
                pass
        return self._convert_float()

    def _convert(self) -> Any:
        """The model to cache: the float conversion, or for int8 its quantization on the calibration photos."""
        if self.precision != "int8":
            return self._convert_float()
        if self._calibration is None:
            raise CalibrationUnavailableError(
                f"the int8 model {self.calibration_id} is not in the cache {str(self.cache_dir)!r} and no "
                "calibration photos were given to make it"
            )
        data = self._calibration()
        logger.info("quantizing to int8 with NNCF on %d calibration images (once; then cached)", len(data))
        return quantize_model(self._float_model(), data)

    def _convert_float(self) -> Any:
        import openvino as ov

        model = self._keras_model()
        s = self.input_size
        with warnings.catch_warnings():  # Keras warns that the traced input is not a KerasTensor
            warnings.simplefilter("ignore")
            ov_model = ov.convert_model(model, input=[(-1, s, s, 3)])
        ppp = ov.preprocess.PrePostProcessor(ov_model)
        inp = ppp.input()
        inp.tensor().set_element_type(ov.Type.f32).set_layout(ov.Layout("NHWC"))
        inp.model().set_layout(ov.Layout("NHWC"))
        pre = inp.preprocess()
        if self.normalization in ("caffe", "raw-bgr"):
            pre.reverse_channels()
        if self.normalization == "caffe":
            pre.mean([103.939, 116.779, 123.68])  # BGR order, as keras.applications.imagenet_utils
        elif self.normalization == "tf":
            pre.mean(127.5).scale(127.5)
        ppp.output().tensor().set_element_type(ov.Type.f32)
        return ppp.build()

    def _save(self, ov_model: Any) -> None:
        """Write the IR to its cache folder atomically (a temporary folder renamed into place)."""
        import openvino as ov

        final = self.ir_path.parent
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
        try:
            ov.save_model(ov_model, str(tmp / "model.xml"), compress_to_fp16=False)
            (tmp / "key.json").write_text(json.dumps(self.key, sort_keys=True, default=str, indent=1))
            try:
                os.replace(tmp, final)
            except OSError:  # another process put it there first: keep theirs
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load(self) -> None:
        """Convert (first time) or read the cached model, and compile it (from OpenVINO's cache if there)."""
        if self._compiled is not None:
            return
        with self._lock:
            if self._compiled is not None:
                return
            import openvino as ov

            core = ov.Core()
            hint = _int8_rest_hint() if self.precision == "int8" else _OV_HINT[self.precision]
            config: dict[str, Any] = {
                "INFERENCE_PRECISION_HINT": hint,
                "PERFORMANCE_HINT": self.hint.upper(),
            }
            blobs = self.cache_dir / "compiled"
            try:
                blobs.mkdir(parents=True, exist_ok=True)
                config["CACHE_DIR"] = str(blobs)
            except OSError as e:  # read-only or full disk, a file in the way: run, only slower to start
                logger.warning("cannot use the OpenVINO cache folder %s (%s): converting without caching", self.cache_dir, e)
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = int(self.threads)
            source = "cached IR"
            compiled = None
            if "CACHE_DIR" in config and self.ir_path.is_file():
                try:
                    compiled = core.compile_model(str(self.ir_path), "CPU", config)
                except RuntimeError as e:  # a damaged or hand-edited cache entry: convert again
                    logger.warning("OpenVINO cache entry %s is unreadable (%s): converting again", self.ir_path.parent, e)
                    shutil.rmtree(self.ir_path.parent, ignore_errors=True)
            if compiled is None:
                source = "converted"
                ov_model = self._convert()
                saved = "CACHE_DIR" in config
                if saved:
                    try:
                        self._save(ov_model)
                    except OSError as e:  # a read-only or full disk: run without the cache
                        logger.warning("could not cache the OpenVINO model in %s: %s", self.cache_dir, e)
                        saved = False
                if saved and self.ir_path.is_file():
                    compiled = core.compile_model(str(self.ir_path), "CPU", config)
                else:
                    config.pop("CACHE_DIR", None)
                    compiled = core.compile_model(ov_model, "CPU", config)
            try:
                if bool(compiled.get_property("LOADED_FROM_CACHE")):
                    source += " + compiled blob"
            except RuntimeError:  # pragma: no cover - older OpenVINO
                pass
            actual = str(compiled.get_property("INFERENCE_PRECISION_HINT"))  # e.g. "<Type: 'bfloat16'>"
            wanted = {"f32": "float32", "bf16": "bfloat16"}[hint]
            if wanted not in actual:
                logger.warning("OpenVINO runs %s, not the %s asked for (this CPU lacks it)", actual, wanted)
            n = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._queue = ov.AsyncInferQueue(compiled, max(1, n))
            self.loaded_from = source
            self._compiled = compiled
            logger.info("OpenVINO model %s (%s, %s, %d requests)", self.ir_path.parent.name, source, actual, n)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Run the model.

        Parameters
        ----------
        batch : numpy.ndarray
            Shape (n, S, S, 3), float32 RGB 0..255.

        Returns
        -------
        numpy.ndarray
            Shape (n, dim), float32 (not normalised).
        """
        self.load()
        queue = self._queue
        parts = [p for p in np.array_split(batch, min(len(queue), len(batch))) if len(p)]
        out: list[Any] = [None] * len(parts)

        def done(request: Any, i: int) -> None:
            out[i] = np.array(request.get_output_tensor(0).data, dtype=np.float32)

        with self._lock:  # one batch at a time through the request pool
            queue.set_callback(done)
            for i, part in enumerate(parts):
                queue.start_async({0: np.ascontiguousarray(part)}, userdata=i)
            queue.wait_all()
        return np.concatenate(out).reshape(len(batch), -1)
