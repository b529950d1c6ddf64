"""The README's command-line reference is checked against the real parser (sqlite-utils style):
every documented command and option exists, and every command is documented."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from revsearch.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _cli_block() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start: command line", 1)[1]
    block = section.split("```text", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines() if line.strip().startswith("revsearch ")]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_is_documented_and_every_documented_command_exists() -> None:
    documented = {line.split()[1] for line in _cli_block()}
    assert documented == set(_subparsers())


def test_documented_options_exist() -> None:
    subs = _subparsers()
    for line in _cli_block():
        command = line.split()[1]
        known = {opt for a in subs[command]._actions for opt in a.option_strings}
        for option in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", line):
            assert option in known, f"README documents {option} for `revsearch {command}`, the parser has no such option"
