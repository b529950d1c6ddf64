"""The Colab notebook: committed clean, and run headless end to end like a user would.

The run is offline: parameters are injected through the environment variables the settings
cell reads (``REVSEARCH_NB_*``, documented in the notebook's first cell), with a small folder of
generated photos, no Drive, no download, and MobileNet with the offline ImageNet weights
(``REVSEARCH_TEST_KERAS_HOME``) or, without them, ResNet50 with random weights.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HAVE_WEIGHTS, write_photos

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "Reverse_Search.ipynb"


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _cell(nb, number: int):
    """The code cell titled ``#@title <number>. ...``."""
    for c in _code_cells(nb):
        if re.match(rf"#@title {number}\.", c.source):
            return c
    raise AssertionError(f"no cell titled '#@title {number}.'")


def _text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o.get("text", ""))
        elif "data" in o:
            out.append(o["data"].get("text/plain", "") + "\n")
    return "".join(out)


# --------------------------------------------------------------------------- the committed file


def test_committed_notebook_is_clean_and_readable():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = _code_cells(nb)
    assert len(code) >= 6
    for i, c in enumerate(code, start=1):
        assert c.get("outputs") == [], f"code cell {i} has outputs: strip them before committing"
        assert c.get("execution_count") is None, f"code cell {i} has an execution count"
        assert c.source.startswith(f"#@title {i}. "), f"code cell {i} must start with '#@title {i}. ...'"
        assert "#@markdown" in c.source, f"code cell {i} has no #@markdown explanation"
    params = "\n".join(c.source for c in code)
    for name in ("STORAGE", "DOWNLOAD_ORIGINAL_DATA", "DATASET_DIR", "MODEL", "K", "REPO_URL", "REPO_PATH"):
        assert re.search(rf"^{name} = .*#@param", params, re.M), f"no #@param {name}"
    # No made-up repository URL: REPO_URL's default is empty.
    assert re.search(r'^REPO_URL = ""', params, re.M)
    assert "github.com" not in params
    # The markdown documents how parameters are injected.
    assert "REVSEARCH_NB_OFFLINE" in nb.cells[0].source
    # The logic lives in the library: cells 2-6 call revsearch.widgets / the API only.
    for number in range(2, 7):
        src = _cell(nb, number).source
        assert "from revsearch" in src
        assert "def " not in src and "class " not in src


def test_install_cell_without_clone_or_url_says_what_to_do(tmp_path):
    """Where revsearch cannot be imported and nothing says where to get it: one clear message."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    src = _cell(nb, 1).source
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "REVSEARCH_REPO", "COLAB_"))}
    # -S: no site-packages, so revsearch is not importable even where it is installed; the
    # cell must fail before it needs pip. A data folder named "revsearch" is not the package.
    (tmp_path / "revsearch").mkdir()
    proc = subprocess.run(
        [sys.executable, "-S", "-c", src], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0
    assert "REPO_PATH" in proc.stderr and "REPO_URL" in proc.stderr
    assert "no clone of its repository was found" in proc.stderr


def test_install_cell_does_nothing_when_revsearch_is_importable(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    src = _cell(nb, 1).source
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", src], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "is ready" in proc.stdout and "Installing" not in proc.stdout


# --------------------------------------------------------------------------- running it


def _kernel_env(tmp_path: Path, photos: Path) -> dict[str, str]:
    """The environment of the notebook's kernel: this Python, this checkout, offline parameters."""
    # A "python3" kernelspec that runs this very interpreter, found before any installed one.
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (revsearch test)",
                "language": "python",
            }
        )
    )
    env = {
        "JUPYTER_PATH": os.pathsep.join([str(tmp_path / "jupyter"), os.environ.get("JUPYTER_PATH", "")]).rstrip(
            os.pathsep
        ),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "REVSEARCH_NB_OFFLINE": "1",
        "REVSEARCH_NB_DOWNLOAD": "0",
        "REVSEARCH_NB_STORAGE": "Google Drive",  # asked for, but offline: local folders are used
        "REVSEARCH_NB_DATASET_DIR": str(photos),
        "REVSEARCH_NB_WORK_DIR": str(tmp_path / "work"),
        "REVSEARCH_NB_K": "4",
    }
    if HAVE_WEIGHTS:
        keras_home = tmp_path / "keras"
        shutil.copytree(Path(os.environ["REVSEARCH_TEST_KERAS_HOME"]) / "models", keras_home / "models")
        env.update(KERAS_HOME=str(keras_home), REVSEARCH_NB_MODEL="mobilenet", REVSEARCH_NB_WEIGHTS="imagenet")
    else:
        env.update(KERAS_HOME=str(tmp_path / "keras-empty"), REVSEARCH_NB_MODEL="resnet50", REVSEARCH_NB_WEIGHTS="none")
    return env


def test_notebook_runs_offline_end_to_end(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    photos = tmp_path / "photos"
    write_photos(photos / "a", 6, start=0)
    write_photos(photos / "b", 4, start=6, ext=".png")
    kernel_cwd = tmp_path / "notebook-folder"  # like a user's folder: nothing is written in the repository
    kernel_cwd.mkdir()
    for key, value in _kernel_env(tmp_path, photos).items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("COLAB_")]:
        monkeypatch.delenv(key)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(kernel_cwd)}},
    )
    client.execute()  # raises CellExecutionError (with the cell and its traceback) if any cell fails

    for c in _code_cells(nb):
        assert not [o for o in c.outputs if o.output_type == "error"]
    assert "is ready" in _text(_cell(nb, 1))
    settings_text = _text(_cell(nb, 2))
    assert str(photos) in settings_text and "offline" in settings_text
    assert "Download is off" in _text(_cell(nb, 3))
    index_text = _text(_cell(nb, 4))
    assert "10 vectors" in index_text and "10 added" in index_text
    widget_outputs = _cell(nb, 5).outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in widget_outputs)

    path_cell = _cell(nb, 6)
    pngs = [o["data"]["image/png"] for o in path_cell.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1, "the search with a path shows the result picture"
    assert base64.b64decode(pngs[0]).startswith(b"\x89PNG")
    listing = [line for line in _text(path_cell).splitlines() if re.match(r"\s*\d+\. [-0-9.]+  ", line)]
    assert len(listing) == 4, _text(path_cell)
    assert "a/img0000.jpg" in listing[0]  # the query (first image) is its own best match
    saved = tmp_path / "work" / "results" / "reverse_search.png"
    assert saved.read_bytes().startswith(b"\x89PNG")
    assert not list(kernel_cwd.iterdir()), "the offline run wrote only into REVSEARCH_NB_WORK_DIR"
