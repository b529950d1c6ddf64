"""Imports go one way: every import of every module (lazy ones inside functions included, read with
:mod:`ast`) points to a lower layer of the list below. Imports inside ``if TYPE_CHECKING:`` blocks
are for annotations only (they never run) and are not counted.

A new module goes into LAYERS where it belongs; a failure here names the import that goes up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "revsearch"

#: The layers, lowest first. A module may import modules of lower layers only (and its own package's
#: modules, for a module that is a package). ``__init__`` (the lazy facade) and ``__main__`` stand apart.
#: (Some names belong to branches not merged yet: safety, clip, thumbs, textsearch.)
LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["errors", "version", "console", "edits", "models", "measured"]),
    ("what a file may make revsearch do: confinement, safe names, checked numbers", ["safety"]),
    ("images and devices", ["images", "backends", "search"]),
    ("reading files", ["reader"]),
    ("embedding, storage, input", ["embedding", "store", "remote", "display", "data", "colab"]),
    ("approximate search, search options, other models", ["ann", "rerank", "clip", "thumbs"]),
    ("the read-only index", ["index"]),
    ("writing", ["indexing"]),
    ("clusters, imports, quality, duplicates, text search",
     ["distributed", "legacy", "evaluate", "duplicates", "textsearch"]),
    ("operations", ["operations"]),
    ("one-call entry point", ["api"]),
    ("demo", ["demo"]),
    ("front ends", ["cli", "notebook", "widgets"]),
]
APART = {"__init__", "__main__"}


def _layer_of() -> dict[str, int]:
    return {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}


def _modules() -> dict[str, list[Path]]:
    """Top-level module name -> its files (a package: all its files)."""
    out: dict[str, list[Path]] = {}
    for p in sorted(PACKAGE.iterdir()):
        if p.suffix == ".py":
            out[p.stem] = [p]
        elif p.is_dir() and (p / "__init__.py").is_file():
            out[p.name] = sorted(p.rglob("*.py"))
    return out


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported top-level module of the package, names imported) of every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    # 0: a module of the package; 1: a file of a sub-package (whose "from . import" stays inside it)
    depth = len(path.relative_to(PACKAGE).parts) - 1 if path.is_relative_to(PACKAGE) else 0
    skip = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level:
                if node.level <= depth:
                    continue  # within its own sub-package
                if node.module:
                    out.append((node.lineno, node.module.split(".")[0], names))
                else:
                    out.extend((node.lineno, n, []) for n in names)  # from . import x
            elif node.module and (node.module == "revsearch" or node.module.startswith("revsearch.")):
                parts = node.module.split(".")
                if len(parts) > 1:
                    out.append((node.lineno, parts[1], names))
                else:
                    out.extend((node.lineno, n, []) for n in names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "revsearch":
                    out.append((node.lineno, parts[1] if len(parts) > 1 else "__init__", []))
    return out


def test_every_module_has_a_layer() -> None:
    known = set(_layer_of()) | APART
    missing = sorted(set(_modules()) - known)
    assert not missing, f"add these modules to LAYERS in tests/test_layers.py: {missing}"
    assert len(known) == sum(len(m) for _, m in LAYERS) + len(APART), "a module is in two layers"


def test_imports_go_down_the_layers() -> None:
    layer = _layer_of()
    modules = _modules()
    wrong = []
    for name, files in modules.items():
        if name in APART:
            continue
        for path in files:
            for line, target, _ in _imports(path):
                if target == name or target not in modules:
                    continue
                where = f"{path.relative_to(PACKAGE.parent)}:{line}"
                if target in APART:
                    wrong.append(f"{where} imports the package facade ({target}): import the module that defines it")
                elif layer[target] >= layer[name]:
                    wrong.append(
                        f"{where}: {name} ({LAYERS[layer[name]][0]}) imports {target} ({LAYERS[layer[target]][0]})"
                    )
    assert not wrong, "imports that do not go down the layers:\n" + "\n".join(wrong)


@pytest.mark.parametrize("folder", ["revsearch", "tests", "benchmarks"])
def test_no_private_names_cross_modules(folder: str) -> None:
    """``from revsearch.x import _y`` (or ``from .x import _y``) never appears: a needed name is public."""
    root = PACKAGE.parent / folder
    wrong = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            ours = node.level > 0 or (node.module or "").split(".")[0] == "revsearch"
            if not ours:
                continue
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if private:
                wrong.append(f"{path.relative_to(root.parent)}:{node.lineno} imports {private}")
    assert not wrong, "\n".join(wrong)


def test_tests_use_no_private_attributes_of_modules() -> None:
    """``module._name`` on a revsearch module imported by a test never appears (monkeypatching included)."""
    wrong = []
    for path in sorted((PACKAGE.parent / "tests").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases |= {a.asname for a in node.names if a.name.startswith("revsearch.") and a.asname}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "revsearch":
                aliases |= {a.asname or a.name for a in node.names if a.name.islower()}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                wrong.append(f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_lazy_imports_and_leaves_out_type_checking_ones(tmp_path: Path) -> None:
    """The parser finds imports inside functions (so the layer test can fail), not annotation-only ones."""
    src = tmp_path / "probe.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .operations import Index\n"
        "def f():\n    from . import cli\n    import revsearch.notebook\n    from .api import x\n"
    )
    found = {(target, tuple(names)) for _, target, names in _imports(src)}
    assert ("cli", ()) in found and ("notebook", ()) in found and ("api", ("x",)) in found
    assert ("operations", ("Index",)) not in found


def test_only_the_store_names_manifest_keys() -> None:
    """Outside revsearch/store.py nobody reads a manifest by key (``manifest["x"]``, ``manifest.get("x")``):
    :class:`revsearch.store.Manifest` has a typed property for each entry, and writers use
    ``FolderWriter.commit``'s keyword arguments. (A new entry: add its property and keyword to the store.)"""

    def is_manifest(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id == "manifest") or (
            isinstance(node, ast.Attribute) and node.attr == "manifest"
        )

    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "store.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            key = None
            if isinstance(node, ast.Subscript) and is_manifest(node.value) and isinstance(node.slice, ast.Constant):
                key = node.slice.value
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                  and is_manifest(node.func.value) and node.args and isinstance(node.args[0], ast.Constant)):
                key = node.args[0].value
            if key is not None:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} reads the manifest key {key!r}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "commit":
                for kw in node.keywords:
                    if kw.arg == "fields" and isinstance(kw.value, ast.Dict):
                        keys = [k.value for k in kw.value.keys if isinstance(k, ast.Constant)]
                        wrong.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} writes the manifest keys {keys}")
    assert not wrong, "\n".join(wrong)
