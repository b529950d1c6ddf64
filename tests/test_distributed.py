"""Indexing and searching on a real Dask LocalCluster (2 worker processes, 1 thread each).

The workers build ResNet50 with seeded random weights (no download). The cluster and a
single-process reference index are built once for the module; each build writes a new folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_photos

pytest.importorskip("distributed")

from revsearch import distributed as rd  # noqa: E402
from revsearch.errors import OptionalDependencyError, RevsearchError  # noqa: E402
from revsearch import Index  # noqa: E402

pytestmark = pytest.mark.slow

PARTITION = 4


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dask") / "photos"
    write_photos(root / "a", 12, start=0)
    write_photos(root / "b", 12, start=12, ext=".png")
    return root


@pytest.fixture(scope="module")
def client():
    with rd.dask_client("local", n_workers=2, threads_per_worker=1) as c:
        yield c


@pytest.fixture(scope="module")
def reference(photos: Path, resnet_random, tmp_path_factory: pytest.TempPathFactory) -> Index:
    """The same folder indexed by one process."""
    index, _ = Index.build(photos, tmp_path_factory.mktemp("ref") / "vec", resnet_random, progress=False)
    return index


def assert_same_index(a: Index, b: Index) -> None:
    assert a.paths == b.paths
    assert len(set(a.paths)) == len(a.paths)  # no duplicates
    np.testing.assert_allclose(np.asarray(a.vectors), np.asarray(b.vectors), atol=1e-4)
    rows_a, rows_b = a.rows, b.rows
    assert (rows_a["size"] == rows_b["size"]).all() and (rows_a["digest"] == rows_b["digest"]).all()
    assert a.spec == b.spec


def test_merged_index_equals_single_process(photos, client, reference, resnet_random, tmp_path):
    index, report = rd.build_index_dask(
        photos, tmp_path / "vec", "resnet50", weights=None, client=client, partition_size=PARTITION, progress=False
    )
    assert_same_index(index, reference)
    shards = index.manifest["shards"]
    assert report.workers == 2 and report.partitions == len(shards) > 2 and report.reused == 0
    assert len(report.report.added) == 24 and index.manifest["complete"] and index.manifest["built_with"] == "dask"
    # every shard is a partition, named by its content
    parts = rd.partition_files(index.paths, PARTITION)
    assert [s["count"] for s in shards] == [len(p) for p in parts]
    assert all(s["token"].startswith("d") for s in shards)
    # both worker processes did work, and built the same seeded model as this process
    assert len({t["pid"] for t in report.tasks}) == 2
    h = hashlib.sha256()
    for w in resnet_random.keras_model.get_weights():
        h.update(np.ascontiguousarray(w).tobytes())
    assert {t["model_hash"] for t in report.tasks} == {h.hexdigest()[:16]}

    # a rerun embeds nothing: every partition's shard is already there
    again, report2 = rd.build_index_dask(
        photos, tmp_path / "vec", "resnet50", weights=None, client=client, partition_size=PARTITION, progress=False
    )
    assert report2.reused == report2.partitions and len(report2.report.unchanged) == 24
    assert not report2.report.added and again.paths == index.paths


def test_killed_worker_loses_and_duplicates_nothing(photos, client, reference, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    vdir = tmp_path / "vec"

    def die_once(number: int, token: str) -> None:
        # the first attempt at partitions 1 and 3 leaves a half-written shard behind and kills its worker
        marker = markers / f"died-{number}"
        if number in (1, 3) and not marker.exists():
            marker.write_text(str(os.getpid()))
            sid = json.loads((vdir / "revsearch.json").read_text())["store_id"]  # committed before any task runs
            (vdir / f"vectors-{sid}-{token}.npy").write_bytes(b"\x93NUMPY half written")
            (vdir / f".rows-{sid}-{token}.npy.{sid}-0123abcd.tmp").write_bytes(b"junk")
            os._exit(1)

    index, report = rd.build_index_dask(
        photos, vdir, "resnet50", weights=None, client=client, partition_size=PARTITION, progress=False,
        _hook=die_once,
    )
    assert sorted(p.name for p in markers.iterdir()) == ["died-1", "died-3"]
    pid_of = {t["number"]: t["pid"] for t in report.tasks}
    for i in (1, 3):  # each was redone by another worker process than the one it killed
        assert pid_of[i] != int((markers / f"died-{i}").read_text())
    assert_same_index(index, reference)
    assert not [p for p in vdir.iterdir() if p.name.endswith(".tmp")]
    client.wait_for_workers(2, timeout=60)


def test_failed_partition_is_retried_then_a_rerun_resumes(photos, client, reference, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()

    def flaky(number: int, token: str) -> None:
        marker = markers / f"failed-{number}"
        if number == 0 and not marker.exists():  # fails once: the scheduler's retry succeeds
            marker.touch()
            raise RuntimeError("transient failure")

    index, _ = rd.build_index_dask(
        photos, tmp_path / "v1", "resnet50", weights=None, client=client, partition_size=PARTITION, progress=False,
        retries=1, _hook=flaky,
    )
    assert (markers / "failed-0").exists()
    assert_same_index(index, reference)

    def broken(number: int, token: str) -> None:
        if number == 2:
            raise RuntimeError("disk on fire")

    with pytest.raises(RevsearchError, match="run again to resume"):
        rd.build_index_dask(
            photos, tmp_path / "v2", "resnet50", weights=None, client=client, partition_size=PARTITION,
            progress=False, retries=0, _hook=broken,
        )
    failed = Index.open(tmp_path / "v2")  # no rows committed: only the empty, incomplete index that names the store id
    assert len(failed) == 0 and not failed.complete
    index, report = rd.build_index_dask(
        photos, tmp_path / "v2", "resnet50", weights=None, client=client, partition_size=PARTITION, progress=False
    )
    assert report.reused == report.partitions - 1
    assert_same_index(index, reference)


def test_distributed_search_equals_exact_search(client, reference):
    rng = np.random.default_rng(0)
    q = np.asarray(reference.vectors[:5]) + 0.05 * rng.standard_normal((5, reference.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for k, exclude, tasks in [(9, None, None), (5, [0, 3, 17], 3), (30, [1], 1)]:
        s, r = rd.search_dask(reference, q, k, client=client, exclude=exclude, tasks=tasks)
        se, re_ = reference.topk(q, k, exclude=exclude, exact=True)
        assert r.shape == re_.shape and (r == re_).all()
        np.testing.assert_allclose(s, se, rtol=0, atol=1e-6)


def test_search_over_many_shards(client, tmp_path):
    x = np.random.default_rng(1).standard_normal((500, 16)).astype(np.float32)
    spec = {"model": "test", "preprocessing": "none", "dim": 16, "weights": "none", "precision": "float32"}
    # in several shards, as a Dask build leaves them
    idx = Index.from_vectors(tmp_path / "v", x, [f"{i}.jpg" for i in range(500)], spec, shard_rows=70)
    assert len(idx.shards) == 8
    q = x[:4] / np.linalg.norm(x[:4], axis=1, keepdims=True)
    s, r = rd.search_dask(idx, q, 12, client=client, exclude=[0, 69, 70, 499])
    se, re_ = idx.topk(q, 12, exclude=[0, 69, 70, 499], exact=True)
    assert (r == re_).all()


def test_cli_index_and_search_on_the_cluster(photos, client, reference, tmp_path, capsys):
    from revsearch.cli import main

    address = client.scheduler.address
    vdir = str(tmp_path / "vec")
    argv = ["index", str(photos), vdir, "--model", "resnet50", "--weights", "none", "--dask", address,
            "--partition-size", str(PARTITION), "--precision", "float32", "-q"]  # as the reference
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "24 vectors" in out and "partitions" in out and "on 2 workers" in out
    assert_same_index(Index.open(vdir), reference)
    assert main(["search", str(photos / "a" / "img0003.jpg"), vdir, "-k", "3", "--dask", address]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].endswith("img0003.jpg")


def test_exclusions_apply_on_the_cluster_too(photos, client, tmp_path):
    vdir = tmp_path / "vec"
    index, _ = rd.build_index_dask(photos, vdir, "resnet50", weights=None, client=client, partition_size=PARTITION,
                                   progress=False, exclude=["b"])
    assert index.paths == [f"a/img{i:04d}.jpg" for i in range(12)] and index.manifest["exclude"] == ["b"]
    again, report = rd.build_index_dask(photos, vdir, "resnet50", weights=None, client=client,
                                        partition_size=PARTITION, progress=False)  # recorded: still excluded
    assert again.paths == index.paths and report.reused == report.partitions


def test_partitions_are_stable_when_files_are_added():
    names = [f"photos/img{i:05d}.jpg" for i in range(2000)]
    parts = rd.partition_files(names, 50)
    assert [i for p in parts for i in p] == list(range(2000))
    assert 20 < len(parts) < 80 and max(len(p) for p in parts) <= 100
    more = sorted(names + ["photos/img00100a.jpg"])
    before = {tuple(names[i] for i in p) for p in parts}
    after = {tuple(more[i] for i in p) for p in rd.partition_files(more, 50)}
    assert len(before - after) <= 2  # only the partition that got the new file (and rarely the next) changes
    spec = {"model": "m", "dim": 2}
    assert rd.partition_token(spec, ["a"], [(1, 2)]) == rd.partition_token(spec, ["a"], [(1, 2)])
    assert rd.partition_token(spec, ["a"], [(1, 2)]) != rd.partition_token(spec, ["a"], [(1, 3)])


def test_without_dask_the_error_says_how_to_install(monkeypatch, photos, tmp_path):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(OptionalDependencyError, match=r"pip install revsearch\[dask\]"):
        rd.build_index_dask(photos, tmp_path / "v", "resnet50", weights=None)
