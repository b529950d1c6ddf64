"""Tests for the command line: ``python -m revsearch`` in subprocesses, and ``cli.main`` in-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_photos

from revsearch import cli
from revsearch import Index

REPO = Path(__file__).resolve().parents[1]
COMMANDS = ("index", "search", "import-legacy", "info")


def run_cli(*args: str | Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "revsearch", *map(str, args)], capture_output=True, text=True, env=env, timeout=300
    )


def assert_one_error_line(rc: int, out: str, err: str, *, contains: str = "") -> str:
    assert rc != 0
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("revsearch: error: ")
    assert contains in lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """``revsearch index`` run once, in a subprocess, on 8 photos, a broken .jpg and a text file."""
    base = tmp_path_factory.mktemp("cli")
    ds = base / "photos"
    write_photos(ds, 8)
    (ds / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (ds / "notes.txt").write_text("not an image")
    proc = run_cli("index", ds, base / "vectors", "--model", "resnet50", "--weights", "none")
    return ds, base / "vectors", proc


def test_index_prints_a_summary_and_each_skipped_file(indexed) -> None:  # type: ignore[no-untyped-def]
    ds, vec, proc = indexed
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "8 vectors (resnet50, 2048-d)" in proc.stdout
    assert "8 added, 0 updated, 0 removed, 0 unchanged, 1 skipped" in proc.stdout
    skipped = [line for line in proc.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 1, proc.stderr
    path, reason = skipped[0][len("skipped ") :].split(": ", 1)
    assert path == str(ds / "broken.jpg")
    assert any(word in reason for word in ("truncated", "not an image", "damaged", "could not be decoded")), reason
    assert "notes.txt" not in proc.stdout + proc.stderr
    idx = Index.open(vec)
    assert len(idx) == 8 and idx.spec["weights"] == "none" and "broken.jpg" not in idx.paths


def test_search_json_uses_the_recorded_model(indexed) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = indexed
    proc = run_cli("search", ds / "img0005.jpg", vec, "-k", "3", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    assert data["model"] == "resnet50" and data["k"] == 3
    assert len(data["results"]) == 3
    assert [r["rank"] for r in data["results"]] == [1, 2, 3]
    best = data["results"][0]
    # found itself: the query was embedded with the index's own (seeded random) weights
    # (the default expansion scores the expanded query against the augmented vector: close to, not exactly, 1)
    assert best["relpath"] == "img0005.jpg" and best["score"] == pytest.approx(1.0, abs=1e-3)
    assert all(Path(r["path"]).is_file() for r in data["results"])
    scores = [r["score"] for r in data["results"]]
    assert scores == sorted(scores, reverse=True)


def test_help_lists_the_commands() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in COMMANDS:
        assert command in proc.stdout
    assert "usage: revsearch" in proc.stdout


@pytest.mark.parametrize(
    "case",
    ["missing index", "unreadable query", "missing dataset dir", "missing legacy dir"],
)
def test_errors_are_one_line_in_a_subprocess(case: str, indexed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = indexed
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    args, contains = {
        "missing index": (["search", ds / "img0001.jpg", tmp_path / "novec"], "no revsearch index"),
        "unreadable query": (["search", bad, vec], "bad.jpg"),
        "missing dataset dir": (
            ["index", tmp_path / "nodata", tmp_path / "v", "--weights", "none"],
            "does not exist",
        ),
        "missing legacy dir": (["import-legacy", tmp_path / "nolegacy", tmp_path / "v"], "does not exist"),
    }[case]
    proc = run_cli(*args)
    assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, contains=contains)
    assert proc.returncode == cli.EXIT_ERROR
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize("k", ["0", "-2", "three"])
def test_bad_k_is_a_usage_error(k: str, indexed) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = indexed
    proc = run_cli("search", ds / "img0001.jpg", vec, "-k", k)
    assert proc.returncode == cli.EXIT_USAGE
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("usage: revsearch")
    assert lines[-1].startswith("revsearch") and ": error: " in lines[-1] and "-k" in lines[-1]


# ---------------------------------------------------------------- in-process (fast)


def test_search_text_output(indexed, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = indexed
    assert cli.main(["search", str(ds / "img0002.jpg"), str(vec), "-k", "4"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 4
    rank, score, path = out[0].split(maxsplit=2)
    assert rank == "1" and float(score) == pytest.approx(1.0, abs=1e-3) and Path(path).name == "img0002.jpg"


def test_search_out_writes_a_png(indexed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = indexed
    grid = tmp_path / "grid.png"
    assert cli.main(["search", str(ds / "img0002.jpg"), str(vec), "-k", "3", "--out", str(grid), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["figure"] == str(grid) and len(data["results"]) == 3
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_search_with_dataset_dir_override(indexed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = indexed
    moved = tmp_path / "moved"
    shutil.copytree(ds, moved)
    assert cli.main(["search", str(moved / "img0004.jpg"), str(vec), "-k", "2", "--json", "--dataset-dir", str(moved)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["results"][0]["path"] == str(moved / "img0004.jpg")


def test_info(indexed, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = indexed
    assert cli.main(["info", str(vec), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vectors"] == 8 and info["complete"] is True
    assert info["model"] == "resnet50" and info["dim"] == 2048 and info["weights"] == "none"
    assert Path(info["dataset_dir"]) == ds.resolve()
    assert cli.main(["info", str(vec)]) == 0
    text = capsys.readouterr().out
    assert "vectors: 8" in text and "model: resnet50" in text


def test_index_again_in_process_is_incremental(indexed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    ds0, vec0, _ = indexed
    ds, vec = tmp_path / "photos", tmp_path / "vectors"
    shutil.copytree(ds0, ds)
    shutil.copytree(vec0, vec)
    write_photos(ds, 1, start=60)
    (ds / "img0000.jpg").unlink()
    # no --model/--weights: an existing index keeps its own
    assert cli.main(["index", str(ds), str(vec), "-q"]) == 0
    out, err = capsys.readouterr()
    assert "1 added, 0 updated, 1 removed, 7 unchanged, 1 skipped" in out
    assert err.strip().startswith("skipped ") and "broken.jpg" in err
    assert len(err.strip().splitlines()) == 1
    idx = Index.open(vec)
    assert "img0060.jpg" in idx.paths and "img0000.jpg" not in idx.paths and len(idx) == 8


def test_index_with_another_model_is_refused(indexed, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = indexed
    before = (vec / "revsearch.json").read_bytes()
    rc = cli.main(["index", str(ds), str(vec), "--model", "resnet50-seed", "--weights", "none", "-q"])
    out, err = capsys.readouterr()
    assert_one_error_line(rc, out, err, contains="resnet50-seed")
    assert (vec / "revsearch.json").read_bytes() == before


@pytest.mark.parametrize("case", ["missing index", "unreadable query", "missing dataset dir", "info of nothing", "bad model"])
def test_errors_are_one_line_in_process(case: str, indexed, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = indexed
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    argv, contains = {
        "missing index": (["search", str(ds / "img0001.jpg"), str(tmp_path / "novec")], "no revsearch index"),
        "unreadable query": (["search", str(empty), str(vec)], "empty"),
        "missing dataset dir": (["index", str(tmp_path / "nodata"), str(tmp_path / "v"), "--weights", "none"], "nodata"),
        "info of nothing": (["info", str(tmp_path)], "no revsearch index"),
        "bad model": (["index", str(ds), str(tmp_path / "v"), "--model", "vgg99", "--weights", "none"], "unknown model"),
    }[case]
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc == cli.EXIT_ERROR
    assert_one_error_line(rc, out, err, contains=contains)
    assert out == ""


def test_debug_shows_the_exception(tmp_path: Path) -> None:
    from revsearch.errors import IndexNotFoundError

    with pytest.raises(IndexNotFoundError):
        cli.main(["--debug", "info", str(tmp_path)])


def test_bad_k_in_process(indexed, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    ds, vec, _ = indexed
    with pytest.raises(SystemExit) as e:
        cli.main(["search", str(ds / "img0001.jpg"), str(vec), "-k", "0"])
    assert e.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "-k must be at least 1" in err and "Traceback" not in err


def test_index_again_naming_the_model_keeps_the_recorded_preprocessing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`index --model resnet50` on an index of the same model built with other preprocessing
    (pad + average pooling) updates it with that preprocessing instead of refusing it."""
    from revsearch.embedding import get_embedder

    ds = tmp_path / "ds"
    write_photos(ds, 4)
    Index.build(ds, tmp_path / "vec", get_embedder("resnet50", weights=None, fit="pad", pooling="avg"), progress=False)
    write_photos(ds, 2, start=4)
    code = cli.main(["index", str(ds), str(tmp_path / "vec"), "--model", "resnet50", "--weights", "none", "-q"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "2 added" in out.out and "4 unchanged" in out.out
    index = Index.open(tmp_path / "vec")
    assert len(index) == 6 and "pad:" in index.spec["preprocessing"]
