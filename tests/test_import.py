"""``import revsearch`` is cheap and quiet: no TensorFlow, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import revsearch

REPO = Path(__file__).resolve().parents[1]

_PROBE = """
import json, socket, sys

opened = []

class NoSocket(socket.socket):
    def __init__(self, *args, **kwargs):
        opened.append(repr(args))
        raise OSError("test: no sockets while importing revsearch")

socket.socket = NoSocket
socket.create_connection = lambda *a, **k: opened.append("create_connection") or NoSocket()

import revsearch

heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "torch", "jax"))
after_import = {"heavy": heavy, "sockets": list(opened), "has_version": bool(revsearch.__version__)}

lazy = {}
for name in ("Index", "reverse_image_search", "Match", "Embedder", "get_embedder", "load_image", "find_images"):
    obj = getattr(revsearch, name)
    lazy[name] = getattr(obj, "__module__", "") + "." + getattr(obj, "__qualname__", type(obj).__name__)
heavy_after_lazy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
try:
    revsearch.no_such_thing
    missing = "no error"
except AttributeError as e:
    missing = str(e)
print(json.dumps({**after_import, "lazy": lazy, "heavy_after_lazy": heavy_after_lazy,
                  "sockets_after_lazy": list(opened), "dir": dir(revsearch), "missing": missing}))
"""


def _probe() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_PROBE)],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_is_light_and_offline() -> None:
    r = _probe()
    assert r["heavy"] == [], r["heavy"]
    assert r["sockets"] == []
    assert r["has_version"]
    # the lazy names resolve to the right objects, still without TensorFlow or the network
    assert r["lazy"]["Index"] == "revsearch.operations.Index"
    assert r["lazy"]["reverse_image_search"] == "revsearch.api.reverse_image_search"
    assert r["lazy"]["Match"] == "revsearch.search.Match"
    assert r["lazy"]["Embedder"] == "revsearch.embedding.Embedder"
    assert r["lazy"]["load_image"] == "revsearch.images.load_image"
    assert r["heavy_after_lazy"] == []
    assert r["sockets_after_lazy"] == []
    for name in ("Index", "reverse_image_search", "Match", "plot_results", "Embedder", "ImageReadError"):
        assert name in r["dir"]
    assert "no_such_thing" in r["missing"]


def test_lazy_attributes_in_process() -> None:
    from revsearch.api import reverse_image_search
    from revsearch.operations import Index
    from revsearch.search import Match

    assert revsearch.Index is Index
    assert revsearch.reverse_image_search is reverse_image_search
    assert revsearch.Match is Match
    names = dir(revsearch)
    assert {"Index", "reverse_image_search", "Match", "plot_results", "__version__"} <= set(names)
    assert names == sorted(names)
    # everything advertised in __all__ can be fetched
    for name in revsearch.__all__:
        assert getattr(revsearch, name) is not None, name
    assert issubclass(revsearch.ImageReadError, revsearch.RevsearchError)
