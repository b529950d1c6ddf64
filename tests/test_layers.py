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

#: The layers, lowest first, by module path below ``revsearch`` (``storage.store`` is
#: revsearch/storage/store.py). A module may import modules of lower layers only. A package named here
#: as a whole (``duplicates``) is one unit whose files may import each other. ``__init__`` (the lazy
#: facade) and ``__main__`` stand apart. (Some names belong to branches not merged yet: textsearch.)
LAYERS: list[tuple[str, list[str]]] = [
    ("the folders' own __init__ (a docstring; they import none of their modules)",
     ["core", "media", "models", "storage", "retrieval", "quality"]),
    ("foundation",
     ["core.errors", "core.version", "core.console", "core.measured", "media.edits", "models.catalogue"]),
    ("what a file may make revsearch do: confinement, safe names, checked numbers", ["core.safety"]),
    ("images and devices", ["media.images", "models.backends", "retrieval.exact"]),
    ("reading files", ["media.reader"]),
    ("embedding, storage, input",
     ["models.embedding", "storage.store", "media.remote", "display", "media.data", "colab"]),
    ("approximate search, search options, other models, thumbnails",
     ["retrieval.ann", "retrieval.rerank", "models.clip", "storage.thumbs"]),
    ("the read-only index", ["storage.index"]),
    ("writing", ["storage.indexing"]),
    ("clusters, imports, quality, duplicates, text search",
     ["storage.distributed", "storage.legacy", "quality.evaluate", "duplicates", "retrieval.textsearch"]),
    ("operations", ["operations"]),
    ("one-call entry point", ["api"]),
    ("demo", ["demo"]),
    ("front ends", ["cli", "notebook", "widgets"]),
]
APART = {"__init__", "__main__"}

#: What stays at the top of revsearch/: the facade, the operations and the one-call entry point, the
#: front ends. Everything below them lives in a folder named for its stage.
TOP_LEVEL = {"__init__", "__main__", "operations", "api", "cli", "notebook", "colab", "widgets", "display", "demo"}


def _layer_of() -> dict[str, int]:
    return {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}


def _dotted(path: Path) -> str:
    """revsearch/storage/store.py -> "storage.store"; revsearch/storage/__init__.py -> "storage"."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, list[Path]]:
    """Unit name -> its files: every module by its dotted name, except that a package named whole in
    LAYERS (as ``duplicates``) is one unit holding all its files."""
    listed = {m for _, mods in LAYERS for m in mods}
    whole = {m for m in listed if (PACKAGE / m.replace(".", "/") / "__init__.py").is_file()}
    whole = {w for w in whole if not any(m.startswith(w + ".") for m in listed)}  # not a folder of units
    out: dict[str, list[Path]] = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        name = _dotted(p)
        unit = next((w for w in whole if name == w or name.startswith(w + ".")), name)
        out.setdefault(unit, []).append(p)
    return out


def _unit_of(target: str, units: set[str]) -> str | None:
    """The unit that holds module ``target`` (the longest unit name that is it or a package above it)."""
    parts = target.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in units:
            return ".".join(parts[:n])
    return None


def _imports(path: Path, units: set[str] | None = None) -> list[tuple[int, str, list[str]]]:
    """(line, imported module of the package as a dotted name below revsearch, names imported) of every
    import in a file. ``from .storage import store`` imports the module ``storage.store`` (names: none);
    ``from .storage.store import X`` imports ``X`` from ``storage.store``. A file outside the package
    is read as a top-level module of it."""
    modules = {_dotted(p) for p in PACKAGE.rglob("*.py")} if units is None else units
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    inside = path.is_relative_to(PACKAGE)
    here = _dotted(path).split(".") if inside else ["probe"]
    package = here if inside and path.name == "__init__.py" and len(here) and here != ["__init__"] else here[:-1]
    skip = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for n in ast.walk(stmt)
    }

    def submodules(base: str, names: list[str]) -> list[tuple[str, list[str]]]:
        """``from base import a, b``: the modules among the names, else the names from ``base``."""
        found = [(f"{base}.{n}" if base else n, []) for n in names if (f"{base}.{n}" if base else n) in modules]
        rest = [n for n in names if (f"{base}.{n}" if base else n) not in modules]
        return found + ([(base or "__init__", rest)] if rest else [])

    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level:
                base_parts = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            elif node.module and (node.module == "revsearch" or node.module.startswith("revsearch.")):
                base = node.module.partition(".")[2]
            else:
                continue
            out.extend((node.lineno, target, found) for target, found in submodules(base, names))
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "revsearch":
                    out.append((node.lineno, ".".join(parts[1:]) or "__init__", []))
    return out


def test_every_module_has_a_layer() -> None:
    known = set(_layer_of()) | APART
    missing = sorted(set(_modules()) - known)
    assert not missing, f"add these modules to LAYERS in tests/test_layers.py: {missing}"
    assert len(known) == sum(len(m) for _, m in LAYERS) + len(APART), "a module is in two layers"


def test_the_top_level_holds_only_the_entry_points_and_front_ends() -> None:
    """The folder map stays a map: a new lower-layer module goes into the folder of its stage."""
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == TOP_LEVEL, f"modules at the top of revsearch/ that belong in a folder: {sorted(top - TOP_LEVEL)}"
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == {"core", "media", "models", "storage", "retrieval", "quality", "duplicates"}


def test_imports_go_down_the_layers() -> None:
    layer = _layer_of()
    modules = _modules()
    wrong = []
    checked = 0
    for name, files in modules.items():
        if name in APART:
            continue
        for path in files:
            for line, imported, _ in _imports(path):
                target = _unit_of(imported, set(modules))
                where = f"{path.relative_to(PACKAGE.parent)}:{line}"
                if imported == "__init__" or target == "__init__":
                    wrong.append(f"{where} imports the package facade: import the module that defines it")
                    continue
                assert target is not None, f"{where} imports revsearch.{imported}, which does not exist"
                if target == name:
                    continue
                checked += 1
                if layer[target] >= layer[name]:
                    wrong.append(
                        f"{where}: {name} ({LAYERS[layer[name]][0]}) imports {target} ({LAYERS[layer[target]][0]})"
                    )
    assert checked > 100, f"only {checked} imports were read: the parser misses imports"
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
    """The parser finds imports inside functions (so the layer test can fail), not annotation-only ones,
    and names the module a ``from <package> import <module>`` imports."""
    src = tmp_path / "probe.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from .operations import Index\n"
        "def f():\n    from . import cli\n    import revsearch.notebook\n    from .api import x\n"
        "    from .storage import store\n    from revsearch.storage.index import Index\n"
        "    import revsearch.retrieval.ann\n    from revsearch import media\n"
    )
    found = {(target, tuple(names)) for _, target, names in _imports(src)}
    assert ("cli", ()) in found and ("notebook", ()) in found and ("api", ("x",)) in found
    assert ("storage.store", ()) in found and ("storage.index", ("Index",)) in found
    assert ("retrieval.ann", ()) in found and ("media", ()) in found
    assert ("operations", ("Index",)) not in found
    inner = _imports(PACKAGE / "storage" / "index.py")
    assert any(target == "storage.store" for _, target, _ in inner), "a sibling import (from .store) is missed"
    assert any(target == "core.errors" for _, target, _ in inner), "an import from another folder is missed"


def test_only_the_store_names_manifest_keys() -> None:
    """Outside revsearch/storage/store.py nobody reads a manifest by key (``manifest["x"]``,
    ``manifest.get("x")``): :class:`revsearch.storage.store.Manifest` has a typed property for each entry, and writers use
    ``FolderWriter.commit``'s keyword arguments. (A new entry: add its property and keyword to the store.)"""

    def is_manifest(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id == "manifest") or (
            isinstance(node, ast.Attribute) and node.attr == "manifest"
        )

    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "storage" / "store.py":
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
