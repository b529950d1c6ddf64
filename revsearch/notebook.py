"""The steps of ``Reverse_Search.ipynb``: settings, data, index, duplicates (the Colab environment
itself, Google Drive and logging to the cell, is :mod:`revsearch.colab`).

The notebook only calls the functions here (and the search widget of :mod:`revsearch.widgets`),
so everything it does is tested:

>>> from revsearch.notebook import notebook_settings, fetch_data, prepare_index
>>> settings = notebook_settings(storage="VM disk", download=True, vectors="auto")
>>> fetch_data(settings)                       # the original project's images (and vector files)
>>> index, report = prepare_index(settings)    # import the vector files, or index the images

Where things go. With *Google Drive* storage in Colab, what must outlive the runtime is kept on
Drive: the unpacked images, the index and the result pictures (``MyDrive/revsearch-data``). The
downloaded archives go to the VM's local disk and are deleted once unpacked (and the vector
files once imported), unless ``keep_archives``. A second *Run all*, or a new session, finds the
images and the index and downloads nothing. Without Drive (refused, not in Colab, *VM disk*),
everything is kept on the local disk.

Importing this module is cheap: ipywidgets, IPython, TensorFlow and gdown are imported only
when a function needs them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .colab import (  # noqa: F401  (re-exported: the notebook's environment, revsearch.colab)
    COLAB_CONTENT,
    DRIVE_MOUNT,
    NotebookHandler,
    enable_colab_widgets,
    gpu_devices,
    in_colab,
    mount_drive,
    notebook_logging,
)
from .display import display_figure  # noqa: F401  (re-exported: notebook users call it from here)
from .core.errors import RevsearchError
from .core.measured import NOTEBOOK_VECTORS

if TYPE_CHECKING:  # pragma: no cover
    from .duplicates import DuplicateReport
    from .storage.index import Index
    from .storage.indexing import UpdateReport

logger = logging.getLogger(__name__)

__all__ = [
    "COLAB_CONTENT",
    "DRIVE_MOUNT",
    "ENV_PREFIX",
    "ORIGINAL_VECTORS",
    "REINDEX",
    "NotebookSettings",
    "default_vectors",
    "display_figure",
    "enable_colab_widgets",
    "estimate_indexing",
    "fetch_data",
    "gpu_devices",
    "in_colab",
    "mount_drive",
    "notebook_logging",
    "notebook_settings",
    "pipeline_note",
    "prepare_index",
    "query_text",
    "sample_query",
    "show_duplicates",
    "storage_report",
]

#: Environment variables named ``ENV_PREFIX + NAME`` override the notebook's form (see
#: :func:`notebook_settings`).
ENV_PREFIX = "REVSEARCH_NB_"

#: ``vectors`` setting: index the images with the library's default pipeline.
REINDEX = "reindex"
#: ``vectors`` setting: import the original project's vector files (its 2021 pipeline).
ORIGINAL_VECTORS = "original"

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n", ""}
#: The original project's images folder name (and the index tag's first part).
_IMAGES_FOLDER = "imagenet_resized"


# --------------------------------------------------------------------------- environment
# Colab, Google Drive, logging to the cell and the GPUs are revsearch.colab's (re-exported above).


def default_vectors(devices: Sequence[str] | None = None) -> str:
    """The ``vectors`` choice "auto" stands for: re-index on a GPU, the original vectors on a CPU.

    Re-indexing the original images with the default pipeline gives much better results
    (docs/notebook.md, "The notebook's vectors") but runs the model over every image: minutes on a GPU,
    much longer on Colab's 2 CPU cores, where importing the original vectors takes seconds.

    Parameters
    ----------
    devices : sequence of str, optional
        The GPU devices (default: :func:`gpu_devices`).

    Returns
    -------
    str
        :data:`REINDEX` or :data:`ORIGINAL_VECTORS`.
    """
    devices = gpu_devices() if devices is None else devices
    return REINDEX if any("GPU" in str(d).upper() for d in devices) else ORIGINAL_VECTORS


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class NotebookSettings:
    """Where the notebook keeps its data, and how it searches.

    Attributes
    ----------
    storage : {"drive", "local"}
        ``"drive"``: images, index and result pictures on Google Drive (kept between sessions);
        ``"local"``: everything on this machine's disk.
    colab : bool
        Running in Colab (and not offline).
    offline : bool
        Never mount Drive nor download anything.
    download : bool
        Download the original project's data if it is not there yet.
    vectors : {"reindex", "original"}
        Index the images with ``model`` and the default pipeline, or import the original
        project's vectors (``resnet50-seed``).
    vectors_reason : str
        Why (the form's choice, or what "auto" found).
    model : str
        The model of the index: ``"resnet50"`` or ``"mobilenet"`` (re-indexing), or
        ``"resnet50-seed"`` (the original vectors; also for your own images with that model).
    weights : str or None
        ``"imagenet"``, a weights file, or None (random weights: for tests only).
    k : int
        Number of matches.
    images_source, vectors_source : str
        Where the original images / vector files are downloaded from (Drive id or http(s) URL).
    keep_archives : bool
        Keep the downloaded archives after unpacking.
    work_dir : pathlib.Path
        A folder on the local disk (archives, vector files while they are imported).
    persist_dir : pathlib.Path
        On Drive with ``storage="drive"``, else ``work_dir``: images, index, results.
    archive_dir, dataset_dir, legacy_dir, vector_dir, output_dir : pathlib.Path
        Downloaded archives; the images searched; the original project's vector files; the
        index; the result pictures.
    own_dataset : bool
        ``dataset_dir`` is the user's own folder (not the original project's images).
    backend : {"auto", "keras", "openvino"}
        What runs the model while indexing (see :class:`revsearch.Embedder`); any backend
        searches any index.
    precision : {"float32", "bfloat16", "float16", "int8"} or None
        The compute precision while indexing; None: the default (the fastest precision within 0.005
        mAP of float32 that this CPU runs natively, see :func:`revsearch.models.backends.default_precision`).
        Vectors of every precision are comparable.
    """

    storage: str
    colab: bool
    offline: bool
    download: bool
    vectors: str
    vectors_reason: str
    model: str
    weights: str | None
    k: int
    images_source: str
    vectors_source: str
    keep_archives: bool
    work_dir: Path
    persist_dir: Path
    archive_dir: Path
    dataset_dir: Path
    legacy_dir: Path
    vector_dir: Path
    output_dir: Path
    own_dataset: bool
    backend: str = "auto"
    expand: bool = True
    precision: str | None = None

    def search_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`revsearch.widgets.search_widget` for these settings."""
        return {
            "vector_dir": self.vector_dir,
            "dataset_dir": self.dataset_dir,
            "model": self.model,
            "k": self.k,
            "weights": self.weights,
            "expand": self.expand,
        }

    def describe(self) -> str:
        """A few lines saying where everything is."""
        where = "Google Drive" if self.storage == "drive" else "this machine's disk"
        how = (
            "import the original project's vectors (fast, the original's quality)"
            if self.vectors == ORIGINAL_VECTORS
            else f"index the images with {self.model} and the default pipeline"
        )
        lines = [
            f"vectors:          {how} [{self.vectors_reason}]",
            f"model:            {self.model}" + ("" if self.weights == "imagenet" else f" (weights: {self.weights})"),
            f"matches (k):      {self.k}",
            f"images:           {self.dataset_dir}" + ("" if self.own_dataset else " (the original project's)"),
            f"index:            {self.vector_dir} (on {where})",
            f"result pictures:  {self.output_dir}",
        ]
        if self.download and not self.own_dataset:
            lines.append(f"downloads:        {self.archive_dir} (archives "
                         + ("kept)" if self.keep_archives else "deleted once unpacked)"))
            lines.append(f"images from:      {self.images_source}")
            if self.vectors == ORIGINAL_VECTORS:
                lines.append(f"vectors from:     {self.vectors_source}")
        elif not self.own_dataset:
            lines.append("downloads:        off")
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


def _parse_vectors(text: str) -> str:
    low = text.strip().lower()
    if low in ("", "auto") or low.startswith("auto"):
        return "auto"
    if "original" in low or low in ("import", "resnet50-seed"):
        return ORIGINAL_VECTORS
    if "index" in low or "default" in low:
        return REINDEX
    raise RevsearchError(
        f"vectors {text!r}: choose 'auto', 're-index the images with the default pipeline' or "
        "'use the original vectors'"
    )


def _parse_weights(text: str | None) -> str | None:
    if text is None or text.strip().lower() in ("", "none", "random"):
        return None
    return text.strip()


def _folder(text: str | os.PathLike) -> Path:
    return Path(os.path.expanduser(str(text))).absolute()


def _check_source(text: str, name: str) -> str:
    from .media.data import describe_source

    try:
        describe_source(text)
    except ValueError as e:
        raise RevsearchError(f"{name}: {e}") from None
    return text.strip()


def notebook_settings(
    storage: str = "Google Drive",
    download: bool = True,
    dataset_dir: str | os.PathLike | None = "",
    model: str = "resnet50",
    k: int = 9,
    *,
    vectors: str = "auto",
    images_source: str = "",
    vectors_source: str = "",
    keep_archives: bool = False,
    weights: str | None = "imagenet",
    work_dir: str | os.PathLike | None = None,
    drive_dir: str | os.PathLike | None = None,
    devices: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    backend: str = "auto",
    expand: bool = True,
    precision: str | None = None,
) -> NotebookSettings:
    """Turn the notebook's form into folders, mounting Google Drive if asked to and in Colab.

    Each argument can be overridden by an environment variable ``REVSEARCH_NB_<NAME>``, which wins
    over the form: ``STORAGE``, ``DOWNLOAD`` (1/0), ``DATASET_DIR``, ``VECTORS``, ``MODEL``, ``K``,
    ``IMAGES_SOURCE``, ``VECTORS_SOURCE``, ``KEEP_ARCHIVES`` (1/0), ``WEIGHTS`` (``imagenet``,
    ``none`` or a file), ``BACKEND`` (``auto``, ``keras``, ``openvino``), ``PRECISION`` (``auto``, ``float32``,
    ``bfloat16``, ``float16``, ``int8``), ``EXPAND`` (1/0), ``WORK_DIR``, ``DRIVE_DIR``, ``DRIVE_MOUNT`` (where Drive is mounted) and
    ``OFFLINE`` (1: never mount Drive nor download; for automated runs). The notebook's test uses
    them.

    Nothing is created on disk here (but Drive is mounted when it is used). If Drive cannot be
    mounted (access refused, or not available), one warning line says so and the VM's disk is used.

    Parameters
    ----------
    storage : {"Google Drive", "VM disk"}
        Where to keep images, index and result pictures. Google Drive keeps them between
        sessions; it is used only in Colab (elsewhere the local folder is used).
    download : bool, default True
        Download the original project's data (what is already there is skipped).
    dataset_dir : path, optional
        Your own folder of images; empty: the original project's images.
    model : {"resnet50", "mobilenet", "efficientnetv2-b0", "efficientnetv2-s", "convnext-tiny", "resnet50-seed"}, default "resnet50"
        The model that indexes the images. ``"resnet50-seed"`` means the original vectors.
    k : int, default 9
    vectors : str, default "auto"
        ``"re-index the images with the default pipeline"``, ``"use the original vectors"`` or
        ``"auto"``: re-index when TensorFlow sees a GPU, else the original vectors
        (:func:`default_vectors`). With your own images the images are always indexed.
    images_source, vectors_source : str, optional
        A Google Drive file id or link, or an http(s) URL (a mirror); empty: the original
        project's Google Drive files.
    keep_archives : bool, default False
        Keep the downloaded zip files after unpacking them.
    weights : str or None, default "imagenet"
    work_dir : path, optional
        The local folder; default ``/content/revsearch-data`` in Colab, else ``./revsearch-data``.
    drive_dir : path, optional
        The folder on Drive; default ``<Drive>/MyDrive/revsearch-data``.
    devices : sequence of str, optional
        The GPUs, for ``vectors="auto"`` (default: asked of TensorFlow).
    env : mapping, optional
        The environment to read overrides from (default ``os.environ``).
    backend : {"auto", "keras", "openvino"}, default "auto"
        What runs the model while indexing: ``"auto"`` is OpenVINO on a CPU where it is
        installed, Keras on a GPU.
    expand : bool, default True
        Query expansion and database-side augmentation in searches (``EXPAND``: 1/0); off: a
        plain cosine search.
    precision : {"auto", "float32", "bfloat16", "float16", "int8"} or None, default None
        The compute precision while indexing (None or ``"auto"``: the default). ``"int8"``
        quantizes the OpenVINO model, calibrated on a seeded sample of the images indexed.

    Returns
    -------
    NotebookSettings

    Raises
    ------
    RevsearchError
        An unknown storage, model or vectors choice, a bad source, or an unreadable override.
    """
    from .models.clip import TEXT_MODELS
    from .media.data import ORIGINAL_IMAGES_ID, ORIGINAL_VECTORS_ID
    from .models.catalogue import MODELS

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
    if (v := _env(env, "VECTORS")) is not None:
        vectors = v
    if (v := _env(env, "K")) is not None:
        try:
            k = int(v)
        except ValueError:
            raise RevsearchError(f"{ENV_PREFIX}K={v!r} is not a whole number") from None
    if (v := _env(env, "IMAGES_SOURCE")) is not None:
        images_source = v
    if (v := _env(env, "VECTORS_SOURCE")) is not None:
        vectors_source = v
    if (v := _env(env, "KEEP_ARCHIVES")) is not None:
        keep_archives = _parse_bool(v, "KEEP_ARCHIVES")
    if (v := _env(env, "WEIGHTS")) is not None:
        weights = v
    if (v := _env(env, "BACKEND")) is not None:
        backend = v or "auto"
    if (v := _env(env, "EXPAND")) is not None:
        expand = _parse_bool(v or "1", "EXPAND")
    if (v := _env(env, "PRECISION")) is not None:
        precision = v or None
    if (v := _env(env, "WORK_DIR")) is not None:
        work_dir = v or None
    if (v := _env(env, "DRIVE_DIR")) is not None:
        drive_dir = v or None
    mount_point = _folder(_env(env, "DRIVE_MOUNT") or DRIVE_MOUNT)

    kind = _parse_storage(storage)
    model = model.strip().lower()
    if model not in MODELS and model not in TEXT_MODELS:
        raise RevsearchError(f"unknown model {model!r}: choose one of {', '.join(sorted([*MODELS, *TEXT_MODELS]))}")
    if int(k) < 1:
        raise RevsearchError(f"k must be at least 1, not {k}")
    backend = str(backend).strip().lower()
    if backend not in ("auto", "keras", "openvino"):
        raise RevsearchError(f"unknown backend {backend!r}: choose auto, keras or openvino")
    precision = None if precision is None or str(precision).strip().lower() in ("", "auto") else str(precision).strip().lower()
    if precision not in (None, "float32", "bfloat16", "float16", "int8"):
        raise RevsearchError(f"unknown precision {precision!r}: choose auto, float32, bfloat16, float16 or int8")
    weights = _parse_weights(weights)
    images_source = _check_source(images_source or ORIGINAL_IMAGES_ID, "IMAGES_SOURCE")
    vectors_source = _check_source(vectors_source or ORIGINAL_VECTORS_ID, "VECTORS_SOURCE")
    own = bool(dataset_dir and str(dataset_dir).strip())

    choice = _parse_vectors(vectors)
    if model == "resnet50-seed" and choice == "auto":
        choice = ORIGINAL_VECTORS  # the original pipeline asked for by name
    if own:
        choice, reason = REINDEX, "your own images are indexed"
        if model == "resnet50-seed":
            reason += " with the original pipeline"
    elif choice == "auto" and model in TEXT_MODELS:
        choice, reason = REINDEX, f"auto: {model} asked for (its index is also searched by words)"
    elif choice == "auto":
        choice = default_vectors(devices)
        reason = "auto: a GPU is available" if choice == REINDEX else "auto: no GPU, so the fast path"
    else:
        reason = "as chosen"
    if choice == ORIGINAL_VECTORS:
        model = "resnet50-seed"
    elif model == "resnet50-seed" and not own:
        model = "resnet50"  # re-indexing means the default pipeline

    if offline and download:
        logger.info("offline: the original data will not be downloaded")
        download = False

    colab = in_colab() and not offline
    # Not "revsearch": a folder of that name in the working directory would shadow the package.
    local = _folder(work_dir) if work_dir else (COLAB_CONTENT if colab else Path.cwd()) / "revsearch-data"
    if colab:
        enable_colab_widgets()  # tqdm's progress bars are ipywidgets too
    persist = local
    if kind == "drive" and colab:
        try:
            my_drive = mount_drive(mount_point)
        except RevsearchError as e:
            logger.warning(
                "Google Drive is not available (%s): everything is kept on this VM's disk, %s, which is "
                "emptied when the runtime is recycled.", e, local
            )
        else:
            persist = _folder(drive_dir) if drive_dir else my_drive / "revsearch-data"
    elif kind == "drive":
        logger.info(
            "%s: Google Drive is not used; everything is kept in %s",
            "offline" if offline else "not in Colab",
            local,
        )

    dataset = _folder(dataset_dir) if own else persist / _IMAGES_FOLDER  # type: ignore[arg-type]
    # One index per dataset, model and weights: switching never clashes with an index, and
    # switching back reuses the earlier one.
    tag = f"{dataset.name or 'dataset'}-{model}"
    if weights != "imagenet":
        tag += "-random" if weights is None else f"-{Path(weights).stem}"
    return NotebookSettings(
        storage="drive" if persist != local else "local",
        colab=colab,
        offline=offline,
        download=bool(download),
        vectors=choice,
        vectors_reason=reason,
        model=model,
        weights=weights,
        k=int(k),
        images_source=images_source,
        vectors_source=vectors_source,
        keep_archives=bool(keep_archives),
        work_dir=local,
        persist_dir=persist,
        archive_dir=(persist if keep_archives else local) / "archives",
        dataset_dir=dataset,
        legacy_dir=local / "legacy_vectors",
        vector_dir=persist / "indexes" / tag,
        output_dir=persist / "results",
        own_dataset=own,
        backend=backend,
        expand=bool(expand),
        precision=precision,
    )


# --------------------------------------------------------------------------- data and index


def storage_report(settings: NotebookSettings) -> str:
    """Lines saying how much space the notebook's data takes, and where.

    Parameters
    ----------
    settings : NotebookSettings

    Returns
    -------
    str
        One line per folder that exists (images, original vector files, archives, index), with
        its size and whether it is on Google Drive or the VM's disk.
    """
    from .media.data import folder_size
    from .media.images import format_size as format_bytes

    drive = settings.storage == "drive"
    rows = []
    total_drive = total_local = 0
    for label, path in (
        ("images", settings.dataset_dir),
        ("original vector files", settings.legacy_dir),
        ("archives", settings.archive_dir),
        ("index", settings.vector_dir),
        ("result pictures", settings.output_dir),
    ):
        if label == "images" and settings.own_dataset:
            continue
        if not path.exists():
            continue
        size = folder_size(path)
        on_drive = drive and path.is_relative_to(settings.persist_dir)
        where = "Google Drive" if on_drive else ("this VM's disk" if settings.colab else "disk")
        rows.append(f"  {label:<22} {format_bytes(size):>10}  {where}: {path}")
        if on_drive:
            total_drive += size
        else:
            total_local += size
    head = "Space taken by the data:"
    if drive:
        head += f" {format_bytes(total_drive)} on Google Drive, {format_bytes(total_local)} on this VM's disk"
    else:
        head += f" {format_bytes(total_local)}"
    return "\n".join([head, *rows]) if rows else "No data yet."


def fetch_data(settings: NotebookSettings, *, quiet: bool = False) -> dict[str, Path]:
    """Download and unpack the original project's data the settings need, if download is on.

    The images are fetched unless the settings name your own folder; the vector files only
    when the settings use the original vectors and their index does not exist yet. What is
    already there is skipped, an interrupted download resumes (see
    :func:`revsearch.media.data.fetch_original_data`), and the archives are deleted once unpacked
    unless ``settings.keep_archives``. Logs how much space the data takes and where.

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
    if settings.own_dataset:
        logger.info("Using your own images in %s: nothing to download", settings.dataset_dir)
        return {}
    from .media.data import fetch_original_data
    from .operations import Index

    vectors = settings.vectors == ORIGINAL_VECTORS and not Index.exists(settings.vector_dir)
    found = fetch_original_data(
        settings.work_dir,
        images=True,
        vectors=vectors,
        archive_dir=settings.archive_dir,
        quiet=quiet,
        images_source=settings.images_source,
        vectors_source=settings.vectors_source,
        keep_archives=settings.keep_archives,
        images_dir=settings.dataset_dir,
        vectors_dir=settings.legacy_dir,
    )
    for key, path in found.items():
        logger.info("%s: %s", key, path)
    logger.info("%s", storage_report(settings))
    return found


def _has_legacy_files(folder: Path) -> bool:
    if not folder.is_dir():
        return False
    from .storage.legacy import LEGACY_EXTENSIONS

    for _, _, files in os.walk(folder):
        if any(f.lower().endswith(LEGACY_EXTENSIONS) and not f.startswith("._") for f in files):
            return True
    return False


def pipeline_note(index: Index, settings: NotebookSettings | None = None) -> str:
    """Which pipeline made an index's vectors, and how to switch: shown with the first result.

    Parameters
    ----------
    index : Index
    settings : NotebookSettings, optional
        For the hint on how to switch.

    Returns
    -------
    str
        Two lines: the model, preprocessing and weights; then how to switch.
    """
    spec = index.spec
    if spec["model"] == "resnet50-seed":
        what = (
            "the original project's vectors: ResNet50 (ImageNet weights) on raw BGR pixels (no "
            "preprocess_input), padded to a square, average pooled"
        )
        p9 = {k: v["precision@9"] for k, v in NOTEBOOK_VECTORS.items()}
        switch = (
            "For better matches set VECTORS to 're-index the images with the default pipeline' in step 2 "
            f"and run all again (precision@9 {p9['original']:.3f} -> {p9['default']:.3f} with MobileNet on Oxford "
            "flowers; docs/notebook.md)."
        )
    else:
        what = f"{spec['model']} (weights: {spec['weights']}), preprocessing {spec['preprocessing']}"
        switch = (
            "For the original project's vectors set VECTORS to 'use the original vectors' in step 2 and "
            "run all again."
        )
    if settings is not None and settings.own_dataset:
        switch = "Set MODEL in step 2 to index with another model."
    from .models.clip import supports_text

    if supports_text(spec["model"]):
        switch += " This index is also searched by words: the Words box of step 5, or TEXT in step 6."
    return f"These results come from {what}.\n{switch}"


def _estimates_file(settings: NotebookSettings) -> Path:
    return settings.persist_dir / "indexing-estimates.json"


def estimate_indexing(
    settings: NotebookSettings,
    *,
    model: str = "resnet50",
    batch_size: int = 16,
    batches: int = 2,
    devices: Sequence[str] | None = None,
) -> float | None:
    """Seconds re-indexing the images with ``model``'s default pipeline would take here.

    Times the first batches (one untimed warm-up batch, then ``batches`` timed ones: reading,
    preprocessing and the model) and scales to the number of images. The estimate is kept in
    ``persist_dir/indexing-estimates.json`` per model and device, so a second run does not time
    again.

    Parameters
    ----------
    settings : NotebookSettings
    model : str, default "resnet50"
    batch_size : int, default 16
    batches : int, default 2
    devices : sequence of str, optional
        The GPUs (default: asked of TensorFlow); part of the cache key.

    Returns
    -------
    float or None
        Seconds; None if there are not enough images to time or the model cannot be loaded.
    """
    from .models.embedding import get_embedder
    from .media.images import find_images

    devices = gpu_devices() if devices is None else list(devices)
    key = f"{model}/{settings.weights}/{'gpu' if devices else 'cpu'}"
    cache = _estimates_file(settings)
    try:
        files = find_images(settings.dataset_dir)
    except FileNotFoundError:
        return None
    try:
        known = json.loads(cache.read_text())
        if known.get(key, {}).get("images") == len(files):
            return float(known[key]["seconds"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        known = {}
    if len(files) < batch_size * (batches + 1):
        return None
    try:
        embedder = get_embedder(model, weights=settings.weights, backend=settings.backend)
        embedder.embed(files[:batch_size], batch_size=batch_size)  # warm-up: model build, first call
        t0 = time.perf_counter()
        for i in range(1, batches + 1):
            embedder.embed(files[i * batch_size:(i + 1) * batch_size], batch_size=batch_size)
        per_image = (time.perf_counter() - t0) / (batches * batch_size)
    except RevsearchError as e:
        logger.info("could not time %s (%s)", model, e)
        return None
    seconds = per_image * len(files)
    known = known if isinstance(known, dict) else {}
    known[key] = {"images": len(files), "seconds": round(seconds, 1), "measured": time.strftime("%Y-%m-%d %H:%M")}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, indent=1))
    except OSError:
        pass
    return seconds


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} minutes" if seconds >= 90 else f"{seconds:.0f} seconds"


def prepare_index(
    settings: NotebookSettings, *, progress: bool = True, batch_size: int | None = None, estimate: bool = True
) -> tuple[Index, UpdateReport | None]:
    """Open, import or build the index the settings describe; a rerun reuses what exists.

    - An index already in ``settings.vector_dir`` that was imported from the original vector
      files is opened as it is (a new session downloads nothing).
    - With the original vectors, the vector files (in ``settings.legacy_dir``) are imported
      (:func:`revsearch.storage.legacy.import_legacy`): no model run; then they are deleted unless
      ``keep_archives``. On a CPU, the time re-indexing would take is estimated from the first
      batches (:func:`estimate_indexing`) and logged with how to choose it.
    - Otherwise the images are indexed with the model (:func:`revsearch.operations.build_index`),
      with a progress bar; a rerun embeds only new or changed images and resumes an interrupted run.

    Logs which pipeline made the index (:func:`pipeline_note`) and the space the data takes.

    Parameters
    ----------
    settings : NotebookSettings
    progress : bool, default True
    batch_size : int, optional
        Images per model call; default: the embedder's (larger on a GPU).
    estimate : bool, default True
        Estimate the re-indexing time when the original vectors are used.

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
    from .core.console import quiet_tensorflow
    from .operations import Index, build_index, open_index

    dataset = settings.dataset_dir
    if not dataset.is_dir():
        hint = (
            "check DATASET_DIR"
            if settings.own_dataset
            else "turn on DOWNLOAD_ORIGINAL_DATA and run step 3, or set DATASET_DIR to your own folder"
        )
        raise RevsearchError(f"the image folder {str(dataset)!r} does not exist: {hint}")
    vector_dir = settings.vector_dir
    index: Index | None = None
    report = None
    if settings.vectors == ORIGINAL_VECTORS and Index.exists(vector_dir):
        index = open_index(vector_dir)
        if index.manifest.imported_from is not None and index.complete:
            logger.info("Reusing the index of the original vectors: %s", index)
        else:
            index = None
    if index is None and settings.vectors == ORIGINAL_VECTORS and _has_legacy_files(settings.legacy_dir):
        if Index.exists(vector_dir):
            raise RevsearchError(
                f"{vector_dir} holds an index that was not imported from the original vectors: delete it, "
                "or choose 're-index the images' in step 2"
            )
        from .operations import import_legacy

        logger.info("Importing the original vector files from %s", settings.legacy_dir)
        index, legacy = import_legacy(settings.legacy_dir, vector_dir, dataset_dir=dataset, progress=progress)
        if legacy.skipped:
            logger.warning("%d vector files could not be used (see the messages above)", len(legacy.skipped))
        if not settings.keep_archives:
            from .media.data import folder_size
            from .media.images import format_size as format_bytes

            if settings.legacy_dir.is_symlink():  # a link to a folder elsewhere: what it leads to is not ours to delete
                logger.info("Kept the imported vector files: %s is a link to another folder.", settings.legacy_dir)
            else:
                size = folder_size(settings.legacy_dir)
                shutil.rmtree(settings.legacy_dir, ignore_errors=True)
                logger.info("Deleted the imported vector files %s (%s freed).", settings.legacy_dir, format_bytes(size))
    if index is None:
        if settings.vectors == ORIGINAL_VECTORS and not settings.own_dataset:
            raise RevsearchError(
                f"the original vector files are not in {str(settings.legacy_dir)!r}: turn on "
                "DOWNLOAD_ORIGINAL_DATA and run step 3, or choose 're-index the images' in step 2"
            )
        backend = None if settings.backend == "auto" else settings.backend
        with quiet_tensorflow():  # TensorFlow's C++ start-up lines filtered as the CLI does
            index, report = build_index(
                dataset, vector_dir, settings.model, weights=settings.weights, backend=backend,
                precision=settings.precision, batch_size=batch_size, progress=progress,
            )
        if report.skipped:  # each one was logged with its reason while indexing
            logger.warning("%d files could not be read and were skipped (see the messages above)", len(report.skipped))
    if settings.vectors == ORIGINAL_VECTORS and estimate and not settings.own_dataset:
        with quiet_tensorflow():
            seconds = estimate_indexing(settings)
        if seconds is not None:
            logger.info(
                "Re-indexing the %d images with the default pipeline (resnet50) would take about %s on "
                "this machine (timed on the first batches); choose 're-index the images with the default "
                "pipeline' in step 2 for better matches.", len(index), _minutes(seconds)
            )
    logger.info("%s", pipeline_note(index, settings))
    logger.info("%s", storage_report(settings))
    return index, report


def query_text(text: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """The words of step 6's ``TEXT`` (a CLIP index searched by words), or ``REVSEARCH_NB_TEXT``; None for none.

    Parameters
    ----------
    text : str, optional
        The form's value.
    env : mapping, optional
        Default ``os.environ``.

    Returns
    -------
    str or None
    """
    value = (text or "").strip() or (_env(os.environ if env is None else env, "TEXT") or "")
    return value or None


def sample_query(settings: NotebookSettings, query: str | os.PathLike | None = None) -> Path | str:
    """A query image: ``query`` if given (a path or an http(s) URL), else the dataset's first image.

    Parameters
    ----------
    settings : NotebookSettings
    query : path or URL, optional
        A path (``~`` is expanded) or an http(s) URL (returned as it is).

    Returns
    -------
    pathlib.Path or str

    Raises
    ------
    RevsearchError
        If ``query`` is not given and the dataset folder holds no image.
    """
    from .media.remote import is_url

    if query and str(query).strip():
        return str(query).strip() if is_url(str(query)) else _folder(str(query).strip())
    from .media.images import find_images

    try:
        files = find_images(settings.dataset_dir)
    except FileNotFoundError as e:
        raise RevsearchError(str(e)) from None
    if not files:
        raise RevsearchError(f"no image in {str(settings.dataset_dir)!r} to use as a query: set QUERY")
    return files[0]


def show_duplicates(
    settings: NotebookSettings,
    threshold: float | None = None,
    *,
    keep: str = "largest",
    max_groups: int = 24,
    groups_per_page: int = 8,
    mode: str = "copies",
) -> DuplicateReport:
    """Find the duplicate groups of the notebook's index and show them as pictures.

    Nothing is moved or deleted: the report says which copies ``revsearch duplicates ...
    --move-to DIR`` would move.

    Parameters
    ----------
    settings : NotebookSettings
    threshold : float, optional
        Mode ``similar``: the cosine similarity in [-1, 1] from which two images count as
        duplicates (default: the model's calibrated threshold). Mode ``copies``: ignored (the
        shortlist is calibrated per model, or by rank; every pair is verified on the pictures).
    keep : {"largest", "oldest", "newest", "first"}, default "largest"
        Which copy of a group is kept (shown first).
    max_groups : int, default 24
        Groups drawn (all of them are in the report).
    groups_per_page : int, default 8
        Groups per figure.
    mode : {"copies", "similar"}, default "copies"
        What counts as a duplicate (see :func:`revsearch.find_duplicates`).

    Returns
    -------
    DuplicateReport
        The groups, best copy first; ``report.summary()`` says how many.
    """
    from .duplicates import plot_duplicates
    from .operations import find_duplicates

    if max_groups < 0:
        raise ValueError(f"max_groups must be at least 0, not {max_groups}")
    report = find_duplicates(
        settings.vector_dir, threshold if mode == "similar" else None, keep=keep, dataset_dir=settings.dataset_dir,
        mode=mode,
    )
    shown = dataclasses.replace(report, groups=report.groups[:max_groups])
    for fig in plot_duplicates(shown, groups_per_page=groups_per_page) if max_groups else []:
        display_figure(fig)
    if len(report.groups) > max_groups:
        logger.info("%d of %d groups shown; the CSV of `revsearch duplicates %s --csv FILE` lists them all",
                    max_groups, len(report.groups), settings.vector_dir)
    return report
