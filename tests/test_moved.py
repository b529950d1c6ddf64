"""The modules that moved into folders still import under their old top-level names.

``revsearch.store`` is ``revsearch.storage.store`` itself (the same module object, so patching one
patches the other), with a DeprecationWarning that names the new path and points at the user's
import line. This is the one file of the repository that spells the old paths.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import revsearch

REPO = Path(__file__).resolve().parents[1]

#: Old path below revsearch -> new path below revsearch (stated here on its own, not read from the package).
MOVED = {
    "errors": "core.errors",
    "version": "core.version",
    "measured": "core.measured",
    "safety": "core.safety",
    "console": "core.console",
    "images": "media.images",
    "reader": "media.reader",
    "remote": "media.remote",
    "edits": "media.edits",
    "data": "media.data",
    "backends": "models.backends",
    "embedding": "models.embedding",
    "clip": "models.clip",
    "store": "storage.store",
    "index": "storage.index",
    "indexing": "storage.indexing",
    "distributed": "storage.distributed",
    "legacy": "storage.legacy",
    "search": "retrieval.exact",
    "ann": "retrieval.ann",
    "rerank": "retrieval.rerank",
    "evaluate": "quality.evaluate",
}

_PROBE = """
import importlib, json, sys, warnings

MOVED = json.loads(sys.argv[1])
import revsearch

out = {}
for old, new in MOVED.items():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module("revsearch." + old)
    real = sys.modules["revsearch." + new]
    out[old] = {
        "same": module is real and sys.modules["revsearch." + old] is real and getattr(revsearch, old) is real,
        "spec": module.__spec__.name,
        "warnings": [(w.category.__name__, str(w.message), w.filename) for w in caught],
    }
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from revsearch.index import Index             # a second import of a moved module: no second warning
    from revsearch.storage.store import Manifest  # the new path: no warning
out["again"] = [str(w.message) for w in caught]
out["Index"] = Index.__module__ + "." + Index.__qualname__
heavy = ("tensorflow", "keras", "tf_keras", "torch", "jax", "openvino", "cv2")
out["heavy"] = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
print(json.dumps(out))
"""


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=300)


def test_every_old_path_is_the_new_module_with_a_warning() -> None:
    proc = _run(_PROBE, json.dumps(MOVED))
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    for old, new in MOVED.items():
        assert r[old]["same"], f"revsearch.{old} is not revsearch.{new}"
        assert r[old]["spec"] == f"revsearch.{new}", "the real module's __spec__ was left pointing at the alias"
        ours = [w for w in r[old]["warnings"] if f"revsearch.{old} moved" in w[1]]
        assert len(ours) == 1, r[old]["warnings"]
        category, message, filename = ours[0]
        assert category == "DeprecationWarning"
        assert f"revsearch.{new}" in message
        assert filename == "<string>", f"the warning points into {filename}, not at the import that used the old path"
    assert r["again"] == []
    assert r["Index"] == "revsearch.storage.index.Index"
    # importing every module of the library, by its old name, still loads no model library
    assert r["heavy"] == [], r["heavy"]


def test_old_imports_work_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import revsearch.storage.index as new_index
    import revsearch.storage.store as new_store

    for old in ("store", "index"):  # as in a fresh process (hasattr would import them: vars, not hasattr)
        monkeypatch.delitem(sys.modules, f"revsearch.{old}", raising=False)
        if old in vars(revsearch):
            monkeypatch.delattr(revsearch, old)
    with pytest.warns(DeprecationWarning, match=r"revsearch\.store moved to revsearch\.storage\.store"):
        from revsearch.store import Manifest
    assert Manifest is new_store.Manifest
    with pytest.warns(DeprecationWarning, match=r"revsearch\.index moved to revsearch\.storage\.index"):
        old_index = importlib.import_module("revsearch.index")
    assert old_index is new_index and revsearch.index is new_index
    assert revsearch.store is new_store
    # one module object under two names: a patch through the old name is seen under the new one
    monkeypatch.setattr(revsearch.store, "MANIFEST_NAME", "patched.json")
    assert new_store.MANIFEST_NAME == "patched.json"


def test_old_path_as_an_attribute_of_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import revsearch; revsearch.rerank`` (the module not imported before) resolves, with the warning."""
    import revsearch.retrieval.rerank as new

    monkeypatch.delitem(sys.modules, "revsearch.rerank", raising=False)
    if "rerank" in vars(revsearch):
        monkeypatch.delattr(revsearch, "rerank")
    with pytest.warns(DeprecationWarning, match=r"revsearch\.retrieval\.rerank"):
        module = getattr(revsearch, "rerank")
    assert module is new


def test_the_catalogue_names_of_the_old_models_module() -> None:
    """``revsearch.models`` was the catalogue; it is now the models folder, whose attributes lead there."""
    from revsearch.models.catalogue import MODELS, ModelInfo

    with pytest.warns(DeprecationWarning, match=r"revsearch\.models\.catalogue"):
        from revsearch.models import MODELS as old_models
    assert old_models is MODELS
    models = importlib.import_module("revsearch.models")
    with pytest.warns(DeprecationWarning):
        assert models.ModelInfo is ModelInfo
    with pytest.raises(AttributeError, match="no_such_name"):
        models.no_such_name  # noqa: B018
    assert revsearch.MODELS is MODELS  # the package's public name: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert revsearch.MODELS is MODELS


def test_no_module_file_is_left_at_an_old_path() -> None:
    for old, new in MOVED.items():
        assert not (REPO / "revsearch" / f"{old}.py").exists(), f"revsearch/{old}.py is back: the map shows it twice"
        assert (REPO / "revsearch" / (new.replace(".", "/") + ".py")).is_file(), new


def test_the_repository_uses_the_new_paths() -> None:
    """Library, tests, benchmarks, docs and the notebook spell the new paths: the old ones appear only
    here, in the aliasing (revsearch/__init__.py, revsearch/models/__init__.py) and in the README's note."""
    old = "|".join(sorted(MOVED, key=len, reverse=True))
    dotted = re.compile(rf"\brevsearch\.({old})\b(?![-/])|\brevsearch\.models\.(MODELS|ModelInfo|TEXT_MODELS)\b")
    wrong = []
    files = [*REPO.glob("revsearch/**/*.py"), *REPO.glob("tests/*.py"), *REPO.glob("benchmarks/*.py"),
             *REPO.glob("docs/*.md"), REPO / "README.md", REPO / "benchmarks" / "README.md",
             REPO / "Reverse_Search.ipynb", REPO / "pyproject.toml"]
    for path in sorted(files):
        aliasing = (REPO / "revsearch" / "__init__.py", REPO / "revsearch" / "models" / "__init__.py")
        if path == Path(__file__).resolve() or path in aliasing:
            continue
        text = path.read_text(encoding="utf-8")
        if path.name == "README.md":  # its note on the old paths
            text = re.sub(r"\nThe old top-level module paths.*?\n\n", "\n", text, flags=re.S)
        wrong += [f"{path.relative_to(REPO)}: {m.group(0)}" for m in dotted.finditer(text)]
        if path.suffix == ".py":
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.ImportFrom) and node.module == "revsearch" and not node.level:
                    wrong += [f"{path.relative_to(REPO)}:{node.lineno}: from revsearch import {a.name}"
                              for a in node.names if a.name in MOVED]
    assert not wrong, "old module paths (they warn): " + "; ".join(wrong)
