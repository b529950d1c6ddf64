"""``revsearch demo``: a sample collection from scikit-image's bundled photos, indexed and searched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_weights
from revsearch import demo
from revsearch.errors import OptionalDependencyError

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("skimage", reason="the demo's photos come with scikit-image (pip install 'revsearch[demo]')")


def test_the_samples_ship_in_the_wheel_and_are_free_to_use():
    found = demo.sample_photos()
    assert set(found) == set(demo.SAMPLES) and all(p.is_file() for p in found.values())
    for name, (_, licence) in demo.SAMPLES.items():
        assert "public domain" in licence or "CC0" in licence or "no known copyright" in licence, name


def test_without_scikit_image_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(demo.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(OptionalDependencyError, match=r"revsearch\[demo\]"):
        demo.sample_photos()


def test_collection_has_every_sample_and_its_edits_and_an_unseen_query(tmp_path):
    photos, query = demo.make_demo_collection(tmp_path)
    names = sorted(p.name for p in photos.iterdir())
    assert len(names) == len(demo.SAMPLES) * (1 + len(demo.DEMO_EDITS))
    assert "chelsea.jpg" in names and "chelsea-text.jpg" in names and "coins-rotate_10.jpg" in names
    assert query.parent == tmp_path and query.name not in names
    from revsearch.images import load_image

    assert load_image(query).size != load_image(photos / "chelsea.jpg").size  # an edit, not a copy
    mtimes = {p: p.stat().st_mtime_ns for p in photos.iterdir()}
    demo.make_demo_collection(tmp_path)  # a rerun reuses the files
    assert {p: p.stat().st_mtime_ns for p in photos.iterdir()} == mtimes


@needs_weights
def test_demo_with_mobilenet_finds_the_cat_and_its_copies(tmp_path):
    result = demo.run_demo(tmp_path, model="mobilenet", k=9, progress=False)
    assert result.found_the_original()
    top5 = [m.name for m in result.results[:5]]
    assert all(name.startswith("chelsea") for name in top5), top5  # the photo and its 4 edits first
    assert result.figure_path.read_bytes().startswith(b"\x89PNG")
    assert len(result.results.index) == 60


@pytest.mark.slow
def test_cli_demo_with_random_weights(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, "-m", "revsearch", "demo", "--model", "mobilenet", "--weights", "none", "--dir",
         str(tmp_path / "d"), "-k", "4", "-q"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "60 photos" in lines[0] and "index-mobilenet-random" in lines[1] and "not seen" in lines[2]
    assert len([line for line in lines if line.strip()[:1].isdigit()]) == 4
    assert (tmp_path / "d" / "result.png").read_bytes().startswith(b"\x89PNG")
