"""``revsearch demo``: the whole job on a small sample collection, in one command.

The collection is built from photos that ship inside the scikit-image wheel (no download; all
public domain or CC0, see :data:`SAMPLES`), each also in four edited copies (cropped, rotated,
re-encoded as a poor JPEG, captioned). It is indexed, then searched with an edited copy that is
*not* in the index (a cropped and captioned cat), and the result picture is saved.

    pip install "revsearch[demo]"       # scikit-image, for its sample photos
    revsearch demo --model mobilenet    # needs the model's ImageNet weights (internet or KERAS_HOME)

scikit-image is not imported: its bundled image files are only located and read with Pillow.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OptionalDependencyError, RevsearchError

__all__ = ["DEMO_EDITS", "SAMPLES", "DemoResult", "make_demo_collection", "run_demo", "sample_photos"]

logger = logging.getLogger(__name__)

#: The photos used, as shipped in scikit-image's wheel (``skimage/data``), with their licence as
#: scikit-image documents it (``skimage.data.<name>`` docstrings).
SAMPLES: dict[str, tuple[str, str]] = {
    "astronaut": ("astronaut.png", "NASA, public domain"),
    "chelsea": ("chelsea.png", "CC0, Stefan van der Walt"),
    "coffee": ("coffee.png", "CC0, Rachel Michetti"),
    "hubble": ("hubble_deep_field.jpg", "NASA, public domain"),
    "rocket": ("rocket.jpg", "SpaceX, public domain"),
    "retina": ("retina.jpg", "CC0, Mikael Häggström"),
    "ihc": ("ihc.png", "no known copyright restrictions"),
    "camera": ("camera.png", "CC0, Lav Varshney"),
    "coins": ("coins.png", "no known copyright restrictions (Brooklyn Museum)"),
    "brick": ("brick.png", "CC0 (CC0Textures)"),
    "grass": ("grass.png", "CC0 (CC0Textures)"),
    "gravel": ("gravel.png", "CC0 (CC0Textures)"),
}
#: The edited copies indexed next to each photo (names of :func:`revsearch.evaluate.make_edits`).
DEMO_EDITS = ("crop_80", "rotate_10", "jpeg_q30", "text")
#: The photo the demo searches for, with an edit the index has not seen (cropped *and* captioned).
QUERY_SAMPLE = "chelsea"


def sample_photos() -> dict[str, Path]:
    """Find the sample photos in the installed scikit-image, without importing it.

    Returns
    -------
    dict of str to pathlib.Path
        :data:`SAMPLES`' names to their files.

    Raises
    ------
    OptionalDependencyError
        If scikit-image is not installed, or its wheel lacks the files.
    """
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise OptionalDependencyError(
            "the demo's sample photos come with scikit-image: pip install 'revsearch[demo]' "
            "(or pip install scikit-image)"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    found = {name: data / file for name, (file, _) in SAMPLES.items()}
    missing = [str(p) for p in found.values() if not p.is_file()]
    if missing:
        raise OptionalDependencyError(
            f"this scikit-image does not ship the sample photos {', '.join(missing)}: "
            "pip install --upgrade scikit-image"
        )
    return found


def make_demo_collection(folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write the sample collection and the query into ``folder`` (reused if already there).

    Parameters
    ----------
    folder : path

    Returns
    -------
    photos : pathlib.Path
        ``folder/photos``: each sample as ``<name>.jpg`` and its edits as ``<name>-<edit>.jpg``.
    query : pathlib.Path
        ``folder/query-<name>-crop-and-caption.jpg``, outside ``photos`` (not indexed).
    """
    from .edits import make_edits
    from .images import load_image

    folder = Path(folder)
    photos = folder / "photos"
    query = folder / f"query-{QUERY_SAMPLE}-crop-and-caption.jpg"
    sources = sample_photos()
    photos.mkdir(parents=True, exist_ok=True)
    for name, path in sources.items():
        target = photos / f"{name}.jpg"
        if target.is_file() and all((photos / f"{name}-{e}.jpg").is_file() for e in DEMO_EDITS):
            continue
        image = load_image(path)
        image.save(target, quality=92)
        for edit, copy in make_edits(image, DEMO_EDITS).items():
            copy.save(photos / f"{name}-{edit}.jpg", quality=92)
    if not query.is_file():
        image = load_image(sources[QUERY_SAMPLE])
        cropped = make_edits(image, ["crop_80"])["crop_80"]
        make_edits(cropped, ["text"])["text"].save(query, quality=88)
    return photos, query


@dataclass
class DemoResult:
    """What :func:`run_demo` did.

    Attributes
    ----------
    photos, query, vector_dir, figure_path : pathlib.Path
        The collection, the query image, the index and the saved result picture.
    results : revsearch.api.SearchResults
        The matches, best first (``results.figure`` is the picture).
    """

    photos: Path
    query: Path
    vector_dir: Path
    figure_path: Path
    results: Any

    def found_the_original(self) -> bool:
        """Whether the best match is the query's photo (or one of its edited copies)."""
        return bool(self.results) and self.results[0].name.split("-")[0].split(".")[0] == QUERY_SAMPLE


def run_demo(
    folder: str | os.PathLike = "revsearch-demo",
    *,
    model: str = "resnet50",
    weights: str | os.PathLike | None = "imagenet",
    k: int = 9,
    show: bool = False,
    progress: bool = True,
) -> DemoResult:
    """Build the sample collection, index it, search it with an unseen edit, save the picture.

    Parameters
    ----------
    folder : path, default ``"revsearch-demo"``
        Where the photos, the index (``index-<model>``) and ``result.png`` go. A rerun reuses them.
    model : str, default "resnet50"
    weights : {"imagenet", None} or path
        ``None``: random weights (no download; the matches mean nothing).
    k : int, default 9
    show : bool, default False
        Also display the picture (in a notebook).
    progress : bool, default True

    Returns
    -------
    DemoResult

    Raises
    ------
    OptionalDependencyError
        Without scikit-image.
    WeightsUnavailableError
        If the model's weights cannot be downloaded (the message says where to put them).
    """
    from .api import reverse_image_search

    folder = Path(folder)
    photos, query = make_demo_collection(folder)
    tag = model if weights == "imagenet" else f"{model}-{'random' if weights is None else Path(weights).stem}"
    vector_dir = folder / f"index-{tag}"
    figure_path = folder / "result.png"
    if k < 1:
        raise RevsearchError(f"k must be at least 1, not {k}")
    results = reverse_image_search(
        query, model, photos, vector_dir, generate=True, k=k, weights=weights,
        show=show, save_path=figure_path, progress=progress,
    )
    logger.info("demo: searched %s in %d photos; picture saved to %s", query, len(results.index or []), figure_path)
    return DemoResult(photos, query, vector_dir, figure_path, results)
