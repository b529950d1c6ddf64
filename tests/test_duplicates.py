"""Near-duplicate groups (revsearch.duplicates): brute-force equality, --against, keep rules,
moves and undo byte for byte, the index kept in step, errors, CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from revsearch.cli import main
from revsearch.duplicates import (
    CALIBRATIONS,
    connected_components,
    default_threshold,
    duplicate_edges,
    find_duplicates,
    move_duplicates,
    plot_duplicates,
    undo_moves,
)
from revsearch.models.embedding import Embedder
from revsearch.core.errors import IndexNotFoundError, ModelMismatchError, OptionalDependencyError, RevsearchError
from revsearch import Index

from conftest import make_photo

DIM = 32


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, seed: int, dim: int = DIM, planted: int = 0, noise: float = 0.15) -> tuple[np.ndarray, list[list[int]]]:
    """Clustered unit vectors; ``planted`` groups of 3 close copies (rows returned)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, dim))
    x = centres[rng.integers(0, 8, n)] + rng.standard_normal((n, dim)) * 0.9
    groups = []
    rows = rng.permutation(n)[: planted * 3].reshape(planted, 3) if planted else np.zeros((0, 3), int)
    for g in rows:
        for r in g[1:]:
            x[r] = x[g[0]] + rng.standard_normal(dim) * noise * np.linalg.norm(x[g[0]]) / np.sqrt(dim)
        groups.append(sorted(int(r) for r in g))
    return unit(x), groups


def brute_edges(x: np.ndarray, t: float, k: int, y: np.ndarray | None = None) -> set[tuple[int, int]]:
    """Each vector's k best neighbours (ties to the lower row) scoring >= t, in float64."""
    if y is None:
        s = x.astype(np.float64) @ x.T.astype(np.float64)
        np.fill_diagonal(s, -np.inf)
        out = set()
        for i in range(len(x)):
            for j in np.lexsort((np.arange(len(x)), -s[i]))[:k]:
                if s[i, j] >= t:
                    out.add((i, int(j)))
        return out
    n = len(x)
    s = x.astype(np.float64) @ y.T.astype(np.float64)
    out = set()
    for i in range(n):
        for j in np.lexsort((np.arange(len(y)), -s[i]))[:k]:
            if s[i, j] >= t:
                out.add((i, n + int(j)))
    for j in range(len(y)):
        for i in np.lexsort((np.arange(n), -s[:, j]))[:k]:
            if s[i, j] >= t:
                out.add((n + j, int(i)))
    return out


def brute_groups(n: int, edges: set[tuple[int, int]]) -> set[frozenset[int]]:
    adj: dict[int, set[int]] = {}
    for a, b in edges:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    seen: set[int] = set()
    groups = set()
    for start in adj:
        if start in seen:
            continue
        comp, stack = set(), [start]
        while stack:
            u = stack.pop()
            if u not in comp:
                comp.add(u)
                stack.extend(adj[u] - comp)
        seen |= comp
        groups.add(frozenset(comp))
    return groups


# ---------------------------------------------------------------------------- the graph


@pytest.mark.parametrize("k", [1, 3, 16])
@pytest.mark.parametrize("threshold", [0.5, 0.8, 0.95])
def test_exact_edges_equal_brute_force(k: int, threshold: float) -> None:
    x, _ = clustered(700, seed=k, planted=30)
    expected = brute_edges(x, threshold, k)
    # several shards and small blocks: blocks straddle shards and the diagonal
    src, dst, scores = duplicate_edges([x[:250], x[250:251], x[251:]], threshold, k=k, block_rows=97)
    assert set(zip(src.tolist(), dst.tolist())) == expected
    assert len(src) == len(expected)  # no pair twice
    assert np.allclose(scores, np.einsum("ij,ij->i", x[src], x[dst]), atol=1e-5)
    assert (scores >= threshold).all()


def test_ties_go_to_the_lower_row_like_brute_force() -> None:
    base, _ = clustered(5, seed=3)
    x = np.repeat(base[:1], 6, axis=0)  # six identical vectors: every score ties
    x = np.concatenate([x, base[1:]])
    src, dst, _ = duplicate_edges(x, 0.99, k=2, block_rows=4)
    assert set(zip(src.tolist(), dst.tolist())) == brute_edges(x, 0.99, 2)
    assert sorted(dst[src == 5].tolist()) == [0, 1]


def test_groups_equal_brute_force_components(tmp_path: Path) -> None:
    x, planted = clustered(600, seed=7, planted=25)
    t, k = 0.9, 4
    index = Index.from_vectors(tmp_path / "v", x, [f"f{i:04d}.jpg" for i in range(len(x))], _spec())
    report = find_duplicates(index, t, k=k, keep="first", mode="similar")
    got = {frozenset(f.row for f in g.files) for g in report.groups}
    expected = brute_groups(len(x), brute_edges(x, t, k))
    assert got == expected
    assert all(any(set(g) <= s for s in got) for g in planted)  # every planted group found
    # groups list every pairwise score, exactly
    g = report.groups[0]
    rows = [f.row for f in g.files]
    for i, j, s in g.pairs:
        assert s == pytest.approx(float(x[rows[i]] @ x[rows[j]]), abs=1e-5)
    assert len(g.pairs) == len(g) * (len(g) - 1) // 2
    assert report.method == "exact"


def test_approximate_method_finds_planted_pairs_with_exact_scores() -> None:
    pytest.importorskip("faiss")
    x, planted = clustered(4000, seed=11, dim=64, planted=150, noise=0.2)
    info: dict = {}
    src, dst, scores = duplicate_edges(x, 0.9, k=8, method="approximate", info=info)
    assert info["method"] == "approximate" and info["nlist"] >= 2 and info["nprobe"] == 3
    assert info["pairs_scored"] < len(x) ** 2 / 2  # not every pair: cells
    labels = connected_components(len(x), src, dst)
    found = sum(labels[g[0]] == labels[g[1]] and labels[g[0]] == labels[g[2]] for g in planted)
    assert found / len(planted) >= 0.95
    assert np.allclose(scores, np.einsum("ij,ij->i", x[src], x[dst]), atol=1e-5)  # scored exactly
    assert (scores >= 0.9).all() and (src != dst).all()
    per_src = np.bincount(src, minlength=len(x))
    assert per_src.max() <= 8
    exact = brute_edges(x, 0.9, 8)
    assert set(zip(src.tolist(), dst.tolist())) <= exact | {
        (a, b) for a, b in zip(*np.nonzero(x @ x.T >= 0.9)) if a != b
    }
    assert len(exact - set(zip(src.tolist(), dst.tolist()))) <= 0.05 * len(exact)  # recall of the exact graph
    # deterministic for a seed; shards read in place give the same edges as one array
    again = duplicate_edges([x[:1500], x[1500:]], 0.9, k=8, method="approximate")
    assert all(np.array_equal(u, v) for u, v in zip((src, dst, scores), again))


def test_approximate_method_never_pairs_damaged_vectors() -> None:
    pytest.importorskip("faiss")
    x, _ = clustered(3000, seed=12, dim=64, planted=50)
    x[10] = np.nan
    x[11] = x[12] * 3.0  # too long: a damaged row, not a unit vector
    x[13] = np.inf
    info: dict = {}
    src, dst, scores = duplicate_edges(x, 0.5, k=4, method="approximate", info=info)
    assert info["damaged"] == 3
    bad = {10, 11, 13}
    assert not (set(src.tolist()) | set(dst.tolist())) & bad
    assert np.isfinite(scores).all() and (scores <= 1.01).all()
    # and across two collections
    y = x[:300].copy()
    src, dst, _ = duplicate_edges(x[:300], 0.5, against=y, k=4, method="approximate")
    assert len(src) and not (set(src.tolist()) | set(dst.tolist())) & {10, 11, 13, 310, 311, 313}


def test_without_faiss_auto_is_exact_with_a_warning_and_approximate_is_refused(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import revsearch.duplicates as dup

    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # as if FAISS were not installed
    monkeypatch.setattr(dup.candidates, "EXACT_MAX_VECTORS", 100)
    x, _ = clustered(300, seed=13, planted=10)
    info: dict = {}
    with caplog.at_level(logging.WARNING, logger="revsearch.duplicates.candidates"):
        src, dst, _ = duplicate_edges(x, 0.9, k=3, info=info)
    assert info["method"] == "exact" and "FAISS" in info["fallback"]
    assert "pip install revsearch[ann]" in caplog.text
    assert set(zip(src.tolist(), dst.tolist())) == brute_edges(x, 0.9, 3)
    with pytest.raises(OptionalDependencyError, match=r"pip install revsearch\[ann\]"):
        duplicate_edges(x, 0.9, k=3, method="approximate")


def test_connected_components_match_union_find() -> None:
    rng = np.random.default_rng(0)
    n = 500
    a, b = rng.integers(0, n, 300), rng.integers(0, n, 300)
    labels = connected_components(n, a, b)
    parent = list(range(n))

    def find(u: int) -> int:
        while parent[u] != u:
            u = parent[u]
        return u

    for u, v in zip(a.tolist(), b.tolist()):
        parent[find(u)] = find(v)
    for u in range(n):
        for v in range(0, n, 37):
            assert (labels[u] == labels[v]) == (find(u) == find(v))
    assert all(labels[u] <= u for u in range(n))
    assert connected_components(0, np.zeros(0, int), np.zeros(0, int)).shape == (0,)


# ---------------------------------------------------------------------------- --against


def test_against_pairs_only_across_and_equals_brute_force(tmp_path: Path) -> None:
    x, _ = clustered(300, seed=21, planted=10)
    y = x[:120].copy()
    y[:40] = unit(y[:40] + np.random.default_rng(1).standard_normal((40, DIM)) * 0.02)  # copies of x[:40]
    y[40:] = clustered(80, seed=22)[0]
    a = Index.from_vectors(tmp_path / "a", x, [f"a{i}.jpg" for i in range(len(x))], _spec())
    b = Index.from_vectors(tmp_path / "b", y, [f"b{i}.jpg" for i in range(len(y))], _spec())
    report = find_duplicates(a, 0.9, against=b, k=3, mode="similar")
    for g in report.groups:
        colls = {f.collection for f in g.files}
        assert colls == {"index", "against"}  # every group spans both
    src, dst, _ = duplicate_edges(x, 0.9, against=y, k=3)
    assert set(zip(src.tolist(), dst.tolist())) == brute_edges(x, 0.9, 3, y)
    assert all((s < len(x)) != (d < len(x)) for s, d in zip(src, dst))
    # the planted pairs inside x alone are not reported
    alone = find_duplicates(a, 0.9, k=3, mode="similar")
    assert len(alone.groups) > 0
    assert {frozenset(f.row for f in g.files if f.collection == "index") for g in report.groups} != {
        frozenset(f.row for f in g.files) for g in alone.groups
    }
    # approximate method: also only across
    src2, dst2, _ = duplicate_edges(x, 0.9, against=y, k=3, method="approximate")
    assert len(src2) and all((s < len(x)) != (d < len(x)) for s, d in zip(src2, dst2))


def test_against_another_model_is_refused(tmp_path: Path) -> None:
    x, _ = clustered(20, seed=1)
    a = Index.from_vectors(tmp_path / "a", x, [f"a{i}.jpg" for i in range(20)], _spec())
    other = dict(_spec(), model="mobilenet")
    b = Index.from_vectors(tmp_path / "b", x, [f"b{i}.jpg" for i in range(20)], other)
    with pytest.raises(ModelMismatchError):
        find_duplicates(a, 0.9, against=b, mode="similar")


# ---------------------------------------------------------------------------- files: keep, move, undo


def _spec(dim: int = DIM) -> dict:
    """ResNet50 (random weights) for 2048-d vectors (the index can be updated), else a synthetic spec."""
    if dim == 2048:
        return Embedder("resnet50", weights=None).spec
    return {"model": "synthetic", "preprocessing": "none", "dim": dim, "weights": "none", "precision": "float32"}


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture()
def collection(tmp_path: Path) -> dict:
    """A dataset of real image files with planted duplicate vectors: groups {a, b, c} and {d, e}."""
    ds = tmp_path / "photos"
    (ds / "sub").mkdir(parents=True)
    files = {
        "a.jpg": (make_photo(1, (80, 60)), 1_000_000_000),
        "sub/b.jpg": (make_photo(1, (160, 120)), 1_000_000_500),  # most pixels
        "c.png": (make_photo(1, (80, 60)), 999_999_000),  # oldest; a PNG: more bytes than a.jpg
        "d.jpg": (make_photo(2, (100, 100)), 1_000_000_100),
        "sub/e.jpg": (make_photo(2, (100, 100)), 1_000_000_900),  # newest
        "f.jpg": (make_photo(3), 1_000_000_000),
        "g.jpg": (make_photo(4), 1_000_000_000),
    }
    for rel, (arr, mtime) in files.items():
        p = ds / rel
        Image.fromarray(arr).save(p)
        os.utime(p, (mtime, mtime))
    rel = sorted(files)
    rng = np.random.default_rng(5)
    base = unit(rng.standard_normal((4, 2048)))
    which = {"a.jpg": 0, "sub/b.jpg": 0, "c.png": 0, "d.jpg": 1, "sub/e.jpg": 1, "f.jpg": 2, "g.jpg": 3}
    x = unit(base[[which[r] for r in rel]] + rng.standard_normal((len(rel), 2048)) * 0.0005)
    vdir = tmp_path / "vectors"
    Index.from_vectors(vdir, x, rel, _spec(2048), dataset_dir=ds)
    return {"ds": ds, "vdir": vdir, "rel": rel, "x": x}


@pytest.mark.parametrize(
    "rule, kept",
    [("largest", ["sub/b.jpg", "d.jpg"]), ("oldest", ["c.png", "d.jpg"]), ("newest", ["sub/b.jpg", "sub/e.jpg"]),
     ("first", ["a.jpg", "d.jpg"])],
)
def test_keep_rules(collection: dict, rule: str, kept: list[str]) -> None:
    report = find_duplicates(collection["vdir"], 0.9, keep=rule, mode="similar")
    assert sorted(g.keep.relpath for g in report.groups) == sorted(kept)
    assert [len(g) for g in report.groups] == [3, 2]
    for g in report.groups:
        assert g.files[0].score == pytest.approx(1.0, abs=1e-5)
        assert all(f.score >= 0.9 for f in g.files)
        assert [f.score for f in g.duplicates] == sorted((f.score for f in g.duplicates), reverse=True)


def test_keep_largest_breaks_pixel_ties_by_file_size(collection: dict) -> None:
    ds = collection["ds"]
    # d.jpg and sub/e.jpg have the same pixels: make e's file larger
    Image.fromarray(make_photo(2, (100, 100))).save(ds / "sub/e.jpg", quality=100)
    Image.fromarray(make_photo(2, (100, 100))).save(ds / "d.jpg", quality=40)
    report = find_duplicates(collection["vdir"], 0.9, keep="largest", mode="similar")
    assert report.groups[1].keep.relpath == "sub/e.jpg"


def _tree(root: Path) -> dict[str, tuple[str, int]]:
    return {
        p.relative_to(root).as_posix(): (_digest(p), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_move_then_undo_restores_every_file_byte_for_byte(collection: dict, tmp_path: Path) -> None:
    ds, vdir = collection["ds"], collection["vdir"]
    before = _tree(ds)
    report = find_duplicates(vdir, 0.9, keep="largest", mode="similar")
    dest = tmp_path / "dups"
    moved = move_duplicates(report, dest)
    assert sorted(Path(a).relative_to(ds.resolve()).as_posix() for a, _ in moved.moved) == ["a.jpg", "c.png", "sub/e.jpg"]
    for src, target in moved.moved:
        assert not src.exists()
        rel = src.relative_to(ds.resolve()).as_posix()
        assert target == dest.resolve() / rel  # relative paths kept
        assert _digest(target) == before[rel][0]
    # the log names every move
    with open(moved.log, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["source"]).name for r in rows) == ["a.jpg", "c.png", "e.jpg"]
    # the index no longer holds the moved files
    index = Index.open(vdir)
    assert moved.index_updated
    assert sorted(index.paths) == ["d.jpg", "f.jpg", "g.jpg", "sub/b.jpg"]
    assert find_duplicates(index, 0.9, mode="similar").groups == []
    # undo: every file back, same bytes, same mtime
    undone = undo_moves(moved.log, index=vdir, update_index=False)
    assert len(undone.restored) == 3 and not undone.skipped
    assert _tree(ds) == before
    assert [p for p in dest.rglob("*") if p.is_file()] == [moved.log]  # only the log is left there
    # a last log line cut short by a crash names a move that never happened
    with open(moved.log, "a") as f:
        f.write("/some/where/x.jpg,/else")
    # a second undo changes nothing, and succeeds: everything is in place
    again = undo_moves(moved.log, index=vdir, update_index=False)
    assert not again.restored and not again.skipped and len(again.already) == 3
    assert _tree(ds) == before


def test_move_never_overwrites_and_undo_leaves_changed_files(collection: dict, tmp_path: Path) -> None:
    dest = tmp_path / "dups"
    dest.mkdir()
    (dest / "a.jpg").write_bytes(b"someone else's file")
    report = find_duplicates(collection["vdir"], 0.9, keep="largest", mode="similar")
    moved = move_duplicates(report, dest, update_index=False)
    assert (dest / "a.jpg").read_bytes() == b"someone else's file"
    assert (dest / "a (2).jpg").is_file()
    # a moved file edited afterwards is not put back
    (dest / "c.png").write_bytes(b"edited")
    undone = undo_moves(moved.log, dataset_dir=collection["ds"], update_index=False)
    assert len(undone.restored) == 2
    assert any("changed" in reason for _, reason in undone.skipped)
    assert not (collection["ds"] / "c.png").exists() and (dest / "c.png").read_bytes() == b"edited"


def test_move_into_the_dataset_folder_is_refused(collection: dict, tmp_path: Path) -> None:
    before = _tree(collection["ds"])
    report = find_duplicates(collection["vdir"], 0.9, mode="similar")
    for bad in (collection["ds"], collection["ds"] / "sub" / "dups", collection["vdir"] / "x"):
        with pytest.raises(RevsearchError, match="inside the"):
            move_duplicates(report, bad)
    assert _tree(collection["ds"]) == before
    assert not (collection["ds"] / "sub" / "dups").exists()


def test_against_collection_is_never_moved(collection: dict, tmp_path: Path) -> None:
    other_ds = tmp_path / "archive"
    other_ds.mkdir()
    Image.fromarray(make_photo(1, (400, 300))).save(other_ds / "big.jpg")  # largest: kept
    x = collection["x"]
    Index.from_vectors(tmp_path / "archive-vec", x[:1], ["big.jpg"], _spec(2048), dataset_dir=other_ds)
    report = find_duplicates(collection["vdir"], 0.9, against=tmp_path / "archive-vec", keep="largest", mode="similar")
    assert len(report.groups) == 1
    g = report.groups[0]
    assert g.keep.collection == "against" and g.keep.relpath == "big.jpg"
    assert {f.relpath for f in g.duplicates} == {"a.jpg", "sub/b.jpg", "c.png"}
    with pytest.raises(RevsearchError, match="inside the"):
        move_duplicates(report, other_ds / "x")
    moved = move_duplicates(report, tmp_path / "dups", update_index=False)
    assert len(moved.moved) == 3
    assert (other_ds / "big.jpg").is_file()


# ---------------------------------------------------------------------------- errors, defaults, plots


def test_errors(tmp_path: Path, collection: dict) -> None:
    with pytest.raises(IndexNotFoundError):
        find_duplicates(tmp_path / "nothing-here", mode="similar")
    for bad in (1.5, -1.01, float("nan")):
        with pytest.raises(ValueError, match=r"\[-1, 1\]"):
            find_duplicates(collection["vdir"], bad, mode="similar")
    with pytest.raises(ValueError, match="keep"):
        find_duplicates(collection["vdir"], 0.9, keep="best", mode="similar")
    with pytest.raises(RevsearchError, match="move log"):
        undo_moves(tmp_path / "no-log.csv")


def test_default_threshold_per_model(caplog: pytest.LogCaptureFixture) -> None:
    mob = Embedder("mobilenet").spec
    t, cal = default_threshold(mob)
    assert cal.calibrated and t == CALIBRATIONS["mobilenet"].threshold
    assert cal.preprocessing == mob["preprocessing"]  # calibrated for today's pipeline
    with caplog.at_level(logging.WARNING, logger="revsearch.duplicates"):
        t2, cal2 = default_threshold(Embedder("resnet50").spec)
    assert not cal2.calibrated and t2 == max(c.threshold for c in CALIBRATIONS.values())
    assert "not calibrated" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="revsearch.duplicates"):
        default_threshold(Embedder("mobilenet", pooling="gem").spec)
    assert "calibrated with preprocessing" in caplog.text


def test_plot_duplicates_pages(collection: dict) -> None:
    report = find_duplicates(collection["vdir"], 0.9, keep="largest", mode="similar")
    figs = plot_duplicates(report, groups_per_page=1)
    assert len(figs) == 2
    titles = [ax.get_title() for ax in figs[0].axes]
    assert titles[0].startswith("#1 keep") and "b.jpg" in titles[0]
    assert all(float(t.split("\n")[0]) >= 0.9 for t in titles[1:])
    assert len(plot_duplicates(report)) == 1
    report.groups = []
    assert plot_duplicates(report) == []


# ---------------------------------------------------------------------------- CLI


def test_cli_dry_run_json_csv_plot(collection: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    before = _tree(collection["ds"])
    vdir = str(collection["vdir"])
    assert main(["duplicates", vdir, "--mode", "similar", "--threshold", "0.9", "--json", "--plot", str(tmp_path / "g.png"), "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [len(g["duplicates"]) + 1 for g in out["groups"]] == [3, 2]
    assert out["groups"][0]["keep"]["relpath"] == "sub/b.jpg"
    assert (tmp_path / "g.png").stat().st_size > 0
    assert main(["duplicates", vdir, "--mode", "similar", "--threshold", "0.9", "--csv", str(tmp_path / "d.csv"), "--keep", "first", "-q"]) == 0
    with open(tmp_path / "d.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["group"], r["role"]) for r in rows] == [("1", "keep"), ("1", "duplicate"), ("1", "duplicate"),
                                                       ("2", "keep"), ("2", "duplicate")]
    assert (rows[0]["relpath"], rows[3]["relpath"]) == ("a.jpg", "d.jpg")  # --keep first
    assert {r["relpath"] for r in rows[1:3]} == {"c.png", "sub/b.jpg"}
    assert _tree(collection["ds"]) == before  # dry run: nothing moved
    assert "dry run" in capsys.readouterr().err


def test_cli_errors_are_one_line(collection: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cases = [
        (["duplicates", str(tmp_path / "missing")], "no revsearch index"),
        (["duplicates", str(collection["vdir"]), "--threshold", "2"], "[-1, 1]"),
        (["duplicates", str(collection["vdir"]), "--mode", "similar", "--threshold", "0.9", "--move-to", str(collection["ds"] / "x"), "--dataset-dir", str(collection["ds"])], "inside the dataset or index folder"),
    ]
    for argv, needle in cases:
        assert main(argv + ["-q"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("revsearch: error:") and needle in err[-1]
    assert not (collection["ds"] / "x").exists()


@pytest.mark.slow
def test_cli_move_and_undo_updates_the_index(collection: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ds, vdir = collection["ds"], str(collection["vdir"])
    before = _tree(ds)
    # the photo folder is named by the user, never taken from the index's manifest alone
    assert main(["duplicates", vdir, "--mode", "similar", "--threshold", "0.9", "--move-to", str(tmp_path / "dups"), "-q"]) == 1
    assert "--dataset-dir" in capsys.readouterr().err and _tree(ds) == before and not (tmp_path / "dups").exists()
    assert main(["duplicates", vdir, "--mode", "similar", "--threshold", "0.9", "--move-to", str(tmp_path / "dups"),
                 "--dataset-dir", str(ds), "-q"]) == 0
    out = capsys.readouterr()
    assert "moved 3 files" in out.out
    assert len(Index.open(vdir)) == 4
    log = next((tmp_path / "dups").glob("revsearch-moves-*.csv"))
    assert main(["duplicates", vdir, "--undo", str(log)]) == 0  # re-embeds the 3 restored files (ResNet50, random weights)
    assert "restored 3 files" in capsys.readouterr().out
    assert _tree(ds) == before
    assert sorted(Index.open(vdir).paths) == collection["rel"]
