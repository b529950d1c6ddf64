"""Drawing results: the query on top, the matches in a grid below.

Returns a :class:`matplotlib.figure.Figure` built without pyplot, so nothing is shown or kept
in global state: a notebook displays the returned figure, a script saves it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from .errors import ImageReadError
from .images import ImageSource, load_image
from .safety import display_name
from .search import Match

logger = logging.getLogger(__name__)

__all__ = ["display_figure", "figure_png", "plot_results", "save_figure"]


def plot_results(
    query: ImageSource | None,
    matches: Sequence[Match],
    *,
    ncols: int = 3,
    cell_size: float = 2.6,
    title: str | None = "query",
) -> Figure:
    """Draw the query above a grid of its matches.

    Parameters
    ----------
    query : ImageSource or None
        The query image (path, bytes, PIL image or (H, W, 3) array); ``None`` leaves the top row out.
    matches : sequence of Match
        Best first; 9 matches give a 3x3 grid.
    ncols : int, default 3
        Columns of the grid.
    cell_size : float, default 2.6
        Inches per grid cell.
    title : str or None, default "query"
        Title of the query panel.

    Returns
    -------
    matplotlib.figure.Figure
        Axes: the query first (if given), then one per match in rank order, each titled with
        the file name and the cosine score. A match whose file cannot be read shows its name
        and the reason instead of the picture.
    """
    n = len(matches)
    nrows = max(1, math.ceil(n / ncols))
    top = 1 if query is not None else 0
    fig = Figure(figsize=(ncols * cell_size, (nrows + top * 1.15) * cell_size), layout="constrained")
    grid = fig.add_gridspec(nrows + top, ncols, height_ratios=[1.15] * top + [1.0] * nrows)
    if query is not None:
        ax = fig.add_subplot(grid[0, :])
        ax.imshow(load_image(query))
        ax.set_title(display_name(title or ""), fontsize=11, fontweight="bold")
        ax.set_axis_off()
    for i, m in enumerate(matches):
        ax = fig.add_subplot(grid[top + i // ncols, i % ncols])
        ax.set_axis_off()
        shown = display_name(m.name)  # a control character in a name is shown escaped, never interpreted
        name = shown if len(shown) <= 28 else shown[:12] + "…" + shown[-14:]
        ax.set_title(f"{i + 1}. {name}\n{m.score:.3f}", fontsize=8)
        try:
            ax.imshow(load_image(m.path))
        except ImageReadError as e:
            logger.warning("cannot show match %s: %s", display_name(m.path), display_name(e))
            ax.text(0.5, 0.5, "image not found" if not os.path.exists(m.path) else "unreadable",
                    ha="center", va="center", fontsize=8, transform=ax.transAxes)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 100) -> None:
    """Save a figure (PNG, JPEG, PDF or SVG, chosen by the file's extension)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)


def figure_png(fig: Figure, *, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes (for notebooks and widgets)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def display_figure(fig: Any) -> bool:
    """Show a Matplotlib figure in a running IPython/Jupyter session.

    Parameters
    ----------
    fig : matplotlib.figure.Figure

    Returns
    -------
    bool
        False outside IPython (nothing shown).
    """
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    # A Figure made without pyplot has no image/png formatter unless the inline backend was
    # activated (pyplot imported): register one, so display() shows the picture, not "<Figure ...>".
    png = getattr(getattr(shell, "display_formatter", None), "formatters", {}).get("image/png")
    if png is not None:
        from matplotlib.figure import Figure

        try:
            png.lookup_by_type(Figure)
        except KeyError:
            png.for_type(Figure, figure_png)
    display(fig)
    return True
