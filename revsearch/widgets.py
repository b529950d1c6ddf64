"""Notebook support: the search widget, and the steps of ``Reverse_Search.ipynb``.

The notebook only calls the functions here, so everything it does is tested:

>>> from revsearch.widgets import notebook_settings, fetch_data, prepare_index, search_widget
>>> settings = notebook_settings(storage="VM disk", download=True, model="resnet50-seed")
>>> fetch_data(settings)                       # the original project's images and vector files
>>> index, report = prepare_index(settings)    # import the vector files, or build a new index
>>> search_widget(**settings.search_kwargs())  # an upload button, a path box, a k slider

:func:`search_widget` works in Jupyter, JupyterLab, VS Code and Colab (ipywidgets 7 or 8).
A search never puts a traceback in the widget: what went wrong is shown as one clear message.

Importing this module is cheap: ipywidgets, IPython, TensorFlow and gdown are imported only
when a function needs them.
"""

from __future__ import annotations

import base64
import html
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import RevsearchError

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets

    from .api import SearchResults
    from .images import ImageSource
    from .index import Index, UpdateReport

logger = logging.getLogger(__name__)

__all__ = [
    "COLAB_CONTENT",
    "DRIVE_MOUNT",
    "ENV_PREFIX",
    "NotebookSettings",
    "SearchApp",
    "enable_colab_widgets",
    "fetch_data",
    "in_colab",
    "mount_drive",
    "notebook_logging",
    "notebook_settings",
    "prepare_index",
    "sample_query",
    "search_image",
    "search_widget",
    "show_search",
    "uploaded_files",
]

#: The VM's local disk in Colab (fast; emptied when the runtime is recycled).
COLAB_CONTENT = Path("/content")
#: Where Google Drive is mounted in Colab.
DRIVE_MOUNT = Path("/content/drive")
#: Environment variables named ``ENV_PREFIX + NAME`` override the notebook's form (see
#: :func:`notebook_settings`).
ENV_PREFIX = "REVSEARCH_NB_"

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n", ""}


# --------------------------------------------------------------------------- environment


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


class _NotebookHandler(logging.Handler):
    """Writes records to the current ``sys.stdout`` (which a notebook routes to the running cell)."""

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
    if not any(isinstance(h, _NotebookHandler) for h in log.handlers):
        handler = _NotebookHandler()
        handler.setFormatter(_NotebookFormatter())
        log.addHandler(handler)
    return log


class _NotebookFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return f"{record.levelname.capitalize()}: {text}" if record.levelno >= logging.WARNING else text


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class NotebookSettings:
    """Where the notebook keeps its data, and how it searches.

    Attributes
    ----------
    storage : {"drive", "local"}
        ``"drive"``: archives, index and result pictures on Google Drive (kept between sessions);
        ``"local"``: everything on this machine's disk.
    colab : bool
        Running in Colab (and not offline).
    offline : bool
        Never mount Drive nor download anything.
    download : bool
        Download the original project's data if it is not there yet.
    model : str
        ``"resnet50-seed"`` (the original project's vectors), ``"resnet50"`` or ``"mobilenet"``.
    weights : str or None
        ``"imagenet"``, a weights file, or None (random weights: for tests only).
    k : int
        Number of matches.
    work_dir : pathlib.Path
        A folder on the local disk: images and vector files are unpacked here (Colab reads many
        small files from Drive slowly).
    persist_dir : pathlib.Path
        The folder for archives, index and results: on Drive with ``storage="drive"`` in Colab,
        else ``work_dir``.
    archive_dir, dataset_dir, legacy_dir, vector_dir, output_dir : pathlib.Path
        Downloaded archives; the images searched; the original project's vector files; the
        index; the result pictures.
    own_dataset : bool
        ``dataset_dir`` is the user's own folder (not the original project's images).
    """

    storage: str
    colab: bool
    offline: bool
    download: bool
    model: str
    weights: str | None
    k: int
    work_dir: Path
    persist_dir: Path
    archive_dir: Path
    dataset_dir: Path
    legacy_dir: Path
    vector_dir: Path
    output_dir: Path
    own_dataset: bool

    def search_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`search_widget` for these settings."""
        return {
            "vector_dir": self.vector_dir,
            "dataset_dir": self.dataset_dir,
            "model": self.model,
            "k": self.k,
            "weights": self.weights,
        }

    def describe(self) -> str:
        """A few lines saying where everything is."""
        where = "Google Drive" if self.persist_dir != self.work_dir else "this machine's disk"
        lines = [
            f"model:            {self.model}" + ("" if self.weights == "imagenet" else f" (weights: {self.weights})"),
            f"matches (k):      {self.k}",
            f"images:           {self.dataset_dir}" + ("" if self.own_dataset else " (the original project's)"),
            f"index:            {self.vector_dir} (on {where})",
            f"downloads:        {self.archive_dir}" if self.download else "downloads:        off",
            f"result pictures:  {self.output_dir}",
        ]
        if self.offline:
            lines.append("offline:          yes (no Drive, no download)")
        return "\n".join(lines)


def _env(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(ENV_PREFIX + name)
    return None if value is None else value.strip()


def _parse_bool(text: str, name: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise RevsearchError(f"{ENV_PREFIX}{name}={text!r}: use 1/0, true/false, yes/no")


def _parse_storage(text: str) -> str:
    low = text.strip().lower()
    if "drive" in low:
        return "drive"
    if low in ("vm disk", "vm", "local", "disk", "local disk", "vm's disk", "this machine"):
        return "local"
    raise RevsearchError(f"storage {text!r} is neither 'Google Drive' nor 'VM disk'")


def _parse_weights(text: str | None) -> str | None:
    if text is None or text.strip().lower() in ("", "none", "random"):
        return None
    return text.strip()


def _folder(text: str | os.PathLike) -> Path:
    return Path(os.path.expanduser(str(text))).absolute()


def notebook_settings(
    storage: str = "Google Drive",
    download: bool = True,
    dataset_dir: str | os.PathLike | None = "",
    model: str = "resnet50-seed",
    k: int = 9,
    *,
    weights: str | None = "imagenet",
    work_dir: str | os.PathLike | None = None,
    drive_dir: str | os.PathLike | None = None,
    env: Mapping[str, str] | None = None,
) -> NotebookSettings:
    """Turn the notebook's form into folders, mounting Google Drive if asked to and in Colab.

    Each argument can be overridden by an environment variable ``REVSEARCH_NB_<NAME>``, which wins
    over the form: ``STORAGE``, ``DOWNLOAD`` (1/0), ``DATASET_DIR``, ``MODEL``, ``K``, ``WEIGHTS``
    (``imagenet``, ``none`` or a file), ``WORK_DIR``, ``DRIVE_DIR``, and ``OFFLINE``
    (1: never mount Drive nor download; for automated runs). The notebook's test uses them.

    Nothing is created on disk here (but Drive is mounted when it is used).

    Parameters
    ----------
    storage : {"Google Drive", "VM disk"}
        Where to keep archives, index and result pictures. Google Drive keeps them between
        sessions; it is used only in Colab (elsewhere the local folder is used, with a warning).
        Images and vector files are always unpacked to the local disk, which reads faster.
    download : bool, default True
        Download the original project's data (what is already there is skipped).
    dataset_dir : path, optional
        Your own folder of images; empty: the original project's images.
    model : {"resnet50-seed", "resnet50", "mobilenet"}
        ``"resnet50-seed"`` imports the original project's vector files (no model run over the
        dataset); the others build a new index.
    k : int, default 9
    weights : str or None, default "imagenet"
    work_dir : path, optional
        The local folder; default ``/content/revsearch-data`` in Colab, else ``./revsearch-data``.
    drive_dir : path, optional
        The folder on Drive; default ``/content/drive/MyDrive/revsearch-data``.
    env : mapping, optional
        The environment to read overrides from (default ``os.environ``).

    Returns
    -------
    NotebookSettings

    Raises
    ------
    RevsearchError
        An unknown storage or model, an unreadable override, or Drive could not be mounted.
    """
    from .embedding import MODELS

    env = os.environ if env is None else env
    offline = _parse_bool(_env(env, "OFFLINE") or "0", "OFFLINE")
    if (v := _env(env, "STORAGE")) is not None:
        storage = v
    if (v := _env(env, "DOWNLOAD")) is not None:
        download = _parse_bool(v, "DOWNLOAD")
    if (v := _env(env, "DATASET_DIR")) is not None:
        dataset_dir = v
    if (v := _env(env, "MODEL")) is not None:
        model = v
    if (v := _env(env, "K")) is not None:
        try:
            k = int(v)
        except ValueError:
            raise RevsearchError(f"{ENV_PREFIX}K={v!r} is not a whole number") from None
    if (v := _env(env, "WEIGHTS")) is not None:
        weights = v
    if (v := _env(env, "WORK_DIR")) is not None:
        work_dir = v or None
    if (v := _env(env, "DRIVE_DIR")) is not None:
        drive_dir = v or None

    kind = _parse_storage(storage)
    model = model.strip().lower()
    if model not in MODELS:
        raise RevsearchError(f"unknown model {model!r}: choose one of {', '.join(sorted(MODELS))}")
    if int(k) < 1:
        raise RevsearchError(f"k must be at least 1, not {k}")
    weights = _parse_weights(weights)
    if offline and download:
        logger.info("offline: the original data will not be downloaded")
        download = False

    colab = in_colab() and not offline
    # Not "revsearch": a folder of that name in the working directory would shadow the package.
    local = _folder(work_dir) if work_dir else (COLAB_CONTENT if colab else Path.cwd()) / "revsearch-data"
    if colab:
        enable_colab_widgets()  # tqdm's progress bars are ipywidgets too
    if kind == "drive" and colab:
        my_drive = mount_drive(DRIVE_MOUNT)
        persist = _folder(drive_dir) if drive_dir else my_drive / "revsearch-data"
    else:
        if kind == "drive":
            logger.info(
                "%s: Google Drive is not used; everything is kept in %s",
                "offline" if offline else "not in Colab",
                local,
            )
        persist = local

    own = bool(dataset_dir and str(dataset_dir).strip())
    dataset = _folder(dataset_dir) if own else local / "imagenet_resized"  # type: ignore[arg-type]
    # One index per dataset, model and weights: switching the model never clashes with an index.
    tag = f"{dataset.name or 'dataset'}-{model}"
    if weights != "imagenet":
        tag += "-random" if weights is None else f"-{Path(weights).stem}"
    return NotebookSettings(
        storage="drive" if persist != local else "local",
        colab=colab,
        offline=offline,
        download=bool(download),
        model=model,
        weights=weights,
        k=int(k),
        work_dir=local,
        persist_dir=persist,
        archive_dir=persist / "archives",
        dataset_dir=dataset,
        legacy_dir=local / "legacy_vectors",
        vector_dir=persist / "indexes" / tag,
        output_dir=persist / "results",
        own_dataset=own,
    )


# --------------------------------------------------------------------------- data and index


def fetch_data(settings: NotebookSettings, *, quiet: bool = False) -> dict[str, Path]:
    """Download and unpack the original project's data the settings need, if download is on.

    The images are fetched unless the settings name your own folder; the vector files only
    for ``model="resnet50-seed"`` on the original images, until they are imported into the index.
    What is already there is skipped, an interrupted download resumes (see
    :func:`revsearch.data.fetch_original_data`).

    Parameters
    ----------
    settings : NotebookSettings
    quiet : bool, default False
        Hide progress bars.

    Returns
    -------
    dict of str to pathlib.Path
        ``{"images": ..., "vectors": ...}`` for what was fetched or found; empty when download
        is off or nothing is needed.

    Raises
    ------
    DownloadError
        If a download or an extraction fails; the message says what to do.
    """
    if not settings.download:
        logger.info("Download is off: using the images in %s", settings.dataset_dir)
        return {}
    from .index import Index

    images = not settings.own_dataset
    vectors = images and settings.model == "resnet50-seed" and not Index.exists(settings.vector_dir)
    if not images:
        logger.info("Using your own images in %s: nothing to download", settings.dataset_dir)
        return {}
    from .data import fetch_original_data

    found = fetch_original_data(
        settings.work_dir, images=images, vectors=vectors, archive_dir=settings.archive_dir, quiet=quiet
    )
    for key, path in found.items():
        logger.info("%s: %s", key, path)
    return found


def _has_legacy_files(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    from .legacy import LEGACY_EXTENSIONS

    for _, _, files in os.walk(folder):
        if any(f.lower().endswith(LEGACY_EXTENSIONS) and not f.startswith("._") for f in files):
            return True
    return False


def prepare_index(
    settings: NotebookSettings, *, progress: bool = True, batch_size: int = 32
) -> tuple[Index, UpdateReport | None]:
    """Open, import or build the index the settings describe; a rerun reuses what exists.

    - An index already in ``settings.vector_dir`` that was imported from the original vector
      files is opened as it is.
    - With ``model="resnet50-seed"`` on the original images, the original vector files (in
      ``settings.legacy_dir``) are imported (:func:`revsearch.legacy.import_legacy`): no model run.
    - Otherwise the images are indexed with the model (:meth:`revsearch.index.Index.build`),
      with a progress bar; a rerun embeds only new or changed images and resumes an interrupted run.

    Parameters
    ----------
    settings : NotebookSettings
    progress : bool, default True
    batch_size : int, default 32

    Returns
    -------
    index : Index
    report : UpdateReport or None
        What indexing did; None when the index was imported or reused as it was.

    Raises
    ------
    RevsearchError
        If the image folder does not exist (with what to do), or indexing fails.
    """
    from .index import Index

    dataset = settings.dataset_dir
    if not dataset.is_dir():
        hint = (
            "check DATASET_DIR"
            if settings.own_dataset
            else "turn on DOWNLOAD_ORIGINAL_DATA and run the data step, or set DATASET_DIR to your own folder"
        )
        raise RevsearchError(f"the image folder {str(dataset)!r} does not exist: {hint}")
    vector_dir = settings.vector_dir
    if Index.exists(vector_dir):
        index = Index.open(vector_dir)
        if "imported_from" in index.manifest and index.complete:
            logger.info("Reusing the index imported from the original vector files: %s", index)
            return index, None
    elif settings.model == "resnet50-seed" and not settings.own_dataset and _has_legacy_files(settings.legacy_dir):
        from .legacy import import_legacy

        logger.info("Importing the original vector files from %s", settings.legacy_dir)
        index, legacy = import_legacy(settings.legacy_dir, vector_dir, dataset_dir=dataset, progress=progress)
        if legacy.skipped:
            logger.warning("%d vector files could not be used (see the messages above)", len(legacy.skipped))
        return index, None
    from .index import resolve_embedder

    existing = Index.open(vector_dir) if Index.exists(vector_dir) else None
    embedder = resolve_embedder(existing, settings.model, weights=settings.weights)
    index, report = Index.build(dataset, vector_dir, embedder, batch_size=batch_size, progress=progress)
    if report.skipped:  # each one was logged with its reason while indexing
        logger.warning("%d files could not be read and were skipped (see the messages above)", len(report.skipped))
    return index, report


def sample_query(settings: NotebookSettings, query: str | os.PathLike | None = None) -> Path:
    """A query image: ``query`` if given, else the first image of the dataset (for a demo).

    Parameters
    ----------
    settings : NotebookSettings
    query : path, optional
        A path; ``~`` is expanded.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    RevsearchError
        If ``query`` is not given and the dataset folder holds no image.
    """
    if query and str(query).strip():
        return _folder(str(query).strip())
    from .images import find_images

    try:
        files = find_images(settings.dataset_dir)
    except FileNotFoundError as e:
        raise RevsearchError(str(e)) from None
    if not files:
        raise RevsearchError(f"no image in {str(settings.dataset_dir)!r} to use as a query: set QUERY")
    return files[0]


# --------------------------------------------------------------------------- searching and showing


def search_image(
    query: ImageSource,
    vector_dir: str | os.PathLike,
    *,
    dataset_dir: str | os.PathLike | None = None,
    model: Any = None,
    k: int = 9,
    weights: str | os.PathLike | None = "imagenet",
    title: str | None = "query",
) -> SearchResults:
    """Search an existing index and draw the query above its matches.

    Parameters
    ----------
    query : ImageSource
        A path, the bytes of an uploaded file, a Pillow image or an array.
    vector_dir : path
        The index folder.
    dataset_dir : path, optional
        Where the images are (default: the folder recorded in the index).
    model : str or Embedder, optional
        Default: the model the index was built with.
    k : int, default 9
    weights : {"imagenet", None} or path
        Used with a model name.
    title : str, optional
        Title of the query panel.

    Returns
    -------
    SearchResults
        With ``figure`` set.

    Raises
    ------
    RevsearchError
        The query cannot be read, there is no index, or the model does not match it.
    """
    from .api import reverse_image_search
    from .display import plot_results
    from .images import load_image

    image = load_image(query)
    results = reverse_image_search(
        image, model, dataset_dir, vector_dir, generate=False, k=k, weights=weights, progress=False
    )
    results.figure = plot_results(image, results, title=title)
    return results


def _stream(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text if text.endswith("\n") else text + "\n"}


def _picture(png: bytes, text: str) -> dict[str, Any]:
    return {
        "output_type": "display_data",
        "data": {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": text},
        "metadata": {},
    }


def _message(text: str) -> dict[str, Any]:
    body = html.escape(text).replace("\n", "<br>")
    return {
        "output_type": "display_data",
        "data": {
            "text/plain": text,
            "text/html": f'<div style="color:#b00020;font-weight:bold">&#9888; {body}</div>',
        },
        "metadata": {},
    }


def _failure(query: Any, name: str, reason: str) -> str:
    """'Could not search ...' naming the file (image errors name uploaded bytes "the given bytes")."""
    reason = reason.replace(f"the given {type(query).__name__}", repr(name))
    return f"Could not search: {reason}" if repr(name) in reason else f"Could not search with {name!r}: {reason}"


def _listing(results: SearchResults) -> str:
    return "\n".join(f"{m.rank + 1:>3}. {m.score:.3f}  {m.relpath}" for m in results)


def show_search(
    output: ipywidgets.Output,
    query: ImageSource,
    *,
    name: str,
    vector_dir: str | os.PathLike,
    append: bool = False,
    **kwargs: Any,
) -> SearchResults | None:
    """Search with one image and show the result (or what went wrong) in an Output widget.

    This is what the search widget does for each upload: the query above the grid of matches
    (an ``image/png`` output) and a list of the matches with their scores; or, if the image
    cannot be read or the search fails, one clear message (never a traceback).

    Parameters
    ----------
    output : ipywidgets.Output
        Where to show it; its previous content is replaced unless ``append``.
    query : ImageSource
        The bytes of an upload, or a path.
    name : str
        The file's name, shown as the title and in messages.
    vector_dir : path
        The index folder.
    append : bool, default False
        Add below what ``output`` shows.
    **kwargs
        ``dataset_dir``, ``model``, ``k``, ``weights``: see :func:`search_image`.

    Returns
    -------
    SearchResults or None
        None if the search failed (the message is in ``output``).
    """
    before = tuple(output.outputs) if append else ()
    output.outputs = (*before, _stream(f"Searching with {name} ..."))
    try:
        results = search_image(query, vector_dir, title=name, **kwargs)
        from .display import figure_png

        picture = _picture(figure_png(results.figure), f"{name} and its {len(results)} best matches")
    except RevsearchError as e:
        logger.info("search with %s failed: %s", name, e)
        output.outputs = (*before, _message(_failure(query, name, str(e))))
        return None
    except Exception as e:  # anything else: still one message for the user, details in the log
        logger.debug("search with %s failed", name, exc_info=True)
        output.outputs = (*before, _message(_failure(query, name, f"unexpected {type(e).__name__}: {e}")))
        return None
    output.outputs = (*before, picture, _stream(_listing(results)))
    return results


def uploaded_files(value: Any) -> list[tuple[str, bytes]]:
    """The files of a ``FileUpload.value``, for ipywidgets 8 and 7.

    Parameters
    ----------
    value : tuple of dict, or dict
        ipywidgets 8: a tuple of ``{"name", "type", "size", "content" (memoryview),
        "last_modified"}``; ipywidgets 7: ``{name: {"metadata": {...}, "content": bytes}}``.

    Returns
    -------
    list of (str, bytes)
        Each file's name and content.
    """
    if not value:
        return []
    if isinstance(value, Mapping):  # ipywidgets 7
        items = []
        for key, item in value.items():
            meta = item.get("metadata") or {}
            items.append((str(meta.get("name", key)), bytes(item.get("content") or b"")))
        return items
    out = []
    for item in value:
        out.append((str(item.get("name", "upload")), bytes(item.get("content") or b"")))
    return out


class SearchApp:
    """The search widget and what it does; :func:`search_widget` returns its :attr:`widget`.

    Parameters
    ----------
    vector_dir : path
        The index folder.
    dataset_dir : path, optional
        Where the images are (default: the folder recorded in the index).
    model : str or Embedder, optional
        Default: the model the index was built with.
    k : int, default 9
        Initial number of matches.
    weights : {"imagenet", None} or path
    max_k : int, default 30
        The slider's maximum.

    Attributes
    ----------
    upload : ipywidgets.FileUpload
        Each upload is searched at once.
    path : ipywidgets.Text
        A file path, searched with :attr:`button`.
    k : ipywidgets.IntSlider
        Number of matches; moving it searches the last query again.
    button : ipywidgets.Button
        Searches the path (or the last upload again).
    output : ipywidgets.Output
        The query above its matches, or a message.
    widget : ipywidgets.VBox
        All of them.
    results : SearchResults or None
        The last search's results.
    """

    def __init__(
        self,
        vector_dir: str | os.PathLike,
        *,
        dataset_dir: str | os.PathLike | None = None,
        model: Any = None,
        k: int = 9,
        weights: str | os.PathLike | None = "imagenet",
        max_k: int = 30,
    ) -> None:
        import ipywidgets as w

        self.options: dict[str, Any] = {
            "vector_dir": vector_dir,
            "dataset_dir": dataset_dir,
            "model": model,
            "weights": weights,
        }
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Upload a photo")
        self.path = w.Text(
            placeholder="... or the path of an image file",
            description="Path:",
            layout=w.Layout(width="60%"),
        )
        self.button = w.Button(description="Search", icon="search", button_style="primary", tooltip="Search this file")
        self.k = w.IntSlider(
            value=k,
            min=1,
            max=max(max_k, k),
            description="Matches:",
            continuous_update=False,
        )
        self.output = w.Output()
        self.widget = w.VBox([self.upload, w.HBox([self.path, self.button]), self.k, self.output])
        self.results: SearchResults | None = None
        self._last: tuple[Any, str] | None = None
        self.upload.observe(self._on_upload, names="value")
        self.button.on_click(self._on_click)
        self.k.observe(self._on_k, names="value")

    def search(self, query: ImageSource, name: str, *, append: bool = False) -> SearchResults | None:
        """Search with an image (bytes or path) and show the result in :attr:`output`."""
        self._last = (query, name)
        self.results = show_search(
            self.output, query, name=name, append=append, k=int(self.k.value), **self.options
        )
        return self.results

    def _on_upload(self, change: dict[str, Any]) -> None:
        try:
            files = uploaded_files(change.get("new"))
        except Exception as e:  # a value of an unexpected shape
            self.output.outputs = (_message(f"Could not read the upload: {type(e).__name__}: {e}"),)
            return
        if not files:
            return
        for i, (name, content) in enumerate(files):
            self.search(content, name, append=i > 0)
        self._reset_upload()

    def _reset_upload(self) -> None:
        """Empty the upload widget, so that the same file can be uploaded again."""
        try:
            if isinstance(self.upload.value, dict):  # ipywidgets 7
                self.upload.value.clear()
                self.upload._counter = 0
            else:
                self.upload.value = ()
        except Exception as e:  # pragma: no cover - a front end that refuses
            logger.debug("could not reset the upload widget: %s", e)

    def _on_click(self, _button: Any = None) -> None:
        text = self.path.value.strip()
        if text:
            self.search(_folder(text), text)
        elif self._last is not None:
            self.search(*self._last)
        else:
            self.output.outputs = (_message("Upload a photo, or type the path of an image file, then press Search."),)

    def _on_k(self, _change: dict[str, Any]) -> None:
        if self._last is not None:
            self.search(*self._last)

    def _ipython_display_(self) -> None:  # pragma: no cover - notebook display
        from IPython.display import display

        display(self.widget)


def search_widget(
    vector_dir: str | os.PathLike,
    *,
    dataset_dir: str | os.PathLike | None = None,
    model: Any = None,
    k: int = 9,
    weights: str | os.PathLike | None = "imagenet",
    max_k: int = 30,
) -> ipywidgets.VBox:
    """A search box for a notebook: upload a photo (or type a path) and see its best matches.

    Each upload is searched at once; the output area shows the query above the grid of its
    ``k`` best matches and their scores, or a clear message if the file is not an image.
    In Colab with ipywidgets 8, call :func:`enable_colab_widgets` first.

    Parameters
    ----------
    vector_dir : path
        The index folder (build it first: :func:`prepare_index` or ``reverse_image_search(...,
        generate=True)``).
    dataset_dir : path, optional
        Where the images are (default: the folder recorded in the index).
    model : str or Embedder, optional
        Default: the model the index was built with.
    k : int, default 9
        Initial number of matches (a slider changes it).
    weights : {"imagenet", None} or path
        Used with a model name.
    max_k : int, default 30
        The slider's maximum.

    Returns
    -------
    ipywidgets.VBox
        Its children: the ``FileUpload``, an ``HBox`` of the path ``Text`` and the search
        ``Button``, the k ``IntSlider``, and the ``Output`` area. (Use :class:`SearchApp` to
        reach them by name.)
    """
    return SearchApp(
        vector_dir, dataset_dir=dataset_dir, model=model, k=k, weights=weights, max_k=max_k
    ).widget
