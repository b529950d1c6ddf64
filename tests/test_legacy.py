"""Tests for revsearch.legacy: safe reading of the original project's vector files."""

from __future__ import annotations

import builtins
import bz2
import logging
import os
import pickle
import pickletools
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from revsearch.errors import LegacyFormatError, UnsafePickleError
from revsearch.legacy import (
    FEATURE_DIM,
    LEGACY_DIM,
    LegacyVectors,
    RestrictedUnpickler,
    find_legacy_files,
    load_legacy_file,
    read_legacy_vectors,
    reduce_legacy_vector,
    scan_pickle,
)

RNG = np.random.default_rng(1234)


def legacy_array() -> np.ndarray:
    """A random vector as the original project stored it: (100352,) float32."""
    return RNG.standard_normal(LEGACY_DIM).astype(np.float32)


def pooled(v: np.ndarray) -> np.ndarray:
    return v.reshape(49, 2048).mean(0)


def write_pbz2(path: Path, obj: Any, protocol: int | None = None) -> Path:
    """Write ``obj`` exactly as the original project did: bz2.BZ2File + pickle.dump."""
    with bz2.BZ2File(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def write_pickle(path: Path, obj: Any, protocol: int | None = None) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


def numpy1_style(data: bytes) -> bytes:
    """Rewrite a pickle made under NumPy 2 so it names ``numpy.core.*`` as NumPy 1.x did.

    Works for every protocol: GLOBAL arguments and SHORT_BINUNICODE strings are re-encoded
    (fixing their length byte), and FRAME opcodes (optional) are dropped so their lengths
    need no fixing.
    """
    ops = list(pickletools.genops(data))
    out = bytearray()
    for i, (op, arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        raw = data[pos:end]
        if op.name == "FRAME":
            continue
        if op.name == "GLOBAL" and arg.startswith("numpy._core."):
            module, name = arg.split(" ")
            raw = b"c" + module.replace("numpy._core.", "numpy.core.").encode() + b"\n" + name.encode() + b"\n"
        elif op.name == "SHORT_BINUNICODE" and arg.startswith("numpy._core."):
            s = arg.replace("numpy._core.", "numpy.core.").encode()
            raw = b"\x8c" + bytes([len(s)]) + s
        out += raw
    return bytes(out)


class Evil:
    """Unpickling this runs ``func(*args)`` under plain pickle.load."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.func, self.args)


def hostile_payloads(marker: Path) -> dict[str, Any]:
    return {
        "os.system": Evil(os.system, f"touch {marker}"),
        "builtins.eval": Evil(builtins.eval, f"open({str(marker)!r}, 'w').close()"),
        "subprocess.Popen": Evil(subprocess.Popen, ["touch", str(marker)]),
        "builtins.getattr": Evil(getattr, "harmless", "upper"),
        "numpy.load": Evil(np.load, str(marker)),
    }


# --------------------------------------------------------------------------- loading


def test_sanity_plain_pickle_would_run_the_payload(tmp_path: Path) -> None:
    """The hostile files below really are hostile: plain pickle.load runs them."""
    marker = tmp_path / "pwned"
    path = write_pbz2(tmp_path / "1.pbz2", {"a.jpg": Evil(os.system, f"touch {marker}")})
    with bz2.BZ2File(path) as f:
        pickle.load(f)  # the one place a hostile pickle is loaded unsafely, on purpose
    assert marker.exists()


@pytest.mark.parametrize("writer", [write_pbz2, write_pickle])
@pytest.mark.parametrize("protocol", [None, 2, 3, 4, 5])
def test_load_legacy_file_roundtrip(tmp_path: Path, writer: Any, protocol: int | None) -> None:
    arr = legacy_array()
    path = writer(tmp_path / "7.pbz2", {"0001_000026.jpg": arr}, protocol)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = load_legacy_file(path)
    assert list(got) == ["0001_000026.jpg"]
    assert got["0001_000026.jpg"].dtype == np.float32
    np.testing.assert_array_equal(got["0001_000026.jpg"], arr)


def test_detects_bz2_by_magic_bytes_not_extension(tmp_path: Path) -> None:
    arr = legacy_array()
    bz_named_pickle = write_pbz2(tmp_path / "1.pickle", {"a.jpg": arr})
    plain_named_pbz2 = write_pickle(tmp_path / "2.pbz2", {"b.jpg": arr})
    assert bz_named_pickle.read_bytes()[:3] == b"BZh"
    np.testing.assert_array_equal(load_legacy_file(bz_named_pickle)["a.jpg"], arr)
    np.testing.assert_array_equal(load_legacy_file(plain_named_pbz2)["b.jpg"], arr)


@pytest.mark.parametrize("protocol", [0, 2, 3, 4, 5])
def test_numpy1_pickle_loads_under_numpy2_without_warning(tmp_path: Path, protocol: int) -> None:
    arr = legacy_array()
    data = numpy1_style(pickle.dumps({"x/0001.jpg": arr, "scalar": np.float32(3.5)}, protocol=protocol))
    # The stream really names numpy.core (NumPy 1.x), not numpy._core.
    assert b"numpy.core." in data and b"numpy._core" not in data
    (tmp_path / "1.pickle").write_bytes(data)
    (tmp_path / "2.pbz2").write_bytes(bz2.compress(data))
    for name in ("1.pickle", "2.pbz2"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no DeprecationWarning from numpy.core
            with pytest.raises(LegacyFormatError, match="not a numpy array"):
                # the scalar entry is refused by validation, after a successful unpickling
                load_legacy_file(tmp_path / name)
            opener = bz2.open if name.endswith(".pbz2") else open
            with opener(tmp_path / name, "rb") as f:
                obj = RestrictedUnpickler(f).load()
        np.testing.assert_array_equal(obj["x/0001.jpg"], arr)
        assert obj["scalar"] == np.float32(3.5)


def test_numpy1_array_only_file_loads(tmp_path: Path) -> None:
    arr = legacy_array()
    data = numpy1_style(pickle.dumps({"0001_000026.jpg": arr}, protocol=4))
    assert b"numpy.core.multiarray" in data
    path = tmp_path / "3.pbz2"
    path.write_bytes(bz2.compress(data))
    got = load_legacy_file(path)
    np.testing.assert_array_equal(got["0001_000026.jpg"], arr)


@pytest.mark.parametrize("which", ["os.system", "builtins.eval", "subprocess.Popen", "builtins.getattr", "numpy.load"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_hostile_pickle_refused_and_not_run(tmp_path: Path, which: str, protocol: int) -> None:
    marker = tmp_path / "pwned"
    payload = hostile_payloads(marker)[which]
    path = write_pbz2(tmp_path / "5.pbz2", {"a.jpg": payload}, protocol)
    with pytest.raises(UnsafePickleError) as info:
        load_legacy_file(path)
    msg = str(info.value)
    assert which.split(".")[1] in msg  # names what it asked for
    assert str(path) in msg
    assert "NOT loaded" in msg and "malicious" in msg
    assert not marker.exists()
    assert isinstance(info.value, LegacyFormatError)


def test_hostile_plain_pickle_names_module(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = write_pickle(tmp_path / "1.pickle", Evil(os.system, f"touch {marker}"))
    with pytest.raises(UnsafePickleError, match=rf"'{os.system.__module__}\.system'"):
        load_legacy_file(path)
    assert not marker.exists()


def test_persistent_id_refused(tmp_path: Path) -> None:
    path = tmp_path / "1.pickle"
    path.write_bytes(b"Pevil\n.")  # protocol 0 PERSID opcode
    with pytest.raises(UnsafePickleError, match="persistent id"):
        load_legacy_file(path)


def test_codecs_encode_restricted_to_latin1(tmp_path: Path) -> None:
    # _codecs.encode('x', 'rot13') built by hand with protocol-0 opcodes
    path = tmp_path / "1.pickle"
    path.write_bytes(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")
    with pytest.raises(UnsafePickleError, match="rot13"):
        load_legacy_file(path)
    ok = tmp_path / "2.pickle"
    ok.write_bytes(b"c_codecs\nencode\n(Vabc\nVlatin1\ntR.")
    with pytest.raises(LegacyFormatError, match="not a dict"):  # safe, but not a vector file
        load_legacy_file(ok)


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ([np.zeros(3, np.float32)], "not a dict"),
        ({}, "empty dict"),
        ({1: np.zeros(3, np.float32)}, "not an image file name"),
        ({"a.jpg": [1.0, 2.0]}, "not a numpy array"),
        ({"a.jpg": np.array(["x"])}, "dtype"),
        ({"/etc/passwd": np.zeros(3, np.float32)}, "relative"),
        ({"../a.jpg": np.zeros(3, np.float32)}, "relative"),
    ],
)
def test_wrong_content_is_legacy_format_error(tmp_path: Path, obj: Any, match: str) -> None:
    path = write_pbz2(tmp_path / "1.pbz2", obj)
    with pytest.raises(LegacyFormatError, match=match) as info:
        load_legacy_file(path)
    assert not isinstance(info.value, UnsafePickleError)
    assert str(path) in str(info.value)


def test_backslash_keys_become_posix(tmp_path: Path) -> None:
    path = write_pbz2(tmp_path / "1.pbz2", {"cats\\0001.jpg": np.zeros(2048, np.float32)})
    assert list(load_legacy_file(path)) == ["cats/0001.jpg"]


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    good = write_pbz2(tmp_path / "good.pbz2", {"a.jpg": legacy_array()}).read_bytes()
    plain = pickle.dumps({"a.jpg": legacy_array()})
    cases = {
        "garbage.pbz2": b"BZh9" + bytes(RNG.integers(0, 256, 500, dtype=np.uint8)),
        "truncated.pbz2": good[: len(good) // 2],
        "truncated.pickle": plain[: len(plain) // 2],
        "noise.pkl": b"this is not a pickle at all",
        "empty.pkl": b"",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(LegacyFormatError) as info:
            load_legacy_file(path)
        assert not isinstance(info.value, UnsafePickleError), name
        assert str(path) in str(info.value), name


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LegacyFormatError, match="no such file"):
        load_legacy_file(tmp_path / "nope.pbz2")


def test_max_bytes(tmp_path: Path) -> None:
    path = write_pbz2(tmp_path / "1.pbz2", {"a.jpg": legacy_array()})
    with pytest.raises(LegacyFormatError, match="larger than 1000 bytes"):
        load_legacy_file(path, max_bytes=1000)


# --------------------------------------------------------------------------- reducing


def test_reduce_legacy_vector_shapes() -> None:
    v = legacy_array()
    expected = pooled(v)
    for variant in (v, v.reshape(7, 7, 2048), v.reshape(1, 7, 7, 2048), v.reshape(1, LEGACY_DIM)):
        out = reduce_legacy_vector(variant)
        assert out.shape == (FEATURE_DIM,) and out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # position 0 (row 0, col 0) is the first 2048 values in C order
    one_hot = np.zeros(LEGACY_DIM, np.float32)
    one_hot[:2048] = 49.0
    np.testing.assert_array_equal(reduce_legacy_vector(one_hot), np.ones(2048, np.float32))
    short = RNG.standard_normal(2048).astype(np.float32)
    np.testing.assert_array_equal(reduce_legacy_vector(short), short)
    assert reduce_legacy_vector(short.astype(np.float64)).dtype == np.float32


@pytest.mark.parametrize("shape", [(1000,), (2047,), (49, 2048), (2, 7, 7, 2048), (7, 7, 1024)])
def test_reduce_legacy_vector_rejects_other_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(LegacyFormatError, match=r"accepted shapes are .*\(100352,\)"):
        reduce_legacy_vector(np.zeros(shape, np.float32))


def test_reduce_legacy_vector_rejects_nan_and_non_numeric() -> None:
    v = legacy_array()
    v[5] = np.nan
    with pytest.raises(LegacyFormatError, match="NaN"):
        reduce_legacy_vector(v)
    with pytest.raises(LegacyFormatError, match="numeric"):
        reduce_legacy_vector(np.array(["a"] * 2048))


# --------------------------------------------------------------------------- folders


def test_find_legacy_files_natural_sort_and_extensions(tmp_path: Path) -> None:
    for name in ("10.pbz2", "2.pbz2", "1.PICKLE", "3.pkl", "notes.txt", "20.pbz2.bak"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "4.pbz2").write_bytes(b"x")
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "._2.pbz2").write_bytes(b"x")
    (tmp_path / "._5.pbz2").write_bytes(b"x")
    (tmp_path / "dir.pbz2").mkdir()  # a folder with a matching name is not a file
    got = [p.relative_to(tmp_path).as_posix() for p in find_legacy_files(tmp_path)]
    assert got == ["1.PICKLE", "2.pbz2", "3.pkl", "10.pbz2", "sub/4.pbz2"]


def test_find_legacy_files_errors(tmp_path: Path) -> None:
    with pytest.raises(LegacyFormatError, match="does not exist"):
        find_legacy_files(tmp_path / "missing")
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(LegacyFormatError, match=r"\.pbz2, \.pickle, \.pkl"):
        find_legacy_files(tmp_path)
    with pytest.raises(LegacyFormatError, match="not a folder"):
        find_legacy_files(tmp_path / "readme.txt")


def test_read_legacy_vectors_good_folder(tmp_path: Path) -> None:
    arrays = {f"{i:04d}_000026.jpg": legacy_array() for i in range(5)}
    for count, (name, arr) in enumerate(reversed(list(arrays.items()))):
        writer = write_pbz2 if count % 2 else write_pickle
        writer(tmp_path / f"{count}.{'pbz2' if count % 2 else 'pickle'}", {name: arr})
    result = read_legacy_vectors(tmp_path, progress=False)
    assert isinstance(result, LegacyVectors)
    assert result.names == sorted(arrays)
    assert len(result) == 5
    assert result.vectors.shape == (5, FEATURE_DIM) and result.vectors.dtype == np.float32
    for i, name in enumerate(result.names):
        np.testing.assert_allclose(result.vectors[i], pooled(arrays[name]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0)  # not normalised
    assert result.skipped == []


def test_read_legacy_vectors_skips_corrupt_and_wrong_shape(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = {"a.jpg": legacy_array(), "b.jpg": legacy_array()}
    write_pbz2(tmp_path / "1.pbz2", {"a.jpg": good["a.jpg"]})
    write_pbz2(tmp_path / "2.pbz2", {"b.jpg": good["b.jpg"]})
    (tmp_path / "3.pbz2").write_bytes(b"BZh91AY&SY" + b"\x00" * 64)  # corrupt bz2
    write_pbz2(tmp_path / "4.pbz2", {"c.jpg": np.zeros(1000, np.float32)})  # wrong shape
    write_pbz2(tmp_path / "5.pbz2", {"a.jpg": legacy_array()})  # duplicate name
    with caplog.at_level(logging.WARNING, logger="revsearch.legacy"):
        result = read_legacy_vectors(tmp_path, progress=False)
    assert result.names == ["a.jpg", "b.jpg"]
    np.testing.assert_allclose(result.vectors[0], pooled(good["a.jpg"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.vectors[1], pooled(good["b.jpg"]), rtol=1e-5, atol=1e-6)
    reasons = {p.name: r for p, r in result.skipped}
    assert set(reasons) == {"3.pbz2", "4.pbz2", "5.pbz2"}
    assert "corrupt" in reasons["3.pbz2"]
    assert "(1000,)" in reasons["4.pbz2"] and "accepted shapes" in reasons["4.pbz2"]
    assert "already read from" in reasons["5.pbz2"] and "1.pbz2" in reasons["5.pbz2"]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 3 and all("Skipping" in m for m in warned)


def test_read_legacy_vectors_aborts_on_hostile_file(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for i in range(1, 4):
        write_pbz2(tmp_path / f"{i}.pbz2", {f"{i}.jpg": legacy_array()})
    write_pbz2(tmp_path / "2b.pbz2", {"x.jpg": Evil(os.system, f"touch {marker}")})
    (tmp_path / "corrupt.pbz2").write_bytes(b"BZh9garbage")
    with pytest.raises(UnsafePickleError, match="2b.pbz2"):
        read_legacy_vectors(tmp_path, progress=False)
    assert not marker.exists()


def test_read_legacy_vectors_all_bad_and_empty(tmp_path: Path) -> None:
    (tmp_path / "1.pbz2").write_bytes(b"BZh9garbage")
    with pytest.raises(LegacyFormatError, match="none of the 1 vector files"):
        read_legacy_vectors(tmp_path, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LegacyFormatError, match="holds no vector file"):
        read_legacy_vectors(empty, progress=False)
    with pytest.raises(LegacyFormatError, match="does not exist"):
        read_legacy_vectors(tmp_path / "missing", progress=False)


def test_read_legacy_vectors_prints_nothing_without_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_pbz2(tmp_path / "1.pbz2", {"a.jpg": legacy_array()})
    read_legacy_vectors(tmp_path, progress=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# --------------------------------------------------------------------------- hostile shapes (issue 8)

REPO = Path(__file__).resolve().parents[1]


def deep_tuple_key_pbz2(path: Path, depth: int = 3_000_000) -> Path:
    """``{((((...)))): 1}``: a dict key that is a tuple nested ``depth`` deep; 68 bytes as .pbz2."""
    data = b"\x80\x02}(" + b")" + b"\x85" * depth + b"K\x01u."
    path.write_bytes(bz2.compress(data))
    return path


def test_deeply_nested_key_is_refused_not_a_crash(tmp_path: Path) -> None:
    """Hashing a 3,000,000-deep tuple key overflows the C stack: the file must be refused before.

    Run in a subprocess, so that a segfault fails this test instead of killing pytest.
    """
    path = deep_tuple_key_pbz2(tmp_path / "1.pbz2")
    assert path.stat().st_size == 68
    good = write_pbz2(tmp_path / "2.pbz2", {"a.jpg": legacy_array()})
    code = (
        "import sys\n"
        "from revsearch.errors import UnsafePickleError\n"
        "from revsearch.legacy import load_legacy_file, read_legacy_vectors\n"
        "for call in (lambda: load_legacy_file(sys.argv[1]), lambda: read_legacy_vectors(sys.argv[2], progress=False)):\n"
        "    try:\n"
        "        call()\n"
        "    except UnsafePickleError as e:\n"
        "        print('REFUSED', e)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path)], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, f"the process died (rc {proc.returncode}): {proc.stderr[-2000:]}"
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("REFUSED") for line in lines), proc.stdout
    assert all(str(path) in line and "nests containers more than 64 deep" in line for line in lines)
    assert good.exists()


@pytest.mark.parametrize(
    "key", [(1, 2), 3.5, b"a.jpg", None, frozenset({"a"})], ids=["tuple", "float", "bytes", "none", "frozenset"]
)
def test_non_string_keys_refused_before_anything_is_built(
    tmp_path: Path, key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_pbz2(tmp_path / "1.pbz2", {key: np.zeros(3, np.float32)}, protocol=4)

    def never(self: Any) -> Any:
        raise AssertionError("the pickle was unpickled")

    monkeypatch.setattr(RestrictedUnpickler, "load", never)
    with pytest.raises(LegacyFormatError, match="not an image file name") as info:
        load_legacy_file(path)
    assert str(path) in str(info.value)


def test_scan_pickle_follows_memo_and_depth() -> None:
    """A real file nests ~5 deep; depth reached through the memo (BINGET) counts too."""
    assert scan_pickle(pickle.dumps({"a.jpg": legacy_array()}, protocol=2)) == 1
    assert scan_pickle(pickle.dumps({f"{i}.jpg": np.zeros(2, np.float32) for i in range(50)}, protocol=5)) == 50
    t: Any = ()
    for _ in range(40):
        t = (t,)
    shared = pickle.dumps({"a.jpg": [t, t, t]})  # the 2nd and 3rd t come from the memo
    assert scan_pickle(shared, max_depth=45) == 1
    with pytest.raises(UnsafePickleError, match="more than 40 deep"):
        scan_pickle(pickle.dumps([t, [t]]), max_depth=40)
    with pytest.raises(LegacyFormatError, match="not a readable pickle"):
        scan_pickle(pickle.dumps({"a.jpg": 1})[:-5])


def shared_array_pbz2(path: Path, n: int) -> Path:
    """``{name_i: A for i < n}``: every key points to ONE (100352,) array (the pickle memoizes it)."""
    arr = np.zeros(LEGACY_DIM, np.float32)
    return write_pbz2(path, {f"photo_{i:06d}.jpg": arr for i in range(n)}, protocol=4)


@pytest.mark.slow
def test_200000_keys_sharing_one_array_are_refused_without_expanding(tmp_path: Path) -> None:
    """218 KB on disk that expanded to 3.3 GB of memory and 1.6 GB of index: refused, named, and cheap."""
    import tracemalloc

    folder = tmp_path / "legacy"
    folder.mkdir()
    path = shared_array_pbz2(folder / "1.pbz2", 200_000)
    assert path.stat().st_size < 400_000
    tracemalloc.start()
    try:
        with pytest.raises(LegacyFormatError) as info:
            read_legacy_vectors(folder, progress=False)
        with pytest.raises(LegacyFormatError, match="share arrays") as shared:
            load_legacy_file(path, max_entries=1_000_000)  # past the count, the sharing is still refused
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400_000_000, f"peak {peak / 1e6:.0f} MB while refusing"
    msg = str(info.value)
    assert str(path) in msg and "more than 10000 entries" in msg and "max_entries" in msg
    assert str(path) in str(shared.value) and "200000 entries" in str(shared.value)


def test_a_few_keys_sharing_one_array_are_skipped(tmp_path: Path) -> None:
    shared_array_pbz2(tmp_path / "1.pbz2", 50)
    write_pbz2(tmp_path / "2.pbz2", {"ok.jpg": legacy_array()})
    result = read_legacy_vectors(tmp_path, progress=False)
    assert result.names == ["ok.jpg"]
    assert [p.name for p, _ in result.skipped] == ["1.pbz2"]
    assert "share arrays" in result.skipped[0][1]


def test_max_vectors_bounds_what_a_folder_expands_into(tmp_path: Path) -> None:
    for i in range(5):
        write_pbz2(tmp_path / f"{i}.pbz2", {f"{i}.jpg": np.ones(FEATURE_DIM, np.float32)})
    with pytest.raises(LegacyFormatError) as info:
        read_legacy_vectors(tmp_path, progress=False, max_vectors=3)
    msg = str(info.value)
    assert "more than 3 vectors" in msg and "3.pbz2" in msg and "max_vectors" in msg
    assert len(read_legacy_vectors(tmp_path, progress=False, max_vectors=5)) == 5


def test_memory_while_reading_is_one_copy_of_the_vectors(tmp_path: Path) -> None:
    """The pooled vectors are held once (not a dict of rows and then a second array)."""
    import tracemalloc

    n = 400
    for i in range(n):
        write_pickle(tmp_path / f"{i}.pkl", {f"{n - i:04d}.jpg": np.full(FEATURE_DIM, i, np.float32)})
    tracemalloc.start()
    try:
        result = read_legacy_vectors(tmp_path, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    out = result.vectors.nbytes
    assert result.vectors.shape == (n, FEATURE_DIM) and result.vectors.flags.owndata
    assert result.names == sorted(result.names)
    assert [int(result.vectors[k, 0]) for k in range(3)] == [n - 1, n - 2, n - 3]  # rows follow their names
    assert peak < 1.4 * out, f"peak {peak / 1e6:.1f} MB for {out / 1e6:.1f} MB of vectors"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("cats/a\nb.jpg", "line break"),
        ("cats/c\r.jpg", "line break"),
        ("d\x00.jpg", "NUL"),
        ("e\udcff.jpg", "surrogate"),
    ],
)
def test_names_an_index_cannot_store_are_skipped_by_name(tmp_path: Path, bad: str, reason: str) -> None:
    write_pbz2(tmp_path / "1.pbz2", {bad: legacy_array()})
    write_pbz2(tmp_path / "2.pbz2", {"ok.jpg": legacy_array(), bad + "2": legacy_array()})
    write_pbz2(tmp_path / "3.pbz2", {"zz.jpg": legacy_array()})
    result = read_legacy_vectors(tmp_path, progress=False)
    assert result.names == ["ok.jpg", "zz.jpg"] and len(result.vectors) == 2
    assert [p.name for p, _ in result.skipped] == ["1.pbz2", "2.pbz2"]
    assert all(reason in r and repr(bad)[1:-1] in r for _, r in result.skipped)
