"""The search widget of ``Reverse_Search.ipynb``: upload a photo, paste a link or a path, see its matches.

>>> from revsearch.widgets import search_widget
>>> search_widget("vectors/")   # an upload button, a box for a link or a path, a k slider

:func:`search_widget` works in Jupyter, JupyterLab, VS Code and Colab, with ipywidgets 7 (Colab's
default, 7.7.x) or 8: each upload is searched exactly once. A search never puts a traceback in the
widget: what went wrong is shown as one clear message. The notebook's other steps (Colab, Drive,
settings, data, index) are in :mod:`revsearch.notebook`.

Importing this module is cheap: ipywidgets, IPython and TensorFlow are imported only when a
function needs them.
"""

from __future__ import annotations

import base64
import html
import logging
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import RevsearchError

if TYPE_CHECKING:  # pragma: no cover
    import ipywidgets

    from .api import SearchResults
    from .images import ImageSource

logger = logging.getLogger(__name__)

__all__ = [
    "SearchApp",
    "search_image",
    "search_widget",
    "show_search",
    "show_text_search",
    "uploaded_files",
]


def _folder(text: str | os.PathLike) -> Path:
    return Path(os.path.expanduser(str(text))).absolute()


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
    expand: Any = None,
) -> SearchResults:
    """Search an existing index and draw the query above its matches.

    Parameters
    ----------
    query : ImageSource
        A path, an http(s) URL, the bytes of an uploaded file, a Pillow image or an array.
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
    expand : bool or Expansion, optional
        Query expansion and database-side augmentation: on by default (the index's expansion);
        False: a plain cosine search (see :func:`revsearch.reverse_image_search`).

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
    from .remote import read_query

    image = load_image(read_query(query))  # a URL is downloaded (time limit, size cap), a path read
    results = reverse_image_search(
        image, model, dataset_dir, vector_dir, generate=False, k=k, weights=weights, progress=False, expand=expand
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
    note: str | None = None,
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
    note : str, optional
        A line shown above the result (e.g. which pipeline made the index).
    **kwargs
        ``dataset_dir``, ``model``, ``k``, ``weights``, ``expand``: see :func:`search_image`.

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
    output.outputs = (*before, *((_stream(note),) if note else ()), picture, _stream(_listing(results)))
    return results


def show_text_search(
    output: ipywidgets.Output,
    text: str,
    *,
    vector_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike | None = None,
    k: int = 9,
    append: bool = False,
    note: str | None = None,
    **_ignored: Any,
) -> SearchResults | None:
    """Search a CLIP index by words and show the matches (or one clear message) in an Output widget.

    Parameters
    ----------
    output : ipywidgets.Output
    text : str
        E.g. ``"a red car at night"``.
    vector_dir : path
        The index folder (built with a CLIP model, e.g. ``"clip-vit-b32"``).
    dataset_dir : path, optional
    k : int, default 9
    append : bool, default False
    note : str, optional
        A line shown above the result.

    Returns
    -------
    SearchResults or None
        None if the search failed (the message is in ``output``: e.g. an image-only index).
    """
    from .api import search_text
    from .display import figure_png

    before = tuple(output.outputs) if append else ()
    label = f"“{text}”"
    output.outputs = (*before, _stream(f"Searching for {label} ..."))
    try:
        results = search_text(text, vector_dir, k, dataset_dir=dataset_dir)
        from .display import plot_results

        results.figure = plot_results(None, results)
        results.figure.suptitle(label, fontsize=12, fontweight="bold")
        picture = _picture(figure_png(results.figure), f"the {len(results)} best matches of {label}")
    except (RevsearchError, ValueError) as e:
        logger.info("search for %s failed: %s", label, e)
        output.outputs = (*before, _message(f"Could not search for {label}: {e}"))
        return None
    except Exception as e:  # anything else: still one message for the user, details in the log
        logger.debug("search for %s failed", label, exc_info=True)
        output.outputs = (*before, _message(f"Could not search for {label}: unexpected {type(e).__name__}: {e}"))
        return None
    output.outputs = (*before, *((_stream(note),) if note else ()), picture, _stream(_listing(results)))
    return results


def _index_takes_text(vector_dir: str | os.PathLike) -> bool:
    """Whether the index in ``vector_dir`` can be searched by words (True where that is not known yet)."""
    from .clip import supports_text
    from .operations import open_for_writing

    try:
        existing = open_for_writing(vector_dir)
        return existing is None or supports_text(existing.spec["model"])
    except (RevsearchError, OSError, KeyError, TypeError):
        return True


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


def _url_name(url: str) -> str:
    """A short name for a query URL: its file name, or its host."""
    parsed = urllib.parse.urlparse(url)
    name = urllib.parse.unquote(parsed.path.rstrip("/").rsplit("/", 1)[-1])
    return name or parsed.hostname or url


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
    note : str, optional
        Shown above the first result only (the notebook says which pipeline made the index).
    text_search : bool, optional
        Show the box for words (text queries, CLIP indexes). Default: shown unless the index in
        ``vector_dir`` was built with an image-only model.

    Attributes
    ----------
    upload : ipywidgets.FileUpload
        Each upload is searched at once, exactly once (ipywidgets 7 and 8).
    path : ipywidgets.Text
        An image link (``https://...``) or a file path, searched with :attr:`button`.
    k : ipywidgets.IntSlider
        Number of matches; moving it searches the last query again.
    button : ipywidgets.Button
        Searches the link or path (or the last query again).
    words : ipywidgets.Text
        Words to search for (``"a red car at night"``) in a CLIP index; Enter or :attr:`words_button` searches.
    words_button : ipywidgets.Button
        Searches the words.
    output : ipywidgets.Output
        The query above its matches, or a message.
    widget : ipywidgets.VBox
        All of them.
    results : SearchResults or None
        The last search's results.
    searches : int
        How many searches were run (one per upload, click or slider move).
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
        note: str | None = None,
        expand: Any = None,
        text_search: bool | None = None,
    ) -> None:
        import ipywidgets as w

        self.options: dict[str, Any] = {
            "vector_dir": vector_dir,
            "dataset_dir": dataset_dir,
            "model": model,
            "weights": weights,
            "expand": expand,
        }
        self.note = note
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Upload a photo")
        self.path = w.Text(
            placeholder="... or paste an image link (https://...) or a file path",
            description="Link or path:",
            style={"description_width": "initial"},
            layout=w.Layout(width="70%"),
        )
        self.button = w.Button(
            description="Search", icon="search", button_style="primary", tooltip="Search this link or file"
        )
        self.k = w.IntSlider(
            value=k,
            min=1,
            max=max(max_k, k),
            description="Matches:",
            continuous_update=False,
        )
        self.words = w.Text(
            placeholder="... or describe the photos, e.g. a red car at night (CLIP index)",
            description="Words:",
            continuous_update=False,
            style={"description_width": "initial"},
            layout=w.Layout(width="70%"),
        )
        self.words_button = w.Button(description="Search words", icon="font", tooltip="Search the index by these words")
        words_row = w.HBox([self.words, self.words_button])
        if not (text_search if text_search is not None else _index_takes_text(vector_dir)):
            words_row.layout.display = "none"
        self.output = w.Output()
        self.widget = w.VBox([self.upload, w.HBox([self.path, self.button]), words_row, self.k, self.output])
        self.results: SearchResults | None = None
        self.searches = 0
        self._last: tuple[Any, str | None] | None = None  # (query, name); name None: words
        self.upload.observe(self._on_upload, names="value")
        self.button.on_click(self._on_click)
        self.words.observe(self._on_words, names="value")
        self.words_button.on_click(lambda _b: self.search_words(self.words.value))
        self.k.observe(self._on_k, names="value")

    def search(self, query: ImageSource, name: str, *, append: bool = False) -> SearchResults | None:
        """Search with an image (bytes, path or URL) and show the result in :attr:`output`."""
        self._last = (query, name)
        note = self.note if self.searches == 0 else None
        self.searches += 1
        self.results = show_search(
            self.output, query, name=name, append=append, note=note, k=int(self.k.value), **self.options
        )
        return self.results

    def search_words(self, text: str) -> SearchResults | None:
        """Search the index by words (a CLIP index) and show the result in :attr:`output`."""
        if not str(text).strip():
            self.output.outputs = (_message("Type words that describe the photos to find, e.g. a red car at night."),)
            return None
        self._last = (str(text), None)
        note = self.note if self.searches == 0 else None
        self.searches += 1
        self.results = show_text_search(self.output, str(text), note=note, k=int(self.k.value), **self.options)
        return self.results

    def _on_words(self, change: dict[str, Any]) -> None:
        if str(change.get("new") or "").strip():
            self.search_words(change["new"])

    def _on_upload(self, change: dict[str, Any]) -> None:
        try:
            files = uploaded_files(change.get("new"))
        except Exception as e:  # a value of an unexpected shape
            self.output.outputs = (_message(f"Could not read the upload: {type(e).__name__}: {e}"),)
            return
        if not files:  # also what emptying the widget below reports
            return
        self._reset_upload()  # first: the same file can be uploaded again, and it is searched once
        for i, (name, content) in enumerate(files):
            self.search(content, name, append=i > 0)

    def _reset_upload(self) -> None:
        """Empty the upload widget, so that the same file can be uploaded again.

        ipywidgets 8: ``value = ()``. ipywidgets 7 computes ``value`` from ``metadata`` and
        ``data`` whenever ``_counter`` changes: those are emptied first, so that setting
        ``_counter = 0`` gives an empty value (and no second search of the old files).
        """
        try:
            if hasattr(self.upload, "_counter"):  # ipywidgets 7
                with self.upload.hold_trait_notifications():
                    self.upload.metadata = []
                    self.upload.data = []
                    self.upload._counter = 0
            else:
                self.upload.value = ()
        except Exception as e:  # pragma: no cover - a front end that refuses
            logger.debug("could not reset the upload widget: %s", e)

    def _on_click(self, _button: Any = None) -> None:
        from .remote import is_url

        text = self.path.value.strip()
        if text and is_url(text):
            self.search(text, _url_name(text))
        elif text:
            self.search(_folder(text), text)
        elif self._last is not None:
            self._again()
        else:
            self.output.outputs = (
                _message("Upload a photo, or paste an image link or the path of an image file, then press Search."),
            )

    def _on_k(self, _change: dict[str, Any]) -> None:
        if self._last is not None:
            self._again()

    def _again(self) -> None:
        """The last search again: words (name None) or an image."""
        query, name = self._last  # type: ignore[misc]
        if name is None:
            self.search_words(query)
        else:
            self.search(query, name)

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
    note: str | None = None,
    expand: Any = None,
    text_search: bool | None = None,
) -> ipywidgets.VBox:
    """A search box for a notebook: upload a photo (or paste a link or a path) and see its best matches.

    Each upload is searched at once; the output area shows the query above the grid of its
    ``k`` best matches and their scores, or a clear message if the file is not an image (or the
    link not an image's). In Colab with ipywidgets 8, call
    :func:`revsearch.notebook.enable_colab_widgets` first.

    Parameters
    ----------
    vector_dir : path
        The index folder (build it first: :func:`revsearch.notebook.prepare_index` or
        ``reverse_image_search(..., generate=True)``).
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
    note : str, optional
        Shown above the first result.
    expand : bool or Expansion, optional
        Query expansion and database-side augmentation: on by default; False turns it off.
    text_search : bool, optional
        Show the box for words (a CLIP index). Default: unless the index was built with an image-only model.

    Returns
    -------
    ipywidgets.VBox
        Its children: the ``FileUpload``, an ``HBox`` of the link/path ``Text`` and the search
        ``Button``, an ``HBox`` of the words ``Text`` and its ``Button`` (hidden for an image-only
        index), the k ``IntSlider``, and the ``Output`` area. (Use :class:`SearchApp` to
        reach them by name.)
    """
    return SearchApp(
        vector_dir, dataset_dir=dataset_dir, model=model, k=k, weights=weights, max_k=max_k, note=note,
        text_search=text_search, expand=expand,
    ).widget
