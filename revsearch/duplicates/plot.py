"""Pictures of a report: one row per group."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.safety import display_name
from .groups import DuplicateReport

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)


# ============================================================================ pictures


def _thumbnail(path: Path, size: int) -> Any:
    from PIL import Image

    from ..media.images import load_image

    img = load_image(path, draft_size=size)
    img.thumbnail((size, size), Image.Resampling.BICUBIC)
    return img


def describe(verdict: Any) -> str:
    """A few words on why a copy matched: turn, mirror, scale, tiles agreeing."""
    parts = []
    turn = round((verdict.rotation % 360) / 90.0) * 90 % 360
    if turn:
        parts.append(f"turned {turn}")
    tilt = (verdict.rotation - turn + 180) % 360 - 180
    if abs(tilt) >= 1.5 and verdict.method == "features":
        parts.append(f"tilted {tilt:+.0f}")
    if verdict.mirrored:
        parts.append("mirrored")
    if verdict.method == "features" and abs(math.log(max(verdict.scale, 1e-6))) > 0.05:
        parts.append(f"x{1 / verdict.scale:.2f}")
    parts.append(f"{verdict.agree:.0%} tiles")
    return ", ".join(parts)


def _outline(ax: Any, verdict: Any, size: tuple[int, int]) -> None:
    """Draw, on a copy's picture, where the kept photo lies in it (the aligned overlap)."""
    import numpy as np
    from matplotlib.patches import Polygon

    if verdict.matrix is None or verdict.a_shape is None or verdict.b_shape is None:
        return
    ha, wa = verdict.a_shape
    hb, wb = verdict.b_shape
    M = np.vstack([np.asarray(verdict.matrix, float), [0.0, 0.0, 1.0]])
    try:
        inv = np.linalg.inv(M)
    except np.linalg.LinAlgError:
        return
    corners = np.array([[0, 0, 1], [wa, 0, 1], [wa, ha, 1], [0, ha, 1]], float)
    pts = corners @ inv.T  # in the copy's thumbnail (mirrored first if it was)
    if verdict.mirrored:
        pts[:, 0] = wb - pts[:, 0]
    pts[:, 0] = np.clip(pts[:, 0], 0, wb) * size[0] / wb
    pts[:, 1] = np.clip(pts[:, 1], 0, hb) * size[1] / hb
    ax.add_patch(Polygon(pts[:, :2], closed=True, fill=False, edgecolor="lime", linewidth=1.2))


def plot_duplicates(
    report: DuplicateReport,
    *,
    groups_per_page: int = 8,
    max_per_group: int = 6,
    cell_size: float = 2.0,
    thumbnail: int = 256,
) -> list[Figure]:
    """Draw the groups: one row per group, the kept copy first, scores to it in the titles.

    In mode ``copies`` each copy's title says how it matched the kept one (turn, mirror, scale,
    share of the aligned tiles that agree) and a green outline shows where the kept photo lies in
    it: the aligned overlap the verifier compared.

    Parameters
    ----------
    report : DuplicateReport
    groups_per_page : int, default 8
        Rows per figure; more groups give more figures (pages).
    max_per_group : int, default 6
        Images shown per group (the last cell says how many more there are).
    cell_size : float, default 2.0
        Inches per image.
    thumbnail : int, default 256
        Pixels of the longer side the images are reduced to.

    Returns
    -------
    list of matplotlib.figure.Figure
        One per page (empty if there are no groups), made without pyplot: display or save them.
    """
    from matplotlib.figure import Figure

    from ..core.errors import ImageReadError

    if groups_per_page < 1 or max_per_group < 2:
        raise ValueError("groups_per_page must be at least 1 and max_per_group at least 2")
    figures = []
    groups = report.groups
    ncols = min(max_per_group, max((len(g) for g in groups), default=2))
    for p0 in range(0, len(groups), groups_per_page):
        page = groups[p0 : p0 + groups_per_page]
        fig = Figure(figsize=(ncols * cell_size, len(page) * cell_size * 1.15), layout="constrained")
        grid = fig.add_gridspec(len(page), ncols)
        for r, g in enumerate(page):
            shown = g.files if len(g) <= ncols else g.files[: ncols - 1]
            why = {j: v for i, j, v in g.matches if i == 0}
            for c, f in enumerate(shown):
                ax = fig.add_subplot(grid[r, c])
                ax.set_axis_off()
                name = display_name(Path(f.relpath).name)  # control characters shown escaped
                name = name if len(name) <= 22 else name[:9] + "…" + name[-12:]
                head = f"#{p0 + r + 1} keep" if c == 0 else f"{f.score:.3f}"
                tag = " (against)" if f.collection == "against" else ""
                v = why.get(c)
                how = f"\n{describe(v)}" if v is not None else ""
                ax.set_title(f"{head}{tag}\n{name}{how}", fontsize=7, fontweight="bold" if c == 0 else "normal")
                try:
                    img = _thumbnail(f.path, thumbnail)
                    ax.imshow(img)
                    if v is not None:
                        _outline(ax, v, img.size)
                except ImageReadError as e:
                    logger.warning("cannot show %s: %s", display_name(f.path), display_name(e))
                    ax.text(0.5, 0.5, "missing" if not f.exists else "unreadable", ha="center", va="center",
                            fontsize=8, transform=ax.transAxes)
            if len(g) > len(shown):
                ax = fig.add_subplot(grid[r, ncols - 1])
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"+{len(g) - len(shown)} more", ha="center", va="center", fontsize=10,
                        transform=ax.transAxes)
        figures.append(fig)
    return figures
