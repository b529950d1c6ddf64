"""Drawing results (revsearch.display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from conftest import make_photo
from revsearch.display import plot_results, save_figure
from revsearch.retrieval.exact import Match


def _matches(folder: Path, n: int, *, missing: set[int] = frozenset()) -> list[Match]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        rel = f"sub/m{i:02d}.jpg"
        p = folder / rel
        if i not in missing:
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(make_photo(i, (32, 24))).save(p, quality=85)
        out.append(Match(path=p, relpath=rel, score=0.987654 - i / 10, rank=i, row=i))
    return out


@pytest.fixture()
def nine(tmp_path: Path) -> list[Match]:
    return _matches(tmp_path / "data", 9)


@pytest.fixture()
def query() -> np.ndarray:
    return make_photo(99, (40, 30))


def _layout(fig: Figure) -> list:
    fig.draw_without_rendering()  # run the constrained layout
    return [ax.get_position(original=True) for ax in fig.axes]


def test_query_above_a_3x3_grid(nine: list[Match], query: np.ndarray) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = plot_results(query, nine)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1 + 9
    boxes = _layout(fig)
    q, cells = boxes[0], boxes[1:]
    # the query panel is above every match
    assert all(q.y0 >= c.y1 - 1e-6 for c in cells)
    # the matches fill 3 rows and 3 columns, best first, row by row
    xs = sorted({round(c.x0, 3) for c in cells})
    ys = sorted({round(c.y0, 3) for c in cells}, reverse=True)  # top row first
    assert len(xs) == 3 and len(ys) == 3
    for i, c in enumerate(cells):
        assert round(c.x0, 3) == xs[i % 3]
        assert round(c.y0, 3) == ys[i // 3]
    # built without pyplot: no pyplot figure created or left open
    assert plt.get_fignums() == before
    assert fig.canvas.manager is None


def test_titles_name_and_score(nine: list[Match], query: np.ndarray) -> None:
    fig = plot_results(query, nine)
    assert fig.axes[0].get_title() == "query"
    for ax, m in zip(fig.axes[1:], nine):
        title = ax.get_title()
        assert m.name in title
        assert f"{m.score:.3f}" in title
        assert len(ax.images) == 1  # the picture is drawn
    assert "0.988" in fig.axes[1].get_title()
    assert len(fig.axes[0].images) == 1
    assert fig.axes[0].images[0].get_array().shape[:2] == (30, 40)


def test_missing_match_file_shows_placeholder(tmp_path: Path, query: np.ndarray, caplog) -> None:
    matches = _matches(tmp_path / "data", 4, missing={2})
    fig = plot_results(query, matches)
    assert len(fig.axes) == 1 + 4
    gone = fig.axes[1 + 2]
    assert len(gone.images) == 0
    assert any("not found" in t.get_text() for t in gone.texts)
    assert matches[2].name in gone.get_title()
    assert all(len(ax.images) == 1 for i, ax in enumerate(fig.axes[1:]) if i != 2)
    assert any(matches[2].name in r.getMessage() for r in caplog.records)


def test_unreadable_match_file_shows_placeholder(tmp_path: Path, query: np.ndarray) -> None:
    matches = _matches(tmp_path / "data", 2)
    matches[1].path.write_text("not a picture any more")
    fig = plot_results(query, matches)
    assert any("unreadable" in t.get_text() for t in fig.axes[2].texts)


def test_without_query_and_other_grids(nine: list[Match], query: np.ndarray) -> None:
    fig = plot_results(None, nine)
    assert len(fig.axes) == 9
    assert all(ax.get_title() for ax in fig.axes)
    fig4 = plot_results(query, nine[:4], ncols=2)
    boxes = _layout(fig4)[1:]
    assert len({round(b.x0, 3) for b in boxes}) == 2
    assert len({round(b.y0, 3) for b in boxes}) == 2
    assert len(plot_results(query, []).axes) == 1


def test_long_names_are_shortened(tmp_path: Path, query: np.ndarray) -> None:
    m = _matches(tmp_path / "data", 1)[0]
    long_rel = "sub/" + "a_very_long_file_name_from_a_camera_export_0001.jpg"
    (tmp_path / "data" / long_rel).write_bytes(m.path.read_bytes())
    long = Match(path=tmp_path / "data" / long_rel, relpath=long_rel, score=0.5, rank=0, row=0)
    title = plot_results(query, [long]).axes[1].get_title()
    first_line = title.splitlines()[0]
    assert len(first_line) < 40
    assert first_line.endswith("0001.jpg")
    assert "0.500" in title


def test_save_png(tmp_path: Path, nine: list[Match], query: np.ndarray) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = plot_results(query, nine)
    out = tmp_path / "new_folder" / "results.png"
    save_figure(fig, out, dpi=40)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as im:
        w, h = im.size
    assert h > w  # the query row on top of three rows of a three-column grid
    fig.savefig(tmp_path / "direct.png", dpi=30)
    assert (tmp_path / "direct.png").stat().st_size > 0
    assert fig.canvas.manager is None and plt.get_fignums() == before
