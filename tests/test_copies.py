"""Mode copies of revsearch duplicates: the verifier on constructed pairs (each edit accepted, each
hard negative refused), the stored thumbnails through an update, a kill and a migration, both modes
through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

from revsearch.storage import store, thumbs  # noqa: E402
from revsearch.cli import main  # noqa: E402
from revsearch.duplicates import find_duplicates  # noqa: E402
from revsearch.duplicates.verify import verify_thumbnails  # noqa: E402
from revsearch.models.embedding import Embedder  # noqa: E402
from revsearch.media.edits import COPY_EDITS, burst_neighbours, jpeg_roundtrip  # noqa: E402
from revsearch import Index  # noqa: E402
from revsearch.storage.thumbs import StoredThumbnails, make_thumbnail  # noqa: E402

from conftest import write_photos  # noqa: E402


def _photo(name: str) -> Image.Image:
    return Image.fromarray(getattr(skdata, name)()).convert("RGB")


def _as_file(img: Image.Image, edit: str) -> Image.Image:
    """The copy as a user would have it: saved as a JPEG (the JPEG edits keep their own quality)."""
    return img if edit in ("jpeg_q30", "tiny_jpeg") else jpeg_roundtrip(img, 90)


@pytest.mark.parametrize("photo", ["astronaut", "chelsea"])
def test_the_verifier_accepts_every_edit(photo: str) -> None:
    # (tiny_jpeg is the weakest edit: on skimage's coffee its keypoints fit to 0.53 px, refused;
    # benchmarks/duplicates.py copies reports its recall)
    img = _photo(photo)
    ref = make_thumbnail(img)
    refused = {}
    for edit, fn in COPY_EDITS.items():
        v = verify_thumbnails(ref, make_thumbnail(_as_file(fn(img), edit)))
        if not v.accepted:
            refused[edit] = v.reason
        elif edit in ("rot90", "rot180", "rot270"):
            assert abs(((v.rotation % 360) - {"rot90": 90, "rot180": 180, "rot270": 270}[edit] + 180) % 360 - 180) < 5
        elif edit == "hflip":
            assert v.mirrored
    assert not refused, refused


@pytest.mark.parametrize("photo", ["astronaut", "coffee", "chelsea"])
def test_the_verifier_refuses_burst_neighbours(photo: str) -> None:
    for seed in range(3):
        f1, f2 = burst_neighbours(_photo(photo), seed=seed)
        v = verify_thumbnails(make_thumbnail(f1), make_thumbnail(f2))
        assert not v.accepted, (seed, v.to_dict())


def test_the_verifier_refuses_another_shot_and_unrelated_photos() -> None:
    left, right, _ = skdata.stereo_motorcycle()  # two cameras, one scene
    v = verify_thumbnails(make_thumbnail(Image.fromarray(left)), make_thumbnail(Image.fromarray(right)))
    assert not v.accepted and v.reason
    for a, b in [("astronaut", "coffee"), ("chelsea", "coffee"), ("rocket", "astronaut")]:
        assert not verify_thumbnails(make_thumbnail(_photo(a)), make_thumbnail(_photo(b))).accepted


def test_a_flat_image_falls_back_to_whole_image_comparison() -> None:
    y, x = np.mgrid[0:90, 0:120]
    flat = (100 + 80 * np.sin(x / 30.0) * np.cos(y / 25.0)).astype(np.uint8)  # smooth: few or no keypoints
    v = verify_thumbnails(flat, np.ascontiguousarray(np.rot90(flat)))
    assert v.accepted and v.method == "whole"
    assert not verify_thumbnails(flat, np.ascontiguousarray(255 - flat)).accepted


# ---------------------------------------------------------------------------- stored thumbnails


def _copies_dataset(folder: Path) -> dict[str, str]:
    """Three photos, and copies of the astronaut (turned, cropped, captioned); returns name -> original."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for name in ("astronaut", "coffee", "chelsea"):
        _photo(name).save(folder / f"{name}.jpg", quality=92)
        truth[f"{name}.jpg"] = name
    img = _photo("astronaut")
    for edit in ("rot90", "crop_70", "caption_band", "hflip"):
        _as_file(COPY_EDITS[edit](img), edit).save(folder / f"astronaut-{edit}.jpg", quality=92)
        truth[f"astronaut-{edit}.jpg"] = "astronaut"
    return truth


@pytest.mark.slow
def test_thumbnails_are_stored_by_the_update_and_survive_kill_and_migration(
    tmp_path: Path, resnet_random: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds, vec = tmp_path / "ds", tmp_path / "vec"
    truth = _copies_dataset(ds)
    idx, _ = Index.build(ds, vec, resnet_random, progress=False)
    assert idx.manifest.format_version == store.FORMAT_VERSION == 4
    st = StoredThumbnails(idx.snapshot)
    assert st.present.all() and len(st) == len(truth)
    t = st.get(idx.paths.index("coffee.jpg"))
    assert t is not None and max(t.shape) == thumbs.THUMB_SIDE and t.dtype == np.uint8
    report = find_duplicates(idx)  # mode copies, random weights: shortlist by rank, verified pairs only
    assert report.info["thumbnails_from_photos"] == 0  # never decodes the photos
    assert [sorted(f.relpath for f in g.files) for g in report.groups] == [sorted(k for k, v in truth.items() if v == "astronaut")]

    # a run killed while making thumbnails keeps those it committed; the next update makes the rest
    write_photos(ds, 4, start=10)
    calls = {"n": 0}
    real = thumbs.make_thumbnail

    def dying(*a, **k):  # noqa: ANN002, ANN003
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(thumbs, "make_thumbnail", dying)
    with pytest.raises(KeyboardInterrupt):  # killed after the vectors were committed, while making thumbnails
        Index.build(ds, vec, resnet_random, progress=False)
    monkeypatch.setattr(thumbs, "make_thumbnail", real)
    killed = Index.open(vec)
    assert len(killed) == len(truth) + 4 and (~StoredThumbnails(killed.snapshot).present).sum() == 4
    assert len(find_duplicates(killed).groups) == 1  # the missing thumbnails are made from the photos
    idx, _ = Index.build(ds, vec, resnet_random, progress=False)
    st = StoredThumbnails(idx.snapshot)
    assert st.present.all() and len(idx) == len(truth) + 4
    assert sorted(p.name for p in vec.glob("thumbs-*.npy")) == sorted(idx.manifest.thumb_files)

    # an index of format 2 (no thumbnails): duplicates makes them from the photos, an update stores them
    m = json.loads((vec / store.MANIFEST_NAME).read_text())
    m["format_version"] = 2
    m.pop("thumbs")
    (vec / store.MANIFEST_NAME).write_text(json.dumps(m))
    old = Index.open(vec)
    assert not StoredThumbnails(old.snapshot).present.any()
    report = find_duplicates(old)
    assert report.info["thumbnails_from_photos"] == len(old)
    assert len(report.groups) == 1 and len(report.groups[0]) == 5
    idx, _ = Index.build(ds, vec, resnet_random, progress=False)
    assert idx.manifest.format_version == 4 and idx.manifest.migrated_from == 2
    assert StoredThumbnails(idx.snapshot).present.all()
    assert find_duplicates(idx).info["thumbnails_from_photos"] == 0

    # thumbnails stored at another side (the first format-4 indexes: 128 px) are not read: made from the
    # photos, then replaced by the next update (their files removed)
    m = json.loads((vec / store.MANIFEST_NAME).read_text())
    before = list(m["thumbs"]["files"])
    m["thumbs"]["side"] = 128
    (vec / store.MANIFEST_NAME).write_text(json.dumps(m))
    old = Index.open(vec)
    assert old.manifest.thumb_side == 128 and not StoredThumbnails(old.snapshot).present.any()
    report = find_duplicates(old)
    assert report.info["thumbnails_from_photos"] == len(old) and len(report.groups) == 1
    idx, _ = Index.build(ds, vec, resnet_random, progress=False)
    assert idx.manifest.thumb_side == thumbs.THUMB_SIDE and StoredThumbnails(idx.snapshot).present.all()
    assert not set(before) & set(idx.manifest.thumb_files)
    assert sorted(p.name for p in vec.glob("thumbs-*.npy")) == sorted(idx.manifest.thumb_files)


def test_both_modes_through_the_cli(tmp_path: Path, resnet_random: Embedder, capsys: pytest.CaptureFixture) -> None:
    ds, vec = tmp_path / "ds", tmp_path / "vec"
    truth = _copies_dataset(ds)
    Index.build(ds, vec, resnet_random, progress=False)
    assert main(["duplicates", str(vec), "--json", "-q", "--plot", str(tmp_path / "why.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "copies" and out["threshold"] is None  # random weights: no calibration, by rank
    groups = [sorted([g["keep"]["relpath"]] + [d["relpath"] for d in g["duplicates"]]) for g in out["groups"]]
    assert groups == [sorted(k for k, v in truth.items() if v == "astronaut")]
    assert all(m[2]["accepted"] for m in out["groups"][0]["matches"])
    assert (tmp_path / "why.png").stat().st_size > 0
    assert main(["duplicates", str(vec), "--mode", "similar", "--threshold", "0.999999", "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == "similar" and out["threshold"] == pytest.approx(0.999999) and out["groups"] == []


def test_copies_against_another_collection(tmp_path: Path, resnet_random: Embedder) -> None:
    new, archive = tmp_path / "new", tmp_path / "archive"
    new.mkdir()
    archive.mkdir()
    img = _photo("astronaut")
    img.save(archive / "astronaut.jpg", quality=92)
    _photo("coffee").save(archive / "coffee.jpg", quality=92)
    _as_file(COPY_EDITS["rot270"](img), "rot270").save(new / "turned.jpg", quality=92)
    _as_file(COPY_EDITS["crop_70"](img), "crop_70").save(new / "cropped.jpg", quality=92)
    _photo("chelsea").save(new / "cat.jpg", quality=92)
    a, _ = Index.build(new, tmp_path / "vn", resnet_random, progress=False)
    b, _ = Index.build(archive, tmp_path / "va", resnet_random, progress=False)
    report = find_duplicates(a, against=b)
    assert len(report.groups) == 1
    g = report.groups[0]
    assert {(f.relpath, f.collection) for f in g.files} == {
        ("astronaut.jpg", "against"), ("turned.jpg", "index"), ("cropped.jpg", "index"),
    }
    assert {f.relpath for _, f in report.movable()} <= {"turned.jpg", "cropped.jpg"}


def test_a_damaged_thumbnail_file_is_made_again(tmp_path: Path, resnet_random: Embedder) -> None:
    ds, vec = tmp_path / "ds", tmp_path / "vec"
    truth = _copies_dataset(ds)
    Index.build(ds, vec, resnet_random, progress=False)
    for f in vec.glob("thumbs-*.npy"):
        f.write_bytes(b"hand-edited")
    idx = Index.open(vec)  # the vectors are intact: the index opens and searches
    report = find_duplicates(idx)
    assert report.info["thumbnails_from_photos"] == len(truth) and len(report.groups) == 1
    idx, _ = Index.build(ds, vec, resnet_random, progress=False)  # the update stores them again
    assert StoredThumbnails(idx.snapshot).present.all()
    assert find_duplicates(idx).info["thumbnails_from_photos"] == 0


def test_the_shortlist_uses_the_indexs_approximate_index(tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    from revsearch.retrieval.ann import build_ann
    from revsearch.duplicates.candidates import knn_pairs

    rng = np.random.default_rng(0)
    n, d = 4000, 64
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[1::2] = x[0::2] + 0.05 * rng.standard_normal((n // 2, d)).astype(np.float32)  # planted pairs (2i, 2i+1)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    spec = {"model": "synthetic", "preprocessing": "none", "dim": d, "weights": "none", "precision": "float32"}
    Index.from_vectors(tmp_path / "v", x, [f"{i}.jpg" for i in range(n)], spec)
    build_ann(tmp_path / "v", kind="ivfpq", nlist=32, pq_bytes=8, target_recall=None, progress=False)
    info: dict = {}
    pairs, scores = knn_pairs(Index.open(tmp_path / "v"), 3, None, info=info)
    assert info["method"] == "ann"
    found = set(map(tuple, pairs.tolist()))
    assert sum((i, i + 1) in found for i in range(0, n, 2)) >= 0.99 * (n // 2)
    assert (pairs[:, 0] < pairs[:, 1]).all() and len(found) == len(pairs)
    np.testing.assert_allclose(scores, np.einsum("ij,ij->i", x[pairs[:, 0]], x[pairs[:, 1]]), atol=1e-4)
