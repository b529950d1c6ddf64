"""Importing the original project's vector folder into an index, and searching it."""

from __future__ import annotations

import bz2
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_photos

from revsearch import cli, reverse_image_search
from revsearch.models.embedding import RANDOM_WEIGHTS_SEED, Embedder, get_embedder, seed_random_weights
from revsearch.core.errors import IndexNotFoundError, LegacyFormatError, ModelMismatchError, UnsafePickleError
from revsearch import Index
from revsearch.storage.legacy import LEGACY_DIM, import_legacy

REPO = Path(__file__).resolve().parents[1]


def write_legacy(folder: Path, vectors: dict[str, np.ndarray]) -> list[Path]:
    """One file per image, as the original project wrote them: bz2.BZ2File + pickle.dump({name: array})."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for count, (name, arr) in enumerate(vectors.items()):
        path = folder / f"{count}.pbz2"
        with bz2.BZ2File(path, "wb") as f:
            pickle.dump({name: arr}, f)
        out.append(path)
    return out


def pooled_normalised(arr: np.ndarray) -> np.ndarray:
    v = arr.reshape(49, 2048).astype(np.float64).mean(axis=0)
    return (v / np.linalg.norm(v)).astype(np.float32)


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def legacy(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A dataset of 6 photos (one in a subfolder) and a legacy folder with a random vector for each."""
    ds = tmp_path / "photos"
    write_photos(ds, 5)
    write_photos(ds / "sub", 1, start=5)
    rng = np.random.default_rng(0)
    names = [f"img{i:04d}.jpg" for i in range(5)] + ["sub/img0005.jpg"]
    vectors = {n: np.abs(rng.standard_normal(LEGACY_DIM)).astype(np.float32) for n in names}
    write_legacy(tmp_path / "legacy", vectors)
    return ds, tmp_path / "legacy", vectors


def check_imported(idx: Index, vectors: dict[str, np.ndarray]) -> None:
    assert idx.spec["model"] == "resnet50-seed"
    assert idx.spec["dim"] == 2048 and idx.dim == 2048
    assert idx.spec["weights"] == "imagenet"
    assert "raw-bgr" in idx.spec["preprocessing"]
    assert idx.spec == Embedder("resnet50-seed", weights="imagenet").spec
    assert idx.paths == sorted(vectors)
    assert idx.vectors.shape == (len(vectors), 2048) and idx.vectors.dtype == np.float32
    for name, arr in vectors.items():
        np.testing.assert_allclose(idx.vectors[idx.paths.index(name)], pooled_normalised(arr), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(idx.vectors, axis=1), 1.0, atol=1e-6)
    assert isinstance(idx.shards[0], np.memmap)


def test_import_legacy_function(legacy) -> None:  # type: ignore[no-untyped-def]
    ds, legacy_dir, vectors = legacy
    vec = legacy_dir.parent / "vectors"
    idx, read = import_legacy(legacy_dir, vec, dataset_dir=ds, progress=False)
    check_imported(idx, vectors)
    check_imported(Index.open(vec), vectors)
    assert len(read) == 6 and read.skipped == []
    assert idx.dataset_dir == ds.resolve()
    assert idx.manifest["imported_from"]["legacy_dir"] == str(legacy_dir.resolve())
    # searching by vector: each legacy vector finds its own image, in the dataset folder
    for name, arr in vectors.items():
        best = idx.search_vectors(arr.reshape(49, 2048).mean(0), k=3, expand=False)[0]
        assert best.relpath == name and best.score == pytest.approx(1.0, abs=1e-5)
        assert best.path == ds.resolve() / name and best.path.is_file()
    # never overwrites an index
    with pytest.raises(LegacyFormatError, match="already holds an index"):
        import_legacy(legacy_dir, vec, progress=False)


def test_import_legacy_cli(legacy, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    ds, legacy_dir, vectors = legacy
    (legacy_dir / "99.pbz2").write_bytes(b"BZh91AY&SY this file was cut short")
    vec = legacy_dir.parent / "vectors"
    rc = cli.main(["import-legacy", str(legacy_dir), str(vec), "--dataset-dir", str(ds), "-q"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert "imported 6 vectors (resnet50-seed, 2048-d), 1 skipped" in out
    assert err.startswith(f"skipped {legacy_dir / '99.pbz2'}: ") and len(err.strip().splitlines()) == 1
    check_imported(Index.open(vec), vectors)
    assert cli.main(["info", str(vec), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == "resnet50-seed" and info["vectors"] == 6 and Path(info["dataset_dir"]) == ds.resolve()


def test_imported_index_refuses_a_random_weights_query(legacy) -> None:  # type: ignore[no-untyped-def]
    """The import records ImageNet weights: a query embedded with weights=None is refused, not mis-ranked."""
    ds, legacy_dir, _ = legacy
    vec = legacy_dir.parent / "vectors"
    import_legacy(legacy_dir, vec, dataset_dir=ds, progress=False)
    with pytest.raises(ModelMismatchError, match="weights: index has 'imagenet', query has 'none'"):
        reverse_image_search(ds / "img0001.jpg", "resnet50-seed", ds, vec, generate=False, weights=None)
    with pytest.raises(ModelMismatchError, match="model: index has 'resnet50-seed', query has 'resnet50'"):
        reverse_image_search(ds / "img0001.jpg", "resnet50", ds, vec, generate=False, weights=None)


def test_legacy_folder_given_as_the_index_points_to_import_legacy(legacy) -> None:  # type: ignore[no-untyped-def]
    ds, legacy_dir, _ = legacy
    with pytest.raises(IndexNotFoundError, match="import-legacy"):
        reverse_image_search(ds / "img0001.jpg", "resnet50-seed", ds, legacy_dir, generate=False, weights=None)


def test_update_of_an_imported_index_learns_the_files_without_embedding(
    legacy, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Imported rows know no size/mtime/hash: the first update trusts the vectors and records the files."""
    ds, legacy_dir, vectors = legacy
    emb = Embedder("resnet50-seed", weights=None)
    from revsearch.storage.legacy import read_legacy_vectors

    read = read_legacy_vectors(legacy_dir, progress=False)
    vec = legacy_dir.parent / "vectors"
    Index.from_vectors(vec, read.vectors, read.names, emb.spec, dataset_dir=ds)

    def no_embedding(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("nothing should be embedded")

    monkeypatch.setattr(Embedder, "embed_files", no_embedding)
    idx, report = Index.build(ds, vec, emb, progress=False)
    assert report.embedded == 0 and sorted(report.unchanged) == sorted(vectors)
    check_vectors = {n: pooled_normalised(a) for n, a in vectors.items()}
    for name, v in check_vectors.items():
        np.testing.assert_allclose(idx.vectors[idx.paths.index(name)], v, atol=1e-6)
    shards = idx.manifest["shards"]
    idx2, report2 = Index.build(ds, vec, emb, progress=False)
    assert report2.embedded == 0 and idx2.manifest["shards"] == shards  # nothing rewritten: files known now


# ---------------------------------------------------------------- hostile files


def test_hostile_pickle_cli_subprocess(legacy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ds, legacy_dir, _ = legacy
    marker = tmp_path / "PWNED"
    with bz2.BZ2File(legacy_dir / "3.pbz2", "wb") as f:  # replaces a genuine file
        pickle.dump({"img0003.jpg": Evil(marker)}, f)
    vec = tmp_path / "vectors"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    for quiet in (["-q"], []):
        proc = subprocess.run(
            [sys.executable, "-m", "revsearch", "import-legacy", str(legacy_dir), str(vec), *quiet],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert proc.returncode == cli.EXIT_ERROR
        assert "Traceback" not in proc.stdout + proc.stderr
        errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
        assert len(errors) == 1, proc.stderr
        assert errors[0].startswith("revsearch: error: ") and "3.pbz2" in errors[0] and "NOT loaded" in errors[0]
        if quiet:
            assert proc.stderr.strip() == errors[0]
        assert proc.stdout == ""
    assert not marker.exists()
    assert not Index.exists(vec) and not vec.exists()


def test_hostile_pickle_in_process(legacy, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    ds, legacy_dir, _ = legacy
    marker = tmp_path / "PWNED"
    with open(legacy_dir / "7.pickle", "wb") as f:  # a plain-pickle variant
        pickle.dump({"img0001.jpg": Evil(marker)}, f)
    vec = tmp_path / "vectors"
    rc = cli.main(["import-legacy", str(legacy_dir), str(vec), "-q"])
    out, err = capsys.readouterr()
    assert rc == cli.EXIT_ERROR and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("revsearch: error: ") and "7.pickle" in lines[0]
    with pytest.raises(UnsafePickleError):
        import_legacy(legacy_dir, vec, progress=False)
    assert not marker.exists() and not Index.exists(vec)


# ---------------------------------------------------------------- the real pipeline, end to end


def unpooled_resnet50_seed() -> Any:
    """The original pipeline's model: Keras ResNet50 without pooling, seeded as Embedder._build seeds weights=None."""
    import keras

    return seed_random_weights(
        keras.applications.ResNet50(include_top=False, weights=None, pooling=None, input_shape=(224, 224, 3)),
        RANDOM_WEIGHTS_SEED,
    )


@pytest.mark.slow
def test_real_legacy_vectors_search_like_the_resnet50_seed_embedder(tmp_path: Path) -> None:
    ds = tmp_path / "photos"
    files = write_photos(ds, 5) + write_photos(ds, 1, start=5, ext=".png")
    names = [p.name for p in files]
    emb = get_embedder("resnet50-seed", weights=None)
    # the original project's files: the (7, 7, 2048) block on raw BGR 0..255 input, flattened
    rgb = np.stack([emb.prepare(p) for p in files])
    blocks = np.asarray(unpooled_resnet50_seed().predict_on_batch(np.ascontiguousarray(rgb[..., ::-1])))
    assert blocks.shape == (6, 7, 7, 2048)
    legacy_vectors = {n: b.reshape(-1).astype(np.float32) for n, b in zip(names, blocks)}
    assert all(v.shape == (100352,) for v in legacy_vectors.values())
    write_legacy(tmp_path / "legacy", legacy_vectors)

    idx, _ = import_legacy(tmp_path / "legacy", tmp_path / "vectors", dataset_dir=ds, progress=False)
    queries = emb.embed(files)  # the new pipeline, average-pooled in the model
    # the 49-position means are what pooling="avg" computes
    for name, q in zip(names, queries):
        assert float(q @ idx.vectors[idx.paths.index(name)]) == pytest.approx(1.0, abs=1e-4)
    for name, matches in zip(names, idx.search_vectors(queries, k=3, expand=False)):
        assert matches[0].relpath == name and matches[0].score == pytest.approx(1.0, abs=1e-4)

    # with the spec of the weights actually used, the full image search path works too
    from revsearch.storage.legacy import read_legacy_vectors

    read = read_legacy_vectors(tmp_path / "legacy", progress=False)
    same = Index.from_vectors(tmp_path / "vectors-none", read.vectors, read.names, emb.spec, dataset_dir=ds)
    for path in files:
        best = same.search(path, k=2, embedder=emb, expand=False)[0]
        assert best.relpath == path.name and best.score == pytest.approx(1.0, abs=1e-4)
    res = reverse_image_search(files[2], "resnet50-seed", ds, tmp_path / "vectors-none", weights=None, k=3,
                               expand=False)  # random features: plain cosine
    assert res[0].relpath == names[2]


# ---------------------------------------------------------------- names and sizes an index cannot take (issue 8)


def test_names_with_line_breaks_are_skipped_and_the_index_stays_readable(legacy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Keys with \\n or \\r used to reach Index.from_vectors and make an index every later command called damaged."""
    ds, legacy_dir, vectors = legacy
    rng = np.random.default_rng(1)
    bad = {"sub/evil\nname.jpg": rng.random(LEGACY_DIM, np.float32), "cr\r.jpg": rng.random(LEGACY_DIM, np.float32)}
    for i, (name, arr) in enumerate(bad.items()):
        with bz2.BZ2File(legacy_dir / f"9{i}.pbz2", "wb") as f:
            pickle.dump({name: arr}, f)
    vec = tmp_path / "vectors"
    idx, read = import_legacy(legacy_dir, vec, dataset_dir=ds, progress=False)
    assert sorted(p.name for p, _ in read.skipped) == ["90.pbz2", "91.pbz2"]
    assert all("line break" in r for _, r in read.skipped)
    reopened = Index.open(vec)
    check_imported(reopened, vectors)
    assert len(reopened) == len(vectors) and reopened.manifest["imported_from"]["files_skipped"] == 2
    hits = reopened.search_vectors(reopened.vectors[0], k=len(vectors))
    assert sorted(h.relpath for h in hits) == sorted(vectors)


def test_a_file_that_would_expand_to_gigabytes_writes_no_index(legacy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, legacy_dir, _ = legacy
    arr = np.zeros(LEGACY_DIM, np.float32)
    with bz2.BZ2File(legacy_dir / "bomb.pbz2", "wb") as f:  # 20,000 keys, one shared array: 160 MB pooled
        pickle.dump({f"p{i:06d}.jpg": arr for i in range(20_000)}, f)
    vec = tmp_path / "vectors"
    idx, read = import_legacy(legacy_dir, vec, progress=False)
    assert len(idx) == 6 and [p.name for p, _ in read.skipped] == ["bomb.pbz2"]
    assert "more than 10000 entries" in read.skipped[0][1]
    vec2 = tmp_path / "vectors2"
    with pytest.raises(LegacyFormatError, match=r"more than 4 vectors .*max_vectors"):
        import_legacy(legacy_dir, vec2, progress=False, max_vectors=4)
    assert not Index.exists(vec2)
