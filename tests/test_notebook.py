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
_PYTHONPATH = os.environ.get("PYTHONPATH", "")  # as the test run started (before any monkeypatching)
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
    for name in ("STORAGE", "DOWNLOAD_ORIGINAL_DATA", "DATASET_DIR", "VECTORS", "MODEL", "K", "IMAGES_SOURCE",
                 "VECTORS_SOURCE", "KEEP_ARCHIVES", "REPO_URL", "REPO_PATH"):
        assert re.search(rf"^{name} = .*#@param", params, re.M), f"no #@param {name}"
    # No made-up repository URL: REPO_URL's default is empty.
    assert re.search(r'^REPO_URL = ""', params, re.M)
    assert "github.com" not in params
    # The markdown documents how parameters are injected.
    for variable in ("REVSEARCH_NB_OFFLINE", "REVSEARCH_NB_IMAGES_SOURCE", "REVSEARCH_NB_VECTORS_SOURCE",
                     "REVSEARCH_NB_VECTORS", "REVSEARCH_NB_KEEP_ARCHIVES"):
        assert variable in nb.cells[0].source
    # The form's help text gives the measured comparison of the two VECTORS choices.
    assert "0.853" in _cell(nb, 2).source and "0.305" in _cell(nb, 2).source
    # The logic lives in the library: cells 2-7 call revsearch.notebook / widgets / the API only.
    for number in range(2, 8):
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


def test_install_cell_with_drive_refused_says_so_in_one_line(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    src = _cell(nb, 1).source
    fake = tmp_path / "fake"
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "colab" / "__init__.py").write_text(
        "class drive:\n    @staticmethod\n    def mount(path):\n"
        "        raise ValueError('mount failed: credential propagation was unsuccessful')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "REVSEARCH_REPO", "COLAB_"))}
    env["PYTHONPATH"] = str(fake)
    proc = subprocess.run(
        [sys.executable, "-S", "-c", "import google.colab\n" + src], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0
    assert proc.stdout.strip().splitlines() == [
        "Google Drive is not available (ValueError: mount failed: credential propagation was unsuccessful); "
        "not looking for a clone there."
    ]
    assert "no clone of its repository was found" in proc.stderr and "mount failed" not in proc.stderr


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
    spec_dir.mkdir(parents=True, exist_ok=True)
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
        shutil.rmtree(keras_home, ignore_errors=True)
        shutil.copytree(Path(os.environ["REVSEARCH_TEST_KERAS_HOME"]) / "models", keras_home / "models")
        env.update(KERAS_HOME=str(keras_home), REVSEARCH_NB_MODEL="mobilenet", REVSEARCH_NB_WEIGHTS="imagenet")
    else:
        env.update(KERAS_HOME=str(tmp_path / "keras-empty"), REVSEARCH_NB_MODEL="resnet50", REVSEARCH_NB_WEIGHTS="none")
    return env


@pytest.mark.slow
def test_notebook_runs_offline_end_to_end(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    photos = tmp_path / "photos"
    write_photos(photos / "a", 6, start=0)
    write_photos(photos / "b", 4, start=6, ext=".png")
    shutil.copy(photos / "b" / "img0007.png", photos / "b" / "img0007 copy.png")  # for step 7
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
    assert "11 vectors" in index_text and "11 added" in index_text
    widget_outputs = _cell(nb, 5).outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in widget_outputs)

    path_cell = _cell(nb, 6)
    pngs = [o["data"]["image/png"] for o in path_cell.outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1, "the search with a path shows the result picture"
    assert base64.b64decode(pngs[0]).startswith(b"\x89PNG")
    listing = [line for line in _text(path_cell).splitlines() if re.match(r"\s*\d+\. [-0-9.]+  ", line)]
    assert len(listing) == 4, _text(path_cell)
    if HAVE_WEIGHTS:
        assert "a/img0000.jpg" in listing[0]  # the query (first image) is its own best match
    else:  # random weights: synthetic photos tie near 1.000 and the default expansion may reorder the ties
        assert any("a/img0000.jpg" in line for line in listing), listing
    saved = tmp_path / "work" / "results" / "reverse_search.png"
    assert saved.read_bytes().startswith(b"\x89PNG")
    assert not list(kernel_cwd.iterdir()), "the offline run wrote only into REVSEARCH_NB_WORK_DIR"

    # Step 7 finds the copy, shows its group as a picture, and moves nothing.
    dup_cell = _cell(nb, 7)
    dup_pngs = [o["data"]["image/png"] for o in dup_cell.outputs if "image/png" in o.get("data", {})]
    assert len(dup_pngs) == 1 and base64.b64decode(dup_pngs[0]).startswith(b"\x89PNG")
    assert re.search(r"\b1 group\b", _text(dup_cell)), _text(dup_cell)
    assert (photos / "b" / "img0007 copy.png").is_file() and (photos / "b" / "img0007.png").is_file()



# --------------------------------------------------------------------------- a simulated Colab


FAKE_COLAB = """
import json, os
from pathlib import Path

def _record(what):
    log = Path(os.environ["FAKE_COLAB_LOG"])
    calls = json.loads(log.read_text()) if log.exists() else []
    log.write_text(json.dumps(calls + [what]))

class _Drive:
    @staticmethod
    def mount(mountpoint, **kwargs):
        _record(["mount", mountpoint])
        if os.environ.get("FAKE_COLAB_REFUSE_DRIVE") == "1":
            raise ValueError("mount failed")
        (Path(mountpoint) / "MyDrive").mkdir(parents=True, exist_ok=True)

class _Output:
    @staticmethod
    def enable_custom_widget_manager():
        _record(["widget_manager"])

drive = _Drive()
output = _Output()
"""

#: Run after the notebook, in its kernel: a user's upload, as the browser's widget sends it.
UPLOAD_CELL = """
import ipywidgets, revsearch.widgets as _rw
from revsearch.notebook import pipeline_note
_calls = []
_real = _rw.show_search
def _counted(output, query, **kwargs):
    _calls.append(kwargs.get("name"))
    return _real(output, query, **kwargs)
_rw.show_search = _counted
_app = _rw.SearchApp(**settings.search_kwargs(), note=pipeline_note(index, settings))
_content = sorted(settings.dataset_dir.iterdir())[3].read_bytes()
if int(ipywidgets.__version__.split(".")[0]) < 8:
    _app.upload.set_state({"_counter": _app.upload._counter + 1, "data": [memoryview(_content)],
                           "metadata": [{"name": "my_photo.jpg", "type": "image/jpeg", "size": len(_content)}]})
else:
    _app.upload.set_state({"value": [{"name": "my_photo.jpg", "type": "image/jpeg", "size": len(_content),
                                      "content": memoryview(_content), "last_modified": 0}]})
print("ipywidgets", ipywidgets.__version__, "searches:", _calls)
for _o in _app.output.outputs:
    print("OUTPUT", _o.get("output_type"), sorted(_o.get("data", {})), repr(_o.get("text", ""))[:300])
"""


#: Run first in the kernel: no ImageNet weights can be downloaded here, so the network resource is
#: faked like google.colab is: Keras's ResNet50 with weights="imagenet" gets seeded random weights.
NO_DOWNLOAD_CELL = """
import keras, revsearch.models.embedding as _emb
_ResNet50 = keras.applications.ResNet50
def _offline_resnet50(*args, weights="imagenet", **kwargs):
    if weights != "imagenet":
        return _ResNet50(*args, weights=weights, **kwargs)
    return _emb.seed_random_weights(_ResNet50(*args, weights=None, **kwargs))
keras.applications.ResNet50 = _offline_resnet50
"""


def _original_layout_zips(root: Path, n: int = 10) -> list[str]:
    """The original project's two zips: ``imagenet_resized/CCCC_NNNNNN.jpg`` and ``vectors/<n>.pbz2``."""
    import bz2
    import pickle
    import zipfile

    import numpy as np

    photos = write_photos(root / "photos", n)
    names = [f"{i % 3 + 1:04d}_{i:06d}.jpg" for i in range(n)]
    with zipfile.ZipFile(root / "imagenet_resized.zip", "w") as zf:
        for name, photo in zip(names, photos):
            zf.write(photo, f"imagenet_resized/{name}")
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(root / "vectors.zip", "w") as zf:
        for i, name in enumerate(names, start=1):  # {name: (100352,) float32}, bz2 pickle, as in 2021
            zf.writestr(f"vectors/{i}.pbz2", bz2.compress(pickle.dumps({name: rng.random(100352, dtype=np.float32)})))
    return names


@pytest.fixture()
def http_server(tmp_path):
    import threading
    from collections import Counter
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    served = tmp_path / "served"
    served.mkdir()
    hits: Counter = Counter()

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits[self.path] += 1
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(served)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def _run_in_colab(tmp_path: Path, monkeypatch, env: dict[str, str], pythonpath: list[Path]):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    fake = tmp_path / "fake-colab"
    (fake / "google" / "colab").mkdir(parents=True, exist_ok=True)  # google is a namespace package
    (fake / "google" / "colab" / "__init__.py").write_text(FAKE_COLAB)
    kernel_cwd = tmp_path / "content"
    kernel_cwd.mkdir(exist_ok=True)
    base = _kernel_env(tmp_path, tmp_path / "unused")
    for key in [k for k in os.environ if k.startswith(("REVSEARCH_NB_", "COLAB_", "FAKE_COLAB"))]:
        monkeypatch.delenv(key)
    base.pop("REVSEARCH_NB_DATASET_DIR")
    base.pop("REVSEARCH_NB_OFFLINE")
    base.pop("REVSEARCH_NB_DOWNLOAD")
    base.update(
        PYTHONPATH=os.pathsep.join([*map(str, pythonpath), str(fake), str(ROOT), _PYTHONPATH]).rstrip(os.pathsep),
        COLAB_RELEASE_TAG="release-colab-test",
        FAKE_COLAB_LOG=str(tmp_path / "colab-calls.json"),
        REVSEARCH_NB_DRIVE_MOUNT=str(tmp_path / "drive"),
        REVSEARCH_NB_WORK_DIR=str(tmp_path / "content" / "revsearch-data"),
        REVSEARCH_NB_STORAGE="Google Drive",
        REVSEARCH_NB_WEIGHTS="imagenet",  # faked by NO_DOWNLOAD_CELL
        REVSEARCH_NB_MODEL="resnet50",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    base.update(env)
    for key, value in base.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell(NO_DOWNLOAD_CELL))
    nb.cells.append(nbformat.v4.new_code_cell(UPLOAD_CELL))
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(kernel_cwd)}})
    client.execute()
    for c in _code_cells(nb):
        assert not [o for o in c.outputs if o.output_type == "error"]
    return nb


@pytest.mark.slow
def test_run_all_in_a_simulated_colab_with_colabs_versions_then_a_new_session(
    tmp_path, monkeypatch, http_server, colab_overlay
):
    """A new user's "Run all" in Colab (gdown 5.2.0, ipywidgets 7.7.1): downloads through the settings,
    imports, shows the uploaded photo first, searched once; then a new session re-indexes (latest versions)
    without downloading anything."""
    served, base_url, hits = http_server
    names = _original_layout_zips(served)
    sources = {
        "REVSEARCH_NB_IMAGES_SOURCE": base_url + "/imagenet_resized.zip",
        "REVSEARCH_NB_VECTORS_SOURCE": base_url + "/vectors.zip",
    }
    drive = tmp_path / "drive" / "MyDrive" / "revsearch-data"
    vm = tmp_path / "content" / "revsearch-data"

    nb = _run_in_colab(tmp_path, monkeypatch, {**sources, "REVSEARCH_NB_VECTORS": "auto"}, [colab_overlay])
    assert (hits["/imagenet_resized.zip"], hits["/vectors.zip"]) == (1, 1)
    calls = json.loads((tmp_path / "colab-calls.json").read_text())
    assert ["mount", str(tmp_path / "drive")] in calls
    assert ["widget_manager"] not in calls  # ipywidgets 7: Colab renders it natively
    settings_text = _text(_cell(nb, 2))
    assert "original project's vectors" in settings_text and "auto: no GPU" in settings_text
    assert base_url in settings_text
    fetch_text = _text(_cell(nb, 3))
    assert "Deleted the archive" in fetch_text and "Space taken by the data" in fetch_text
    assert "on Google Drive" in fetch_text and str(drive / "imagenet_resized") in fetch_text
    assert sorted(p.name for p in (drive / "imagenet_resized").iterdir()) == sorted(names)
    assert not list((vm / "archives").iterdir())  # zips deleted once unpacked
    assert not (vm / "legacy_vectors").exists()  # vector files deleted once imported
    index_text = _text(_cell(nb, 4))
    assert "These results come from the original project's vectors" in index_text
    assert (drive / "indexes" / "imagenet_resized-resnet50-seed" / "revsearch.json").is_file()
    upload_text = _text(nb.cells[-1])
    assert "ipywidgets 7.7.1 searches: ['my_photo.jpg']" in upload_text  # exactly one search
    outputs = [line for line in upload_text.splitlines() if line.startswith("OUTPUT")]
    assert "These results come from" in outputs[0]  # which pipeline, first
    assert "image/png" in outputs[1]  # the uploaded photo above its matches
    listed = re.findall(r"\d{4}_\d{6}\.jpg", outputs[2])
    assert len(listed) == 4 and set(listed) <= set(names)  # k matches (the fake vectors are random)
    assert len(_pngs(_cell(nb, 6))) == 1
    assert "These results come from the original project's vectors" in _text(_cell(nb, 6))
    # Step 7 on the original project's vectors (no calibration; here random, every cosine ~0.75): only verified
    # copies are grouped, so ten distinct photos make no group (a cosine threshold put them all in one)
    assert re.search(r"\b0 groups\b", _text(_cell(nb, 7))), _text(_cell(nb, 7))

    # A new session: the VM's disk is empty again; Drive keeps images and index. Switch to re-index.
    import shutil as _shutil

    _shutil.rmtree(vm)
    (tmp_path / "colab-calls.json").unlink()
    nb = _run_in_colab(tmp_path, monkeypatch, {**sources, "REVSEARCH_NB_VECTORS": "re-index"}, [])
    assert (hits["/imagenet_resized.zip"], hits["/vectors.zip"]) == (1, 1)  # nothing downloaded again
    index_text = _text(_cell(nb, 4))
    assert "10 added" in index_text and "These results come from resnet50" in index_text
    assert (drive / "indexes" / "imagenet_resized-resnet50" / "revsearch.json").is_file()
    assert (drive / "indexes" / "imagenet_resized-resnet50-seed" / "revsearch.json").is_file()  # kept
    upload_text = _text(nb.cells[-1])
    assert "searches: ['my_photo.jpg']" in upload_text and "ipywidgets 8" in upload_text
    outputs = [line for line in upload_text.splitlines() if line.startswith("OUTPUT")]
    assert "These results come from resnet50" in outputs[0] and "image/png" in outputs[1]
    assert re.findall(r"\d{4}_\d{6}\.jpg", outputs[2])[0] == sorted(names)[3]  # re-indexed: finds itself


def _pngs(cell) -> list[str]:
    return [o["data"]["image/png"] for o in cell.outputs if "image/png" in o.get("data", {})]
