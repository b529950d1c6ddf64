"""Tests for revsearch.evaluate: class retrieval metrics, layouts, near-duplicate edits, the CLI."""

from __future__ import annotations

import bz2
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from revsearch import evaluate as ev
from revsearch.cli import main
from revsearch.errors import DatasetLayoutError
from revsearch.evaluate import (
    EDITS,
    class_labels,
    evaluate_index,
    evaluate_near_duplicates,
    make_edits,
    near_duplicate_metrics,
    retrieval_metrics,
)
from revsearch import Index

from conftest import make_photo, write_photos

# ---------------------------------------------------------------------------- hand-made vectors
# Unit vectors on a circle. Rankings (nearest first) worked out by hand, k = 2:
#   q0 a  0deg : 1(12) 2(20) 3(80) 4(90) 5     rel a: 0 1 0 0  -> P@2 1/2, AP 1/2,          R@1 0
#   q1 b 12deg : 2(8) 0(12) 3(68) 4(78) 5      rel b: 0 0 1 1  -> P@2 0,   AP (1/3+2/4)/2, R@1 0
#   q2 a 20deg : 1(8) 0(20) 3(60) 4(70) 5      rel a: 0 1 0 0  -> P@2 1/2, AP 1/2,          R@1 0
#   q3 b 80deg : 4(10) 2(60) 1(68) 0(80) 5     rel b: 1 0 1 0  -> P@2 1/2, AP (1+2/3)/2,   R@1 1
#   q4 b 90deg : 3(10) 2(70) 1(78) 0(90) 5     rel b: 1 0 1 0  -> P@2 1/2, AP (1+2/3)/2,   R@1 1
# row 5 (class c, 200deg) is alone in its class: not a query, and last in every ranking.
ANGLES = [0.0, 12.0, 20.0, 80.0, 90.0, 200.0]
LABELS = ["a", "b", "a", "b", "b", "c"]
AP = [1 / 2, (1 / 3 + 2 / 4) / 2, 1 / 2, (1 + 2 / 3) / 2, (1 + 2 / 3) / 2]
P2 = [1 / 2, 0, 1 / 2, 1 / 2, 1 / 2]
R1 = [0, 0, 0, 1, 1]
NAMES = ["0001_000001.jpg", "0002_000002.jpg", "0001_000003.jpg", "0002_000004.jpg", "0002_000005.jpg", "0003_000006.jpg"]


def circle(angles: list[float]) -> np.ndarray:
    a = np.deg2rad(np.asarray(angles))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)


def check_hand_report(rep: ev.ClassRetrievalReport) -> None:
    assert rep.k == 2
    assert rep.n_images == 6 and rep.n_queries == 5 and rep.n_classes == 2
    assert rep.precision_at_k == pytest.approx(np.mean(P2))  # 0.4
    assert rep.mean_average_precision == pytest.approx(np.mean(AP))  # 0.616667
    assert rep.recall_at_1 == pytest.approx(0.4)
    a, b = (rep.per_class[c] for c in (("a", "b") if "a" in rep.per_class else ("0001", "0002")))
    assert (a.n_images, b.n_images) == (2, 3)
    assert a.precision_at_k == pytest.approx(0.5) and b.precision_at_k == pytest.approx(1 / 3)
    assert a.average_precision == pytest.approx(0.5)
    assert b.average_precision == pytest.approx((AP[1] + AP[3] + AP[4]) / 3)
    assert a.recall_at_1 == 0 and b.recall_at_1 == pytest.approx(2 / 3)


def test_metrics_on_hand_made_vectors() -> None:
    rep = retrieval_metrics(circle(ANGLES), LABELS, k=2, paths=NAMES)
    check_hand_report(rep)
    assert rep.excluded == ["0003_000006.jpg"]
    assert rep.per_class.keys() == {"a", "b"}


def test_metrics_over_shards_and_small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev, "_SCORE_BLOCK", 7)  # one query per block
    v = circle(ANGLES)
    rep = retrieval_metrics([v[:2], v[2:5], v[5:]], LABELS, k=2)
    check_hand_report(rep)
    assert rep.excluded == ["5"]


def test_metrics_k1_equals_recall_at_1_and_k_is_capped() -> None:
    v = circle(ANGLES)
    assert retrieval_metrics(v, LABELS, k=1).precision_at_k == pytest.approx(0.4)
    capped = retrieval_metrics(v, LABELS, k=50)
    assert capped.k == 5
    assert capped.precision_at_k == pytest.approx(np.mean([1, 2, 1, 2, 2]) / 5)  # all class mates found


def test_metrics_perfect_and_errors() -> None:
    v = circle([0, 1, 2, 90, 91, 92])
    rep = retrieval_metrics(v, list("aaabbb"), k=2)
    assert (rep.precision_at_k, rep.mean_average_precision, rep.recall_at_1) == (1.0, 1.0, 1.0)
    with pytest.raises(DatasetLayoutError, match="no class has two images"):
        retrieval_metrics(v, list("abcdef"), k=2)
    with pytest.raises(ValueError, match="labels must have shape"):
        retrieval_metrics(v, list("aab"), k=2)


# ---------------------------------------------------------------------------- layouts


def test_layout_folders() -> None:
    labels, layout = class_labels(["daisy/image_0001.jpg", "daisy/image_0002.jpg", "tulip/x.png", "tulip/y.jpg"])
    assert layout == "folder" and labels == ["daisy", "daisy", "tulip", "tulip"]
    labels, _ = class_labels(["a/b/1.jpg", "a/b/2.jpg", "a/c/3.jpg"])
    assert labels == ["a/b", "a/b", "a/c"]


def test_layout_prefix_like_the_original() -> None:
    labels, layout = class_labels(NAMES)
    assert layout == "prefix"
    assert labels == ["0001", "0002", "0001", "0002", "0002", "0003"]
    # one folder holding prefixed names: the folder is a single class, so the prefixes are used
    labels, layout = class_labels(["imagenet_resized/" + n for n in NAMES])
    assert layout == "prefix" and labels[0] == "imagenet_resized/0001"


def test_layout_flat_folder_without_classes() -> None:
    with pytest.raises(DatasetLayoutError, match="flat folder") as e:
        class_labels(["img0000.jpg", "img0001.jpg", "photo.png"])
    assert "CLASS_NUMBER" in str(e.value) and "one folder per class" in str(e.value)
    with pytest.raises(DatasetLayoutError, match="same prefix"):
        class_labels(["IMG_0001.jpg", "IMG_0002.jpg"])
    with pytest.raises(DatasetLayoutError, match="one folder"):
        class_labels(["a/x.jpg", "a/y.jpg"], layout="folder")
    with pytest.raises(DatasetLayoutError, match="single image"):
        class_labels(["a/x.jpg", "b/y.jpg"], layout="folder")
    with pytest.raises(DatasetLayoutError, match="not in a class folder"):
        class_labels(["a/x.jpg", "b/y.jpg", "z.jpg"], layout="folder")


# ---------------------------------------------------------------------------- indexes without a model


def hand_index(tmp_path: Path, names: list[str], vectors: np.ndarray, folder: str = "vectors") -> Index:
    spec = {"model": "hand", "preprocessing": "none", "dim": int(vectors.shape[1]), "weights": "none", "precision": "float32"}
    (tmp_path / "data").mkdir(exist_ok=True)
    return Index.from_vectors(tmp_path / folder, vectors, names, spec, dataset_dir=tmp_path / "data")


def test_evaluate_index_prefix_layout(tmp_path: Path) -> None:
    index = hand_index(tmp_path, NAMES, circle(ANGLES))
    rep = evaluate_index(index, tmp_path / "data", k=2)
    check_hand_report(rep)
    assert rep.layout == "prefix" and rep.per_class.keys() == {"0001", "0002"}
    assert evaluate_index(index.folder, k=2).to_dict() == rep.to_dict()


def test_evaluate_index_flat_folder_raises(tmp_path: Path) -> None:
    index = hand_index(tmp_path, [f"img{i:04d}.jpg" for i in range(6)], circle(ANGLES))
    with pytest.raises(DatasetLayoutError, match="no class structure"):
        evaluate_index(index)


def write_legacy(folder: Path, names: list[str], vectors: np.ndarray) -> None:
    """Vector files as the original project wrote them: {name: (100352,) float32} per .pbz2."""
    folder.mkdir(parents=True)
    for i, (name, v) in enumerate(zip(names, vectors)):
        grid = np.zeros((49, 2048), np.float32)
        grid[:, : v.shape[0]] = v  # every position the same: the 49-position mean is v
        with bz2.BZ2File(folder / f"{i + 1}.pbz2", "wb") as f:
            pickle.dump({name: grid.reshape(-1)}, f)


def test_evaluate_imported_legacy_index(tmp_path: Path) -> None:
    from revsearch.legacy import import_legacy

    write_legacy(tmp_path / "legacy", NAMES, circle(ANGLES))
    (tmp_path / "imagenet_resized").mkdir()
    index, _ = import_legacy(tmp_path / "legacy", tmp_path / "vec", dataset_dir=tmp_path / "imagenet_resized", progress=False)
    check_hand_report(evaluate_index(index, tmp_path / "imagenet_resized", k=2))


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_evaluate_json_and_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = hand_index(tmp_path, NAMES, circle(ANGLES))
    code, out, _ = run_cli(["evaluate", str(tmp_path / "data"), str(index.folder), "-k", "2", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["mode"] == "classes" and data["model"] == "hand" and data["k"] == 2
    assert data["precision_at_k"] == pytest.approx(0.4)
    assert data["mean_average_precision"] == pytest.approx(np.mean(AP), abs=1e-6)
    assert data["recall_at_1"] == pytest.approx(0.4)
    assert data["per_class"]["0002"]["precision_at_k"] == pytest.approx(1 / 3, abs=1e-6)
    assert data["excluded"] == ["0003_000006.jpg"]
    code, out, _ = run_cli(["evaluate", str(tmp_path / "data"), str(index.folder), "-k", "2"], capsys)
    assert code == 0 and "precision@2 0.4000" in out and "0002" in out


def test_cli_evaluate_flat_folder_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = hand_index(tmp_path, [f"img{i:04d}.jpg" for i in range(6)], circle(ANGLES))
    code, out, err = run_cli(["evaluate", str(tmp_path / "data"), str(index.folder), "--json"], capsys)
    assert code == 1 and out == ""
    assert "no class structure" in err and "CLASS_NUMBER" in err


# ---------------------------------------------------------------------------- near-duplicate edits


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(make_photo(7, size=(200, 120)))


def test_edits_are_what_they_say(photo: Image.Image) -> None:
    out = make_edits(photo)
    assert list(out) == list(EDITS)
    a = np.asarray(photo).astype(int)
    for name, img in out.items():
        assert img.mode == "RGB", name
    assert out["resize_50"].size == (100, 60)
    assert out["crop_80"].size == (160, 96)
    assert np.array_equal(np.asarray(out["crop_80"]), a[12:108, 20:180])
    assert out["rotate_10"].size == photo.size and np.asarray(out["rotate_10"])[0, 0].sum() == 0  # black corner
    g = np.asarray(out["greyscale"]).astype(int)
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    assert np.array_equal(np.asarray(out["hflip"]), a[:, ::-1])
    assert np.asarray(out["brightness"]).mean() > a.mean() + 10
    c = np.asarray(out["colour"]).astype(int)
    assert c[..., 0].mean() > a[..., 0].mean() and c[..., 2].mean() < a[..., 2].mean()
    lb = out["letterbox"]
    assert lb.size == (213, 120)  # 16:9
    lba = np.asarray(lb).astype(int)
    assert lba[:, :6].max() == 0 and lba[:, 206:].max() == 0 and np.array_equal(lba[:, 6:206], a)  # black bars
    j = np.asarray(out["jpeg_q30"]).astype(int)
    assert j.shape == a.shape and 0 < np.abs(j - a).mean() < 20
    t = np.asarray(out["text"]).astype(int)
    assert t.shape == a.shape and (t != a).any(axis=-1).mean() > 0.01
    assert list(make_edits(np.asarray(photo), ["hflip", "greyscale"])) == ["hflip", "greyscale"]
    with pytest.raises(ValueError, match="unknown edit"):
        make_edits(photo, ["sepia"])


def test_near_duplicate_metrics_by_hand() -> None:
    found = np.array([[3, 1, 2], [1, 3, 0], [2, 0, 1], [4, 4, 4]])
    rep = near_duplicate_metrics(found, [3, 3, 1, 2], ["hflip", "hflip", "jpeg_q30", "jpeg_q30"], k=2, n_images=5)
    assert rep.per_edit["hflip"].recall_at_1 == 0.5 and rep.per_edit["hflip"].recall_at_k == 1.0
    assert rep.per_edit["jpeg_q30"].recall_at_1 == 0.0 and rep.per_edit["jpeg_q30"].recall_at_k == 0.0
    assert list(rep.per_edit) == ["jpeg_q30", "hflip"]  # EDITS order
    assert (rep.recall_at_1, rep.recall_at_k, rep.k, rep.n_originals) == (0.25, 0.5, 2, 3)


class MeanColourEmbedder:
    """A stand-in model: the image's mean colour (centred), so a mirror image embeds exactly the same."""

    spec = {"model": "mean-colour", "preprocessing": "none", "dim": 3, "weights": "none", "precision": "float32"}

    def embed(self, images: list[Any], *, batch_size: int = 32) -> np.ndarray:
        from revsearch.embedding import l2_normalize
        from revsearch.images import load_image

        return l2_normalize(np.stack([np.asarray(load_image(i), np.float32).mean((0, 1)) - 127 for i in images]))


def test_near_duplicate_mode_reports_each_edit(tmp_path: Path) -> None:
    files = write_photos(tmp_path / "photos", 6, ext=".png")
    emb = MeanColourEmbedder()
    names = [f.name for f in files]
    index = Index.from_vectors(tmp_path / "vec", emb.embed(files), names, emb.spec, dataset_dir=tmp_path / "photos")
    rep = evaluate_near_duplicates(index, embedder=emb, k=3, sample=4, progress=False)  # type: ignore[arg-type]
    assert list(rep.per_edit) == list(EDITS)
    assert rep.n_originals == 4 and rep.n_images == 6 and rep.k == 3
    assert all(s.n == 4 and 0 <= s.recall_at_1 <= s.recall_at_k <= 1 for s in rep.per_edit.values())
    assert rep.per_edit["hflip"].recall_at_1 == 1.0  # the mean colour of a mirror image is the same
    data = rep.to_dict()
    assert data["mode"] == "near-duplicates" and set(data["per_edit"]) == set(EDITS)
    few = evaluate_near_duplicates(index, embedder=emb, rows=[0, 5], edits=["hflip"], progress=False)  # type: ignore[arg-type]
    assert list(few.per_edit) == ["hflip"] and few.n_originals == 2 and few.recall_at_1 == 1.0


# ---------------------------------------------------------------------------- with real weights


def write_classes(root: Path, n_classes: int = 3, per_class: int = 3) -> None:
    """One folder per class; the images of a class are near-identical (small brightness shifts)."""
    for c in range(n_classes):
        base = make_photo(100 + c).astype(np.int16)
        (root / f"class{c}").mkdir(parents=True)
        for j in range(per_class):
            img = np.clip(base + (j - 1) * 6, 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / f"class{c}" / f"img{j}.jpg", quality=92)


@pytest.mark.slow
def test_real_model_class_and_near_duplicate_modes(tmp_path: Path, mobilenet: Any, capsys: pytest.CaptureFixture[str]) -> None:
    ds = tmp_path / "ds"
    write_classes(ds)
    index, _ = Index.build(ds, tmp_path / "vec", mobilenet, progress=False)
    code, out, _ = run_cli(["evaluate", str(ds), str(index.folder), "-k", "2", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["layout"] == "folder" and data["n_classes"] == 3 and data["n_queries"] == 9
    assert (data["precision_at_k"], data["mean_average_precision"], data["recall_at_1"]) == (1.0, 1.0, 1.0)
    assert all(c["precision_at_k"] == 1.0 for c in data["per_class"].values())


    photos = tmp_path / "photos"
    write_photos(photos, 8)
    index, _ = Index.build(photos, tmp_path / "vec2", mobilenet, progress=False)
    code, out, _ = run_cli(
        ["evaluate", str(photos), str(index.folder), "--near-duplicates", "--sample", "0", "-k", "3", "--json"], capsys
    )
    assert code == 0
    nd = json.loads(out)
    assert nd["mode"] == "near-duplicates" and nd["n_originals"] == 8 and list(nd["per_edit"]) == list(EDITS)
    assert all(e["n"] == 8 and e["recall_at_1"] <= e["recall_at_k"] for e in nd["per_edit"].values())
    for easy in ("jpeg_q30", "resize_50", "hflip", "brightness"):
        assert nd["per_edit"][easy]["recall_at_1"] == 1.0, easy
    code, out, _ = run_cli(["evaluate", str(photos), str(index.folder), "--near-duplicates", "--sample", "3", "-q", "-k", "2"], capsys)
    assert code == 0 and "jpeg_q30" in out and "recall@2" in out and "3 originals x 10 edits" in out


# ---------------------------------------------------------------------------- the default chosen by the benchmark


def test_default_is_crop_and_avg_except_for_the_original_pipeline(tmp_path: Path) -> None:
    from revsearch.embedding import Embedder, preprocessing_options

    for name in ("mobilenet", "resnet50"):
        e = Embedder(name, weights=None)
        assert (e.fit, e.pooling, e.input_size) == ("crop", "avg", 224)  # chosen by benchmarks/quality.py's rule
        assert e.preprocessing == f"crop:rgb(0,0,0)/resize:224:bicubic/keras.applications.{name}.preprocess_input"
        assert preprocessing_options(e.preprocessing) == {"fit": "crop", "fill": (0, 0, 0), "pooling": "avg",
                                                          "resolution": 224}
    gem = Embedder("mobilenet", weights=None, pooling="gem")  # the earlier default, still recorded as such
    assert gem.preprocessing.endswith("/pool:gem:p=3") and preprocessing_options(gem.preprocessing)["pooling"] == "gem"
    seed = Embedder("resnet50-seed", weights=None)
    assert (seed.fit, seed.pooling) == ("pad", "avg")
    assert seed.preprocessing == "pad:rgb(0,0,0)/resize:224:bicubic/raw-bgr-0-255"  # as legacy imports record it
    old = Embedder("mobilenet", weights=None, fit="pad", pooling="avg")
    assert old.preprocessing == "pad:rgb(0,0,0)/resize:224:bicubic/keras.applications.mobilenet.preprocess_input"
    with pytest.raises(ValueError, match="pooling"):
        Embedder("mobilenet", pooling="sum")
    # an index records fit, fill and pooling; its own embedder is rebuilt with them
    options: list[dict[str, Any]] = [{"fit": "pad", "pooling": "avg"}, {"fit": "pad", "fill": "edge", "pooling": "max"}, {},
                                     {"fit": "crop", "pooling": "gem"}, {"scales": (224, 320)}]
    for i, opts in enumerate(options):
        spec = Embedder("mobilenet", weights=None, **opts).spec
        index = Index.from_vectors(tmp_path / f"v{i}", np.ones((2, 1024)), ["a.jpg", "b.jpg"], spec)
        assert index.embedder().spec == spec  # built lazily: no model needed


@pytest.mark.slow
def test_gem_model_matches_numpy_gem() -> None:
    import keras

    from revsearch.embedding import GEM_P, Embedder

    e = Embedder("mobilenet", weights=None, pooling="gem")
    x = e.normalize_batch(np.stack([e.prepare(make_photo(i)) for i in range(2)]))
    base = e.keras_model.get_layer("conv_pw_13_relu").output
    fmap = np.asarray(keras.Model(e.keras_model.input, base).predict_on_batch(x))
    gem = np.power(np.power(np.maximum(fmap, 1e-6), GEM_P).mean(axis=(1, 2)), 1 / GEM_P)
    np.testing.assert_allclose(np.asarray(e.keras_model.predict_on_batch(x)), gem, rtol=1e-4, atol=1e-6)
