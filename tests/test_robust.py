"""Hostile files (issue 17): nothing outside the named folders, no damaged numbers, names shown safely.

Each test here failed on the code before the issue was fixed.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from revsearch import DamagedVectorsError, Index, IndexFormatError, OutsideFoldersError, RevsearchError, find_duplicates
from revsearch.cli import main
from revsearch.core.safety import confine, damaged_rows, display_name, to_json

DIM = 16


def _spec(dim: int = DIM) -> dict:
    return {"model": "synthetic", "preprocessing": "none", "dim": dim, "weights": "none", "precision": "float32"}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _index(folder: Path, n: int = 40, seed: int = 0, **kw) -> tuple[Index, np.ndarray]:
    x = _unit(np.random.default_rng(seed).standard_normal((n, DIM)))
    return Index.from_vectors(folder, x, [f"img{i:03d}.jpg" for i in range(n)], _spec(), **kw), x


def _damage(index: Index, row: int, value: float, component: int | None = None) -> None:
    """Damage one row of the committed vectors file in place (a bad copy or sync): ``inf`` or ``nan`` in
    the one component where the row is largest, or the whole row scaled by a finite ``value``."""
    name = index.manifest["shards"][0]["files"]["vectors"]
    arr = np.load(index.folder / name, mmap_mode="r+")
    if np.isfinite(value):
        arr[row, :] *= value
    else:
        arr[row, int(np.argmax(arr[row])) if component is None else component] = value
    arr.flush()
    del arr


# ---------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("bad", [np.inf, np.nan, 3.0])
def test_one_damaged_row_never_hides_a_good_match(tmp_path: Path, bad: float, caplog) -> None:
    index, x = _index(tmp_path / "v")
    q = x[5]
    want = Index.open(index.folder).search_vectors(q, 10)
    damaged = want[3].row  # a legitimate match among the 9 best ...
    _damage(index, damaged, bad, component=int(np.argmax(q)))  # ... damaged on disk: inf scores +inf
    reopened = Index.open(index.folder)
    assert reopened.damaged_rows().tolist() == [damaged]
    with caplog.at_level(logging.WARNING, logger="revsearch.storage.index"):
        got = reopened.search_vectors(q, 9)
    assert len(got) == 9  # was 8 with inf: the damaged row took a place, then was dropped
    assert damaged not in [m.row for m in got]
    assert [m.row for m in got] == [m.row for m in want if m.row != damaged][:9]
    assert all(np.isfinite(m.score) for m in got)
    assert "damaged" in caplog.text


def test_damaged_vectors_are_refused_when_written(tmp_path: Path) -> None:
    x = _unit(np.random.default_rng(1).standard_normal((5, DIM)))
    x[2, 3] = np.nan
    with pytest.raises(DamagedVectorsError, match="row 2"):
        Index.from_vectors(tmp_path / "v", x, [f"{i}.jpg" for i in range(5)], _spec())
    assert not (tmp_path / "v").exists()  # nothing written, not even the folder
    from revsearch.storage import store

    with store.writing(tmp_path / "w") as w:
        for bad in (np.inf, 2.0):
            y = _unit(np.random.default_rng(2).standard_normal((3, DIM)))
            y[1] *= bad
            with pytest.raises(DamagedVectorsError):
                w.write_shard(y, np.zeros(3, store.ROW_DTYPE), ["a", "b", "c"])
            with pytest.raises(DamagedVectorsError):  # streamed blocks too
                w.write_shard(iter([y[:1], y[1:]]), np.zeros(3, store.ROW_DTYPE), ["a", "b", "c"], dim=DIM)
    assert not [p for p in (tmp_path / "w").iterdir() if not p.name.startswith(".revsearch.lock")]


def test_damaged_rows_rules() -> None:
    x = np.zeros((6, 4), np.float32)
    x[0, 0] = 1  # unit
    x[1, 0] = np.inf
    x[2, 1] = np.nan
    x[3, :] = 0.5  # length 1: fine
    x[4, 0] = 1.01  # 1 % off
    # row 5 all zero: a blank image (accepted)
    assert damaged_rows(x).tolist() == [False, True, True, False, True, False]


def test_duplicates_ignore_damaged_rows_and_json_is_json(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(3)
    base = _unit(np.abs(rng.standard_normal((3, DIM))))  # all positive: inf in a row scores +inf with any other
    x = _unit(base[[0, 0, 1, 1, 2, 2]] + 0.001 * rng.standard_normal((6, DIM)))
    index = Index.from_vectors(tmp_path / "v", x, [f"{i}.jpg" for i in range(6)], _spec())
    _damage(index, 4, np.inf)
    report = find_duplicates(tmp_path / "v", 0.9, mode="similar")
    assert sorted(sorted(f.row for f in g.files) for g in report.groups) == [[0, 1], [2, 3]]
    json.loads(report.to_json())
    assert main(["duplicates", str(tmp_path / "v"), "--mode", "similar", "--threshold", "0.9", "--json", "-q"]) == 0
    out = capsys.readouterr().out
    assert "Infinity" not in out and "NaN" not in out
    assert len(json.loads(out)["groups"]) == 2


def test_to_json_never_writes_nan() -> None:
    text = to_json({"a": float("inf"), "b": [np.float32("nan"), 1.5], "c": np.arange(3), "d": Path("x")})
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": [0, 1, 2], "d": "x"}


@pytest.mark.parametrize("command", ["info", "ann", "duplicates"])
def test_every_json_command_prints_json(tmp_path: Path, command: str, capsys) -> None:
    """Each --json command on an index with a damaged row prints strict JSON (no NaN, no Infinity)."""
    index, x = _index(tmp_path / "v", n=30)
    _damage(index, 7, np.inf)
    args = {"info": ["info", str(index.folder), "--json"], "ann": ["ann", str(index.folder), "--info", "--json"],
            "duplicates": ["duplicates", str(index.folder), "--mode", "similar", "--threshold", "0.5", "--json", "-q"]}[command]
    code = main(args)
    text = capsys.readouterr().out
    assert code == 0, text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))


@pytest.mark.slow
def test_search_json_with_a_damaged_row(tmp_path: Path, resnet_random, capsys) -> None:
    from conftest import write_photos

    photos = write_photos(tmp_path / "ds", 6)
    index, _ = Index.build(tmp_path / "ds", tmp_path / "v", resnet_random, progress=False)
    _damage(index, 2, np.inf)
    assert main(["search", str(photos[0]), str(tmp_path / "v"), "-k", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))
    assert len(out["results"]) == 5 and index.paths[2] not in [r["relpath"] for r in out["results"]]


# ---------------------------------------------------------------------------------------- confinement
def test_confine_accepts_inside_and_refuses_outside_with_file_and_line(tmp_path: Path) -> None:
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    assert confine(inside / "a" / "b.jpg", [inside], source="log.csv", line=3) == (inside / "a" / "b.jpg").resolve()
    with pytest.raises(OutsideFoldersError, match=r"log.csv, line 3: .*outside"):
        confine(inside / ".." / "out" / "x.jpg", [inside], source="log.csv", line=3)
    (inside / "link").symlink_to(outside)
    with pytest.raises(OutsideFoldersError, match="leads to"):
        confine(inside / "link" / "x.jpg", [inside], source="m.json")
    assert confine(inside / "link" / "x.jpg", [inside, outside], source="m.json") == (outside / "x.jpg").resolve()


def test_manifest_replaced_by_a_link_outside_is_refused(tmp_path: Path) -> None:
    index, _ = _index(tmp_path / "v")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    m = index.folder / "revsearch.json"
    (elsewhere / "revsearch.json").write_bytes(m.read_bytes())
    m.unlink()
    m.symlink_to(elsewhere / "revsearch.json")
    with pytest.raises(IndexFormatError, match="outside"):
        Index.open(index.folder)


@pytest.mark.parametrize("kind", ["vectors", "paths", "rows"])
def test_shard_file_replaced_by_a_link_outside_is_refused(tmp_path: Path, kind: str) -> None:
    index, _ = _index(tmp_path / "v")
    name = index.manifest["shards"][0]["files"][kind]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    f = index.folder / name
    (elsewhere / name).write_bytes(f.read_bytes())
    f.unlink()
    f.symlink_to(elsewhere / name)
    with pytest.raises(IndexFormatError, match="outside"):
        Index.open(index.folder).paths


def test_shard_with_trailing_bytes_or_a_huge_paths_file_is_damaged(tmp_path: Path) -> None:
    index, _ = _index(tmp_path / "v", n=4)
    files = index.manifest["shards"][0]["files"]
    with open(index.folder / files["vectors"], "ab") as f:
        f.write(b"\0" * 64)
    with pytest.raises(IndexFormatError, match="bytes more"):
        Index.open(index.folder)
    index2, _ = _index(tmp_path / "w", n=4)
    p = index2.folder / index2.manifest["shards"][0]["files"]["paths"]
    with open(p, "ab") as f:
        f.truncate(50 * 2**20)  # sparse: 50 MiB of NUL for 4 paths
    with pytest.raises(IndexFormatError, match="too many"):
        Index.open(index2.folder)


def test_manifest_with_nan_or_huge_size_is_damaged(tmp_path: Path) -> None:
    index, _ = _index(tmp_path / "v", n=4)
    m = index.folder / "revsearch.json"
    data = json.loads(m.read_text())
    text = json.dumps(data).replace('"count": 4', '"count": NaN', 1)
    m.write_text(text)
    with pytest.raises(IndexFormatError, match="not JSON"):
        Index.open(index.folder)


def test_lock_file_replaced_by_a_link_creates_nothing_outside(tmp_path: Path) -> None:
    index, x = _index(tmp_path / "v", n=4)
    lock = index.folder / ".revsearch.lock"
    lock.unlink(missing_ok=True)
    target = tmp_path / "outside" / "planted"
    target.parent.mkdir()
    lock.symlink_to(target)
    from revsearch.retrieval.ann import build_ann

    with pytest.raises(RevsearchError, match="lock"):
        build_ann(index.folder, kind="flat", progress=False)
    assert not target.exists()


# ---------------------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    "name, shown",
    [
        ("x\n/etc/passwd.jpg", "x\\n/etc/passwd.jpg"),
        ("a\rb.jpg", "a\\rb.jpg"),
        ("t\tab.jpg", "t\\tab.jpg"),
        ("\x1b[31mred.jpg", "\\x1b[31mred.jpg"),
        ("del\x7f.jpg", "del\\x7f.jpg"),
        ("c1\x9b.jpg", "c1\\x9b.jpg"),
        ("evil\u202egpj.exe", "evil\\u202egpj.exe"),
        ("plain name.jpg", "plain name.jpg"),
        ("caf\udce9.jpg", "caf\\xe9.jpg"),  # a non-UTF-8 byte kept as a surrogate escape
    ],
)
def test_display_name_escapes_control_characters(name: str, shown: str) -> None:
    assert display_name(name) == shown
    assert display_name(Path(name)) == shown
    out = display_name(name)
    assert "\n" not in out and "\r" not in out and "\x1b" not in out


def test_skip_list_and_errors_print_names_on_one_line(tmp_path: Path, capsys) -> None:
    from revsearch.media.images import SkippedFile

    assert str(SkippedFile(Path("x\n/etc/passwd.jpg"), "unreadable")).count("\n") == 0
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "x\n").mkdir()
    (ds / "x\n" / "etc").mkdir()
    (ds / "x\n" / "etc" / "passwd.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (ds / "a\rb.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    from revsearch.storage.indexing import scan_dataset

    scan = scan_dataset(ds, tmp_path / "v")
    assert any("line break" in s.reason for s in scan.skipped)
    code = main(["search", str(ds / "a\rb.jpg"), str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert code == 1
    assert "\r" not in err and err.count("\n") == 1


def test_report_csv_and_plot_titles_escape_names(tmp_path: Path) -> None:
    from PIL import Image

    from revsearch.duplicates import plot_duplicates

    ds = tmp_path / "ds"
    ds.mkdir()
    names = ["a\x1b[2J.png", "b\tc.png"]
    for n in names:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(ds / n)
    v = _unit(np.ones((2, DIM)))
    Index.from_vectors(tmp_path / "v", v, names, _spec(), dataset_dir=ds)
    report = find_duplicates(tmp_path / "v", 0.9, mode="similar")
    report.write_csv(tmp_path / "r.csv")
    text = (tmp_path / "r.csv").read_text()
    assert "\x1b" not in text and "b\\tc.png" in text and "a\\x1b[2J.png" in text
    figs = plot_duplicates(report)
    titles = [ax.get_title() for ax in figs[0].axes]
    assert all("\x1b" not in t for t in titles) and any("\\x1b" in t for t in titles)


# ---------------------------------------------------------------------------------------- links
def _pbz2(path: Path, obj: object) -> None:
    import bz2
    import pickle

    with bz2.BZ2File(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def test_legacy_vector_file_linked_from_outside_is_not_read(tmp_path: Path) -> None:
    from revsearch.storage.legacy import read_legacy_vectors

    legacy, outside = tmp_path / "legacy", tmp_path / "outside"
    legacy.mkdir()
    outside.mkdir()
    rng = np.random.default_rng(0)
    _pbz2(legacy / "1.pbz2", {"a.jpg": rng.standard_normal(2048).astype(np.float32)})
    _pbz2(outside / "secret.pbz2", {"b.jpg": rng.standard_normal(2048).astype(np.float32)})
    (legacy / "2.pbz2").symlink_to(outside / "secret.pbz2")
    _pbz2(legacy / "3.pbz2", {"c.jpg": np.full(2048, 3e38, np.float32)})  # finite, but no unit vector from it
    got = read_legacy_vectors(legacy, progress=False)
    assert got.names == ["a.jpg"]
    reasons = {p.name: r for p, r in got.skipped}
    assert "outside the folders named" in reasons["2.pbz2"] and "unit length" in reasons["3.pbz2"]


def test_index_follows_only_links_inside_by_default_and_records_the_choice(tmp_path: Path) -> None:
    from revsearch.models.embedding import get_embedder

    ds, outside = tmp_path / "ds", tmp_path / "outside"
    ds.mkdir()
    outside.mkdir()
    (outside / "x.jpg").write_bytes(b"not read")
    (ds / "out").symlink_to(outside, target_is_directory=True)
    (ds / "file.jpg").symlink_to(outside / "x.jpg")
    emb = get_embedder("resnet50", weights=None)
    index, report = Index.update_folder(ds, tmp_path / "v", emb, progress=False)
    assert len(index) == 0 and index.manifest["follow_links"] == "inside"
    assert sorted(s.path.name for s in report.skipped) == ["file.jpg", "out"]
    assert all("outside the dataset folder" in s.reason for s in report.skipped)
    from revsearch.storage.indexing import scan_dataset

    assert [r for r in scan_dataset(ds, follow_links="all").rel] == ["file.jpg", "out/x.jpg"]


# ---------------------------------------------------------------------------------------- undo
def _moved(tmp_path: Path) -> dict:
    from revsearch.duplicates import move_duplicates

    ds = tmp_path / "ds"
    ds.mkdir()
    names = ["a.jpg", "b.jpg", "caf\udce9.jpg"]  # the last one is not UTF-8 on disk
    for i, n in enumerate(names):
        (ds / n).write_bytes(bytes([i]) * 100)
    v = _unit(np.ones((3, DIM)) + 1e-4 * np.random.default_rng(0).standard_normal((3, DIM)))
    Index.from_vectors(tmp_path / "v", v, names, _spec(), dataset_dir=ds)
    before = {p.name: p.read_bytes() for p in ds.iterdir()}
    report = find_duplicates(tmp_path / "v", 0.9, keep="first", mode="similar")
    moved = move_duplicates(report, tmp_path / "dups", update_index=False)
    assert len(moved.moved) == 2
    return {"ds": ds, "v": tmp_path / "v", "log": moved.log, "before": before, "dest": tmp_path / "dups"}


def test_undo_twice_is_harmless_and_names_that_are_not_utf8_come_back(tmp_path: Path, capsys) -> None:
    m = _moved(tmp_path)
    assert main(["duplicates", str(m["v"]), "--undo", str(m["log"])]) == 0
    assert {p.name: p.read_bytes() for p in m["ds"].iterdir()} == m["before"]
    assert main(["duplicates", str(m["v"]), "--undo", str(m["log"])]) == 0  # again: nothing to do, success
    assert "2 already in place" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in m["ds"].iterdir()} == m["before"]


def test_undo_needs_the_folder_named_not_the_log(tmp_path: Path, capsys) -> None:
    m = _moved(tmp_path)
    assert main(["duplicates", "--undo", str(m["log"])]) == 1
    assert "VECTOR_DIR --undo LOG" in capsys.readouterr().err
    assert len(list(m["ds"].iterdir())) == 1  # nothing was moved back


@pytest.mark.parametrize("edit", ["source", "destination", "both", "dotdot", "link"])
def test_a_hand_edited_log_never_steers_outside_the_named_folders(tmp_path: Path, edit: str) -> None:
    import csv

    from revsearch.duplicates import undo_moves

    m = _moved(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.jpg"
    victim.write_bytes(b"the user's file elsewhere")
    planted = m["dest"] / "planted.jpg"
    planted.write_bytes(b"planted")
    import hashlib

    h_victim = hashlib.blake2b(victim.read_bytes(), digest_size=16).hexdigest()
    h_planted = hashlib.blake2b(planted.read_bytes(), digest_size=16).hexdigest()
    if edit == "link":  # a folder inside the dataset folder replaced by a link leading out
        (m["ds"] / "sub").symlink_to(outside, target_is_directory=True)
    src = {  # (source, destination, hash) of the added line
        "source": (outside / "new.jpg", planted, h_planted),  # would create a file outside both folders
        "destination": (m["ds"] / "victim.jpg", victim, h_victim),  # would pull a file from outside into the dataset
        "both": (outside / "x.jpg", victim, h_victim),
        "dotdot": (Path(str(m["ds"]) + "/../outside/new.jpg"), planted, h_planted),
        "link": (m["ds"] / "sub" / "new.jpg", planted, h_planted),  # through a link leading out
    }[edit]
    with open(m["log"], "a", newline="", encoding="utf-8", errors="surrogateescape") as f:
        csv.writer(f).writerow([str(src[0]), str(src[1]), 1, src[2], 0, 1, "k", "1.0", "", str(m["ds"])])
    tree_before = sorted(p.as_posix() for p in tmp_path.rglob("*"))
    with pytest.raises(OutsideFoldersError, match=r"line \d+"):
        undo_moves(m["log"], index=m["v"])
    assert sorted(p.as_posix() for p in tmp_path.rglob("*")) == tree_before  # nothing moved, nothing created
    assert victim.read_bytes() == b"the user's file elsewhere" and planted.read_bytes() == b"planted"
    code = main(["duplicates", str(m["v"]), "--undo", str(m["log"])])
    assert code == 1 and sorted(p.as_posix() for p in tmp_path.rglob("*")) == tree_before


def test_two_undos_of_one_log_at_once_the_second_is_refused(tmp_path: Path) -> None:
    import fcntl

    from revsearch.duplicates import undo_moves

    m = _moved(tmp_path)
    with open(m["log"], "rb") as held:  # another process is undoing this log
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(RevsearchError, match="another process"):
            undo_moves(m["log"], index=m["v"])
        assert len(list(m["ds"].iterdir())) == 1
    assert not undo_moves(m["log"], index=m["v"], update_index=False).skipped
    assert len(list(m["ds"].iterdir())) == 3


def test_notebook_log_lines_escape_names(capsys) -> None:
    from revsearch.notebook import notebook_logging

    log = notebook_logging()
    logging.getLogger("revsearch.test").warning("skipped %s: unreadable", "a\x1b[2Jb\r.jpg")
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "a\\x1b[2Jb\\r.jpg" in out
    for h in list(log.handlers):
        log.removeHandler(h)


def test_notebook_never_deletes_vector_files_a_link_leads_to(tmp_path: Path) -> None:
    from revsearch.notebook import notebook_settings, prepare_index

    settings = notebook_settings(storage="VM disk", download=False, vectors="use the original vectors",
                                 work_dir=tmp_path / "work", env={"REVSEARCH_NB_OFFLINE": "1"}, devices=[])
    settings.dataset_dir.mkdir(parents=True)
    outside = tmp_path / "my-vectors"
    outside.mkdir()
    _pbz2(outside / "1.pbz2", {"a.jpg": np.random.default_rng(0).standard_normal(2048).astype(np.float32)})
    settings.legacy_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.legacy_dir.symlink_to(outside, target_is_directory=True)
    index, _ = prepare_index(settings, progress=False, estimate=False)
    assert index.paths == ["a.jpg"]
    assert (outside / "1.pbz2").is_file()  # the user's files, reached through a link, are not deleted


@pytest.mark.slow
def test_indexing_again_repairs_damaged_rows(tmp_path: Path, resnet_random) -> None:
    from conftest import write_photos

    write_photos(tmp_path / "ds", 5)
    index, _ = Index.build(tmp_path / "ds", tmp_path / "v", resnet_random, progress=False)
    good, name = np.array(index.vectors[1]), index.paths[1]
    _damage(index, 1, np.nan)
    with pytest.raises(RevsearchError, match="damaged"):
        from revsearch.retrieval.ann import build_ann

        build_ann(tmp_path / "v", kind="hnsw", progress=False)  # never built on damaged vectors
    index, report = Index.build(tmp_path / "ds", tmp_path / "v", resnet_random, progress=False)
    assert report.updated == [name] and report.embedded == 1  # only the damaged row is embedded again
    assert index.damaged_rows().size == 0 and len(index) == 5
    np.testing.assert_allclose(index.vectors[index.paths.index(name)], good, atol=1e-4)


def test_approximate_search_skips_a_damaged_row_without_reading_every_vector(tmp_path: Path, caplog) -> None:
    pytest.importorskip("faiss")
    from revsearch.retrieval.ann import build_ann

    index, x = _index(tmp_path / "v", n=300)
    build_ann(index.folder, kind="hnsw", target_recall=None, progress=False)
    q = x[7]
    want = Index.open(index.folder).search_vectors(q, 10)
    damaged = want[2].row
    _damage(index, damaged, np.inf, component=int(np.argmax(q)))
    with caplog.at_level(logging.WARNING, logger="revsearch.storage.index"):
        got = Index.open(index.folder).search_vectors(q, 9)
    assert len(got) == 9 and damaged not in [m.row for m in got] and all(np.isfinite(m.score) for m in got)
    assert "damaged" in caplog.text


def test_undo_never_creates_a_dataset_folder_that_vanished(tmp_path: Path) -> None:
    import shutil

    from revsearch.duplicates import undo_moves

    m = _moved(tmp_path)
    shutil.rmtree(m["ds"])  # an unmounted drive
    with pytest.raises(RevsearchError, match="mounted"):
        undo_moves(m["log"], dataset_dir=m["ds"])
    assert not m["ds"].exists()


def test_evaluate_json_is_json_with_a_damaged_row(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(4)
    names = [f"{c:04d}_{i:06d}.jpg" for c in (1, 2, 3) for i in range(c * 10, c * 10 + 4)]
    x = _unit(rng.standard_normal((len(names), DIM)))
    (tmp_path / "data").mkdir()
    index = Index.from_vectors(tmp_path / "v", x, names, _spec(), dataset_dir=tmp_path / "data")
    _damage(index, 3, np.inf)
    code = main(["evaluate", str(tmp_path / "data"), str(index.folder), "-k", "2", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))


def test_index_skip_list_shows_a_name_with_a_line_break_on_one_line(tmp_path: Path, capsys) -> None:
    ds = tmp_path / "ds"
    (ds / "x\n" / "etc").mkdir(parents=True)
    (ds / "x\n" / "etc" / "passwd.jpg").write_bytes(b"\xff\xd8\xff\xe0 whatever")
    assert main(["index", str(ds), str(tmp_path / "v"), "--weights", "none", "-q"]) == 0
    err = capsys.readouterr().err
    assert not any(line.startswith("/etc/passwd.jpg") for line in err.splitlines())
    assert "x\\n/etc/passwd.jpg: file name contains a line break" in err
