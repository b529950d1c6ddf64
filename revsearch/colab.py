"""The notebook's environment: Google Colab, Google Drive, log messages in the cell, the GPUs.

:mod:`revsearch.notebook` (the notebook's steps) uses these; they are apart so that the steps
can be read, and tested, without Colab. Importing this module imports nothing heavy.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from .errors import RevsearchError
from .safety import display_name

logger = logging.getLogger(__name__)

__all__ = [
    "COLAB_CONTENT",
    "DRIVE_MOUNT",
    "NotebookHandler",
    "enable_colab_widgets",
    "gpu_devices",
    "in_colab",
    "mount_drive",
    "notebook_logging",
]

#: The VM's local disk in Colab (fast; emptied when the runtime is recycled).
COLAB_CONTENT = Path("/content")
#: Where Google Drive is mounted in Colab (``REVSEARCH_NB_DRIVE_MOUNT`` overrides it).
DRIVE_MOUNT = Path("/content/drive")


def in_colab() -> bool:
    """Tell whether the code runs in a Google Colab runtime."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def mount_drive(mountpoint: str | os.PathLike = DRIVE_MOUNT) -> Path:
    """Mount Google Drive in Colab (asks for permission the first time), unless it is mounted.

    Parameters
    ----------
    mountpoint : path, default ``/content/drive``

    Returns
    -------
    pathlib.Path
        The "My Drive" folder, ``mountpoint/MyDrive``.

    Raises
    ------
    RevsearchError
        Outside Colab, or if mounting fails.
    """
    mountpoint = Path(mountpoint)
    my_drive = mountpoint / "MyDrive"
    if my_drive.is_dir():
        return my_drive
    try:
        from google.colab import drive  # type: ignore[import-not-found]
    except ImportError:
        raise RevsearchError("Google Drive can only be mounted in Google Colab; use a local folder here") from None
    try:
        drive.mount(str(mountpoint))
    except Exception as e:  # Colab raises ValueError / MessageError when permission is refused
        raise RevsearchError(
            f"mounting Google Drive failed ({type(e).__name__}: {e}); allow access when asked, or choose "
            "the VM disk in the settings"
        ) from None
    return my_drive


def _ipywidgets_major() -> int:
    import ipywidgets

    try:
        return int(str(ipywidgets.__version__).split(".")[0])
    except ValueError:  # pragma: no cover - odd version string
        return 8


def enable_colab_widgets() -> bool:
    """In Colab with ipywidgets 8 or later, enable the custom widget manager that those need.

    Colab renders ipywidgets 7 natively, but ipywidgets 8 widgets (and tqdm's notebook progress
    bars built on them) only after ``google.colab.output.enable_custom_widget_manager()``.
    Elsewhere this does nothing.

    Returns
    -------
    bool
        True if the custom widget manager was enabled.
    """
    if not in_colab():
        return False
    if _ipywidgets_major() < 8:
        return False
    try:
        from google.colab import output  # type: ignore[import-not-found]

        output.enable_custom_widget_manager()
    except Exception as e:  # pragma: no cover - only in Colab
        logger.warning("could not enable Colab's custom widget manager (%s): widgets may not show", e)
        return False
    return True


class NotebookHandler(logging.Handler):
    """The handler :func:`notebook_logging` adds: writes records to the current ``sys.stdout`` (which a notebook routes to the running cell)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # pragma: no cover
            self.handleError(record)


def notebook_logging(level: int | str = logging.INFO) -> logging.Logger:
    """Show revsearch's log messages (what is downloaded, indexed, skipped) in a notebook's output.

    Adds one handler to the ``revsearch`` logger (once, however often it is called) that writes
    ``message`` (``Warning: message`` for warnings and errors) to standard output.

    Parameters
    ----------
    level : int or str, default ``logging.INFO``

    Returns
    -------
    logging.Logger
        The ``revsearch`` logger.
    """
    log = logging.getLogger("revsearch")
    log.setLevel(level)
    if not any(isinstance(h, NotebookHandler) for h in log.handlers):
        handler = NotebookHandler()
        handler.setFormatter(NotebookFormatter())
        log.addHandler(handler)
    return log


class NotebookFormatter(logging.Formatter):
    """``message``, or ``Warning: message`` for warnings and errors; control characters of file names
    escaped, line by line (some messages are several lines on purpose)."""

    def format(self, record: logging.LogRecord) -> str:
        text = "\n".join(display_name(line) for line in record.getMessage().split("\n"))
        return f"{record.levelname.capitalize()}: {text}" if record.levelno >= logging.WARNING else text


def gpu_devices() -> list[str]:
    """The GPUs TensorFlow can use, by name (:func:`revsearch.backends.gpu_devices`: TensorFlow is
    imported only where the machine has GPU device files).

    Returns
    -------
    list of str
        Device names such as ``"Tesla T4"``; empty on a CPU-only machine.
    """
    from .backends import gpu_devices as devices
    from .console import quiet_tensorflow

    with quiet_tensorflow():  # TensorFlow's C++ start-up lines (on a GPU runtime) filtered as the CLI does
        return [d.name for d in devices()]
