"""The docs are kept in step with the code: the command-line reference (docs/cli.md) and the README's
examples against the real parser (sqlite-utils style), the measured figures messages quote, the test
command, and the links between the pages."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from revsearch.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"
CLI_PAGE = README.parent / "docs" / "cli.md"


def _cli_block() -> list[str]:
    """The synopsis lines of docs/cli.md (one per command)."""
    text = CLI_PAGE.read_text(encoding="utf-8")
    section = text.split("## Commands", 1)[1]
    block = section.split("```text", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines() if line.strip().startswith("revsearch ")]


def _readme_commands() -> list[str]:
    """The command lines of the README's examples (after ``&&`` too, comments cut)."""
    text = README.read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            for part in line.split("#", 1)[0].split("&&"):
                if part.strip().startswith("revsearch "):
                    out.append(part.strip())
    return out


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_is_documented_and_every_documented_command_exists() -> None:
    documented = {line.split()[1] for line in _cli_block()}
    assert documented == set(_subparsers())


def test_documented_options_exist() -> None:
    subs = _subparsers()
    assert _readme_commands(), "the README shows no revsearch command"
    for line in _cli_block() + _readme_commands():
        command = line.split()[1]
        known = {opt for a in subs[command]._actions for opt in a.option_strings}
        for option in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", line):
            assert option in known, f"README documents {option} for `revsearch {command}`, the parser has no such option"


def _docs_text() -> str:
    """README and the reference pages in docs/."""
    docs = sorted((README.parent / "docs").glob("*.md")) if (README.parent / "docs").is_dir() else []
    return "\n".join(p.read_text(encoding="utf-8") for p in [README, *docs])


def test_measured_figures_in_messages_match_the_docs_and_the_notebook() -> None:
    """The figures messages quote (revsearch.measured) are the ones the docs' table and the notebook state."""
    import json

    from revsearch.measured import NOTEBOOK_VECTORS

    text = _docs_text()
    rows = {
        "original": next(line for line in text.splitlines() if line.startswith("| the original's: raw BGR")),
        "default": next(line for line in text.splitlines() if line.startswith("| **today's default**")),
    }
    for which, row in rows.items():
        cells = [c.strip().strip("*") for c in row.strip("|").split("|")]
        got = [float(c) for c in cells[1:4]]
        want = NOTEBOOK_VECTORS[which]
        assert got == [want["precision@9"], want["mAP"], want["recall@1"]], (which, row)
    nb = json.loads((README.parent / "Reverse_Search.ipynb").read_text(encoding="utf-8"))
    source = "".join("".join(c["source"]) for c in nb["cells"])
    for which in ("original", "default"):
        assert f"**{NOTEBOOK_VECTORS[which]['precision@9']:.3f}** (mAP {NOTEBOOK_VECTORS[which]['mAP']:.3f})" in source


def test_readme_test_command_is_what_ci_runs_and_runs_everything() -> None:
    """The README's test command (every test, slow ones too) is the command .ci/run runs; plain pytest is fast."""
    text = README.read_text(encoding="utf-8")
    commands = set(re.findall(r'&& (python -m pytest[^\n`]*)', text))
    ci = [line.strip() for line in (README.parent / ".ci" / "run").read_text().splitlines()
          if line.strip().startswith("python -m pytest")]
    assert commands == set(ci) and len(ci) == 1, (commands, ci)
    assert '-m "slow or not slow"' in ci[0]
    addopts = re.search(r"^addopts = (.*)$", (README.parent / "pyproject.toml").read_text(), re.M)
    assert addopts is not None and '"-m", "not slow"' in addopts[1]  # the default run leaves the slow tests out


def test_links_between_the_pages_resolve() -> None:
    """Every relative link of the README and docs/ names a file that exists (and a heading of it, if any)."""
    pages = [README, *sorted((README.parent / "docs").glob("*.md"))]
    assert len(pages) >= 8, "the reference pages in docs/ are missing"
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), f"{page.name} links to {target}: no such file"
            if anchor and file.suffix == ".md":
                headings = {
                    re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
                    for h in re.findall(r"^#+ (.*)$", file.read_text(encoding="utf-8"), re.M)
                }
                assert anchor in headings, f"{page.name} links to {target}: no such heading"


def test_readme_is_short() -> None:
    """The README is for a newcomer; reference material lives in docs/."""
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 250


def test_every_public_name_is_on_the_python_page() -> None:
    """docs/python.md lists every name the package and its operations layer export."""
    import revsearch
    import revsearch.operations

    text = (README.parent / "docs" / "python.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)", text))
    missing = sorted((set(revsearch.__all__) | set(revsearch.operations.__all__)) - listed)
    assert not missing, f"add these names to docs/python.md: {missing}"
