"""Inference backends of :class:`revsearch.embedding.Embedder`: Keras (TensorFlow) and OpenVINO.

Which backend and which compute precision an embedder uses is decided here:

* ``backend="auto"`` runs OpenVINO on CPUs when it is installed (``pip install "revsearch[openvino]"``)
  and Keras when TensorFlow sees a GPU, or when OpenVINO is missing;
* the default precision is ``"float32"`` on CPUs (OpenVINO's bfloat16 is 2.3x faster than Keras
  float32 where the CPU has bfloat16 units, but missed the rule for a default: top-9 agreement with
  float32 0.944 < 0.95 on Oxford flowers; ask for it with ``precision="bfloat16"``), and on a GPU the
  mixed precision of :func:`gpu_policy` (float16 from compute capability 7.0, bfloat16 from 8.0).

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

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "GpuDevice",
    "GpuPolicy",
    "OpenVINOModel",
    "PRECISIONS",
    "cpu_bfloat16",
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
    "openvino": ("float32", "bfloat16"),
}
_OV_HINT = {"float32": "f32", "bfloat16": "bf16"}
#: Bumped when the converted model's layout changes, so old cache entries are not reused.
_IR_FORMAT = 1


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


def cpu_bfloat16() -> bool:
    """Whether OpenVINO's CPU plugin reports bfloat16 units on this CPU (AVX512-BF16 or AMX).

    Without OpenVINO, whether ``/proc/cpuinfo`` lists ``avx512_bf16`` or ``amx_bf16``.
    """
    if openvino_installed():
        return "BF16" in _ov_cpu_capabilities()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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


def default_precision(backend: str, *, devices: Sequence[GpuDevice] | None = None) -> str:
    """The precision used when none is given.

    OpenVINO: ``"float32"``. A precision becomes the default only with top-9 agreement >= 0.95 and
    precision@9 within 0.005 of float32's on Oxford flowers (MobileNet, real weights); OpenVINO's
    bfloat16 measured 0.944 and -0.0011 on an AVX512-BF16 CPU (``benchmarks/backends.py``), so it is
    opt-in (:func:`cpu_bfloat16` tells whether it is fast here). Keras: :func:`gpu_policy`'s precision
    on a GPU, ``"float32"`` on a CPU.
    """
    if backend == "openvino":
        return "float32"
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
    precision : {"float32", "bfloat16"}
        ``INFERENCE_PRECISION_HINT`` of the CPU plugin.
    hint : {"throughput", "latency"}, default "throughput"
        ``PERFORMANCE_HINT``: throughput splits a batch over parallel streams.
    cache_dir : path, optional
        Default :func:`default_cache_dir`.
    threads : int, optional
        ``INFERENCE_NUM_THREADS`` (default: OpenVINO's, all cores).
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
    ) -> None:
        if precision not in _OV_HINT:
            raise ValueError(f"OpenVINO runs precision float32 or bfloat16, not {precision!r}")
        if hint not in ("throughput", "latency"):
            raise ValueError(f"hint must be 'throughput' or 'latency', not {hint!r}")
        if normalization not in ("caffe", "tf", "raw-bgr", "none"):
            raise ValueError(f"unknown normalization {normalization!r}")
        self.key = dict(key, input_size=input_size, normalization=normalization, ir_format=_IR_FORMAT)
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

    @property
    def digest(self) -> str:
        """The cache key: a hash of :attr:`key` and OpenVINO's version."""
        import openvino as ov

        text = json.dumps({**self.key, "openvino": ov.get_version()}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @property
    def ir_path(self) -> Path:
        """The converted model (``model.xml`` with ``model.bin`` beside it)."""
        return self.cache_dir / "ir" / self.digest / "model.xml"

    def _convert(self) -> Any:
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
            config: dict[str, Any] = {
                "INFERENCE_PRECISION_HINT": _OV_HINT[self.precision],
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
            if self.precision not in actual:
                logger.warning("OpenVINO runs %s, not the %s asked for (this CPU lacks it)", actual, self.precision)
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
