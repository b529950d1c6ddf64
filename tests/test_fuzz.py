"""Property tests of every parser of files anyone can edit (issue 17), with Hypothesis.

Random mutations of an index manifest, of its shard files, of a move log and of a legacy pickle
never give a traceback (only :class:`~revsearch.core.errors.RevsearchError` subclasses), never make
revsearch read, move or create anything outside the folders named for the run, and never give
silently wrong results (a search returns its k places with finite scores and stored paths that stay
inside the dataset folder; an undo loses and doubles nothing). Examples are bounded so the file
runs in well under a minute.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from revsearch import Index, RevsearchError
from revsearch.storage.legacy import load_legacy_file
from revsearch.storage.store import check_relpath

DIM = 8
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
SPEC = {"model": "synthetic", "preprocessing": "none", "dim": DIM, "weights": "none", "precision": "float32"}

#: Byte-level mutations: (kind, position fraction, byte): flip, replace, delete, insert, truncate.
mutation = st.tuples(st.sampled_from(["flip", "set", "del", "ins", "cut"]), st.floats(0, 1), st.integers(0, 255))


def _mutate(data: bytes, muts: list) -> bytes:
    b = bytearray(data)
    for kind, where, byte in muts:
        if not b:
            b.append(byte)
            continue
        i = min(len(b) - 1, int(where * len(b)))
        if kind == "flip":
            b[i] ^= 1 << (byte % 8)
        elif kind == "set":
            b[i] = byte
        elif kind == "del":
            del b[i]
        elif kind == "ins":
            b.insert(i, byte)
        else:
            del b[i:]
    return bytes(b)


#: JSON values a hand edit might put anywhere.
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20)
    | st.sampled_from(["../x", "/etc/passwd", "vectors-../../x.npy", "a/b", "NaN", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths_of(obj, prefix=()):
    """Every (key path) of a JSON object."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths_of(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths_of(v, (*prefix, i))


def _set(obj, path, value):
    if not path:
        return value
    cur = obj
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return obj


class _Template:
    """An index built once; each example works on a fresh copy."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="revsearch-fuzz-"))
        rng = np.random.default_rng(0)
        x = rng.standard_normal((20, DIM)).astype(np.float32)
        self.x = x / np.linalg.norm(x, axis=1, keepdims=True)
        self.paths = [f"d{i % 3}/img{i:02d}.jpg" for i in range(20)]
        Index.from_vectors(self.root / "v", self.x, self.paths, SPEC, dataset_dir=self.root / "ds", shard_rows=8)

    def copy(self) -> Path:
        work = Path(tempfile.mkdtemp(prefix="revsearch-fuzz-case-"))
        shutil.copytree(self.root / "v", work / "v")
        return work


@pytest.fixture(scope="module")
def template():
    t = _Template()
    yield t
    shutil.rmtree(t.root, ignore_errors=True)


def _use(folder: Path) -> None:
    """Open, list and search an index as a user would; check what comes back."""
    index = Index.open(folder)
    paths = index.paths
    assert len(paths) == len(index) == sum(len(s) for s in index.shards)
    for p in paths:
        assert check_relpath(p) is None  # joined to the dataset folder, it stays inside it
    if len(index):
        k = min(5, len(index))
        bad = set(index.damaged_rows().tolist())
        got = index.search_vectors(np.eye(DIM, dtype=np.float32)[0], k)
        assert len(got) == min(k, len(index) - len(bad))  # k places, unless fewer sound rows exist
        assert all(np.isfinite(m.score) and -1.01 <= m.score <= 1.01 and m.row not in bad for m in got)


def _expect_clean(fn) -> None:
    try:
        fn()
    except RevsearchError:
        pass  # a one-line, named error: fine


@FUZZ
@given(muts=st.lists(mutation, min_size=1, max_size=4))
def test_manifest_byte_mutations(template, muts) -> None:
    work = template.copy()
    try:
        m = work / "v" / "revsearch.json"
        m.write_bytes(_mutate(m.read_bytes(), muts))
        _expect_clean(lambda: _use(work / "v"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


@FUZZ
@given(data=st.data())
def test_manifest_value_mutations(template, data) -> None:
    work = template.copy()
    try:
        m = work / "v" / "revsearch.json"
        manifest = json.loads(m.read_text())
        for _ in range(data.draw(st.integers(1, 3))):
            where = data.draw(st.sampled_from(list(_paths_of(manifest))[1:]))
            manifest = _set(manifest, where, data.draw(json_value))
        m.write_text(json.dumps(manifest))
        _expect_clean(lambda: _use(work / "v"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


@FUZZ
@given(kind=st.sampled_from(["vectors", "rows", "paths"]), shard=st.integers(0, 2),
       muts=st.lists(mutation, min_size=1, max_size=4))
def test_shard_file_mutations(template, kind, shard, muts) -> None:
    work = template.copy()
    try:
        manifest = json.loads((work / "v" / "revsearch.json").read_text())
        f = work / "v" / manifest["shards"][shard]["files"][kind]
        f.write_bytes(_mutate(f.read_bytes(), muts))
        _expect_clean(lambda: _use(work / "v"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------- move log
class _Moved:
    """A dataset of 4 files, 2 of them moved by move_duplicates (the log to mutate), and a folder outside."""

    def __init__(self) -> None:
        from revsearch.duplicates import find_duplicates, move_duplicates

        self.root = Path(tempfile.mkdtemp(prefix="revsearch-fuzz-moves-"))
        ds = self.root / "ds"
        (ds / "sub").mkdir(parents=True)
        for i, n in enumerate(["a.jpg", "b.jpg", "sub/c.jpg", "d.jpg"]):
            (ds / n).write_bytes(bytes([i + 1]) * 64)
        outside = self.root / "outside"
        outside.mkdir()
        (outside / "victim.jpg").write_bytes(b"elsewhere")
        x = np.ones((4, DIM), np.float32) + 1e-3 * np.eye(4, DIM, dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        Index.from_vectors(self.root / "v", x, ["a.jpg", "b.jpg", "d.jpg", "sub/c.jpg"], SPEC, dataset_dir=ds)
        moved = move_duplicates(find_duplicates(self.root / "v", 0.9, keep="first", mode="similar"), self.root / "dups",
                                update_index=False)
        assert len(moved.moved) == 3
        self.log = moved.log.relative_to(self.root)

    def copy(self) -> Path:
        work = Path(tempfile.mkdtemp(prefix="revsearch-fuzz-case-"))
        for name in ("ds", "dups", "outside"):
            shutil.copytree(self.root / name, work / name, symlinks=True)
        return work


def _state(work: Path) -> tuple[dict, list]:
    """What must never change outside ds/dups, and the contents inside them (a multiset)."""
    outside = {p.relative_to(work).as_posix(): p.read_bytes() for p in sorted(work.rglob("*")) if p.is_file()
               and p.relative_to(work).parts[0] not in ("ds", "dups")}
    inside = sorted(p.read_bytes() for d in ("ds", "dups") for p in (work / d).rglob("*")
                    if p.is_file() and not p.name.endswith(".csv"))
    return outside, inside


@pytest.fixture(scope="module")
def moved():
    t = _Moved()
    yield t
    shutil.rmtree(t.root, ignore_errors=True)


def _run_undo(work: Path, log: Path) -> None:
    from revsearch.duplicates import undo_moves

    before_out, before_in = _state(work)
    names_before = sorted(p.relative_to(work).as_posix() for p in work.rglob("*"))
    try:
        undo_moves(log, dataset_dir=work / "ds", move_to=work / "dups", update_index=False)
    except RevsearchError:
        assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == names_before  # refused: nothing done
    after_out, after_in = _state(work)
    assert after_out == before_out  # nothing outside the named folders read into them, moved or created
    assert after_in == before_in  # nothing lost, nothing doubled


@FUZZ
@given(muts=st.lists(mutation, min_size=1, max_size=5))
def test_move_log_byte_mutations(moved, muts) -> None:
    work = moved.copy()
    try:
        log = work / moved.log
        log.write_bytes(_mutate(log.read_bytes(), muts))
        _run_undo(work, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)


hostile_path = st.sampled_from([
    "{ds}/../outside/victim.jpg", "{out}/victim.jpg", "{out}/new.jpg", "/etc/passwd", "{ds}", "{dups}", "",
    "{ds}/a.jpg", "{dups}/a.jpg", "{dups}/../outside/x.jpg", "relative.jpg", "{ds}/sub/../../outside/y.jpg",
]) | st.text(max_size=12)


@FUZZ
@given(data=st.data())
def test_move_log_field_mutations(moved, data) -> None:
    work = moved.copy()
    try:
        log = work / moved.log
        with open(log, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        fmt = {"ds": str(work / "ds"), "dups": str(work / "dups"), "out": str(work / "outside")}
        for _ in range(data.draw(st.integers(1, 4))):
            r = data.draw(st.integers(1, len(rows) - 1))
            c = data.draw(st.integers(0, len(rows[r]) - 1))
            value = data.draw(hostile_path).format(**fmt) if data.draw(st.booleans()) else data.draw(st.text(max_size=8))
            if c == 3 and data.draw(st.booleans()):  # a hash that matches the victim: the strongest edit
                value = hashlib.blake2b(b"elsewhere", digest_size=16).hexdigest()
            rows[r][c] = value
        if data.draw(st.booleans()):  # a symbolic link planted in the dataset folder, leading out
            (work / "ds" / "sub" / "out").symlink_to(work / "outside", target_is_directory=True)
        buf = io.StringIO()
        csv.writer(buf).writerows(rows)
        log.write_text(buf.getvalue(), encoding="utf-8", errors="surrogateescape")
        _run_undo(work, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------- legacy pickles
@pytest.fixture(scope="module")
def pickled() -> bytes:
    rng = np.random.default_rng(0)
    return pickle.dumps({"x/0001.jpg": rng.standard_normal(2048).astype(np.float32)}, protocol=2)


@FUZZ
@given(muts=st.lists(mutation, min_size=1, max_size=4))
def test_legacy_pickle_mutations(pickled, muts) -> None:
    work = Path(tempfile.mkdtemp(prefix="revsearch-fuzz-legacy-"))
    try:
        f = work / "1.pickle"
        f.write_bytes(_mutate(pickled, muts))
        try:
            out = load_legacy_file(f)
        except RevsearchError:
            return
        assert isinstance(out, dict)
        for name, arr in out.items():
            assert isinstance(name, str) and isinstance(arr, np.ndarray)
            assert not os.path.isabs(name) and ".." not in name.split("/")
    finally:
        shutil.rmtree(work, ignore_errors=True)
