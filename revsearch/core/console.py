"""Quiet start-up for the command line: TensorFlow's C++ start-up noise kept off the terminal.

TensorFlow's native libraries print lines such as ``oneDNN custom operations are on``,
``Could not find cuda drivers on your machine`` and ``failed call to cuInit`` straight to the
process's standard error (file descriptor 2) when they load and when the first device is
opened. ``TF_CPP_MIN_LOG_LEVEL`` silences some of them in some TensorFlow versions, but not
those written before ``absl::InitializeLog()`` (TensorFlow 2.16+). :func:`quiet_tensorflow`
therefore sets the variables *and* filters descriptor 2 through a pipe: lines recognised as
start-up noise are dropped, everything else (progress bars, warnings, errors) is passed on at
once.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

__all__ = ["NOISE_PATTERNS", "is_noise", "quiet_tensorflow"]

#: Environment variables set (unless already set) before TensorFlow is imported.
TF_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR", "GLOG_minloglevel": "3"}

#: Lines of TensorFlow's start-up noise (regular expressions, searched in each line).
NOISE_PATTERNS: tuple[str, ...] = (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"^[IWE]\d{4} [\d:. ]+\s+\d+ (port|cudart_stub|cuda_platform|cuda_executor|cuda_dnn|cuda_fft|cuda_blas|"
    r"gpu_device|cpu_feature_guard|computation_placer|dso_loader|cuda_diagnostics|"
    r"service|stream_executor|cpu_utils|tensorrt|direct_session)\.cc:\d+\]",
    r"oneDNN custom operations are on",
    r"To turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`",
    r"Could not find cuda drivers on your machine",
    r"failed call to cuInit",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"TF-TRT Warning: Could not find TensorRT",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* in other operations, rebuild TensorFlow",
    r"computation placer already registered",
)
_NOISE = re.compile("|".join(f"(?:{p})" for p in NOISE_PATTERNS))
# A line that may still turn out to be noise once complete starts like one of these.
_NOISE_STARTS = ("WARNING: All log", "I0000", "W0000", "E0000")


def is_noise(line: str) -> bool:
    """Tell whether one line of standard error is TensorFlow start-up noise."""
    return bool(_NOISE.search(line))


def _may_become_noise(partial: str) -> bool:
    return any(s.startswith(partial[: len(s)]) or partial.startswith(s) for s in _NOISE_STARTS) or bool(
        re.match(r"^[IWE]\d", partial)
    )


def _pump(read_fd: int, write_fd: int) -> None:
    """Copy ``read_fd`` to ``write_fd`` until EOF, dropping noise lines (\\n or \\r ended)."""
    pending = ""
    decoder_buffer = b""
    while True:
        try:
            chunk = os.read(read_fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        decoder_buffer += chunk
        try:
            text = decoder_buffer.decode("utf-8")
            decoder_buffer = b""
        except UnicodeDecodeError as e:
            if e.start >= len(decoder_buffer) - 3:  # a character cut in two: wait for the rest
                text, decoder_buffer = decoder_buffer[: e.start].decode("utf-8"), decoder_buffer[e.start :]
            else:
                text, decoder_buffer = decoder_buffer.decode("utf-8", "replace"), b""
        pending += text
        out = []
        while True:
            cut = min((i for i in (pending.find("\n"), pending.find("\r")) if i >= 0), default=-1)
            if cut < 0:
                break
            line, pending = pending[: cut + 1], pending[cut + 1 :]
            if not is_noise(line):
                out.append(line)
        if pending and not _may_become_noise(pending):  # e.g. a progress bar being drawn
            out.append(pending)
            pending = ""
        if out:
            _write_all(write_fd, "".join(out).encode("utf-8", "replace"))
    rest = pending.encode("utf-8", "replace") + decoder_buffer
    if rest and not is_noise(pending):
        _write_all(write_fd, rest)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except OSError:
            return
        data = data[n:]


@contextlib.contextmanager
def quiet_tensorflow(enabled: bool = True) -> Iterator[None]:
    """Keep TensorFlow's start-up noise off standard error while the block runs.

    Sets :data:`TF_QUIET_ENV` (where not already set) for a TensorFlow imported inside the
    block, and filters file descriptor 2 (see the module's docstring). Does nothing when
    ``enabled`` is False (``--debug``) or standard error cannot be redirected.

    Parameters
    ----------
    enabled : bool, default True
    """
    if not enabled:
        yield
        return
    for key, value in TF_QUIET_ENV.items():
        os.environ.setdefault(key, value)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_fd, write_fd = os.pipe()
    except (OSError, AttributeError, ValueError):  # no real descriptor 2 (e.g. an embedded interpreter)
        yield
        return
    os.dup2(write_fd, 2)
    os.close(write_fd)
    pump = threading.Thread(target=_pump, args=(read_fd, saved), name="revsearch-stderr-filter", daemon=True)
    pump.start()
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump reads EOF
        pump.join(timeout=5)
        os.close(read_fd)
        os.close(saved)
