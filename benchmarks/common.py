"""Helpers shared by the benchmark scripts: machine description, timing, tables, data locations.

Nothing here imports TensorFlow; the scripts do that themselves, after setting ``KERAS_HOME``.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy is imported where it is used
    import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(REPO))

#: Where this project's shared data lies in a checkout of the workspace (used as defaults only).
SHARED = REPO.parent / "shared"
DEFAULT_DATASET = SHARED / "datasets" / "oxford17_flowers"
DEFAULT_KERAS_MODELS = SHARED / "keras" / "models"


def cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> str:
    """Which BLAS numpy calls, its kernel (core type) and thread count, via threadpoolctl if installed."""
    import numpy as np

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        cfg = np.show_config(mode="dicts") if np.lib.NumpyVersion(np.__version__) >= "1.26.0" else {}
        blas = cfg.get("Build Dependencies", {}).get("blas", {}) if isinstance(cfg, dict) else {}
        return f"{blas.get('name', '?')} {blas.get('version', '')} (install threadpoolctl for the kernel)"
    parts = []
    for lib in threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        name = Path(lib.get("filepath", "")).name
        parts.append(
            f"{lib.get('internal_api')} {lib.get('version')} kernel={lib.get('architecture')} "
            f"threads={lib.get('num_threads')} ({name})"
        )
    return "; ".join(parts) or "no BLAS found by threadpoolctl"


def machine_lines(extra: dict[str, str] | None = None) -> list[str]:
    """Lines describing the machine and the libraries, for the top of a report."""
    import numpy as np

    lines = [
        f"CPU: {cpu_name()}, {cpu_count()} usable cores (os.cpu_count()={os.cpu_count()})",
        f"Python {platform.python_version()}, numpy {np.__version__}",
        f"numpy BLAS: {blas_info()}",
    ]
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS") if k in os.environ}
    if env:
        lines.append("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    lines.append(f"load average (1, 5, 15 min) at start: {load_average()} (the machine may be shared)")
    for k, v in (extra or {}).items():
        lines.append(f"{k}: {v}")
    return lines


def load_average() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one call, and its result."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def spread(xs: Sequence[float]) -> str:
    """``min..max`` of a list of numbers, compactly."""
    return f"{min(xs):.3g}..{max(xs):.3g}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    out = [fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(r) for r in cells[1:]]
    return "\n".join(out)


def fmt_ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g} ms" if ms < 100 else f"{ms:.0f} ms"


def fmt_mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])


def proc_kib(key: str, path: str = "/proc/self/status") -> int | None:
    """A ``Key:  N kB`` field of a /proc file (``VmRSS``, ``VmHWM``, ``RssAnon``, ``MemAvailable``...)
    in bytes, or None where /proc or the field is missing."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def synthetic_spec(dim: int) -> dict[str, Any]:
    """The spec recorded for an index of synthetic vectors (no model made them)."""
    return {"model": "synthetic", "preprocessing": "none", "dim": dim, "weights": "none", "precision": "float32"}


def emit(text: str, t_start: float, markdown: str | None) -> None:
    """Print a benchmark's report with its total time and the load average, and save it to
    ``markdown`` if given."""
    text += f"\n\n(total benchmark time {time.perf_counter() - t_start:.0f} s; load average at the end: {load_average()})"
    print()
    print(text)
    if markdown:
        Path(markdown).write_text(text + "\n")


def synthetic_photo(seed: int, size: tuple[int, int] = (160, 120), max_radius: float = 40) -> np.ndarray:
    """A smooth synthetic photo with a few discs, shape (H, W, 3) uint8, different per seed
    (drawn as tests/conftest.py draws them; benchmarks do not import the tests)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    for c in range(3):
        a, b, p = rng.uniform(-3, 3, 3)
        img[..., c] = 127 + 60 * np.sin(a * x / w * np.pi + p) * np.cos(b * y / h * np.pi)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, max_radius)
        img[((x - cx) ** 2 + (y - cy) ** 2) < r * r] = rng.uniform(0, 255, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


#: The offline ImageNet weights Keras caches for MobileNet 1.0/224 (no top).
MOBILENET_WEIGHTS_FILE = "mobilenet_1_0_224_tf_no_top.h5"


def offline_keras_home(models: Path = DEFAULT_KERAS_MODELS, weights_file: str = MOBILENET_WEIGHTS_FILE) -> str:
    """Point KERAS_HOME at a writable copy of the offline weights, unless it already has them.

    Parameters
    ----------
    models : Path
        A folder holding ``weights_file`` (default ``../shared/keras/models``).
    weights_file : str

    Returns
    -------
    str
        The KERAS_HOME in use.
    """
    import shutil
    import tempfile

    home = os.environ.get("KERAS_HOME")
    if home and (Path(home) / "models" / weights_file).is_file():
        return home
    if not (Path(models) / weights_file).is_file():
        sys.exit(f"offline weights not found: {Path(models) / weights_file} "
                 f"(set KERAS_HOME to a folder holding models/{weights_file})")
    home = tempfile.mkdtemp(prefix="revsearch-keras-")
    shutil.copytree(models, Path(home) / "models")
    os.environ["KERAS_HOME"] = home
    return home
