"""CLIP models and text queries (revsearch.clip, TextQuery in revsearch.operations, search_text), with a tiny
random-weight CLIP.

The tiny model (tests/tinyclip.py) is made of keras-hub's own CLIP classes and saved as a local
preset folder, then loaded by revsearch exactly as a user's preset is: ``weights=<folder>``, through
``CLIPBackbone`` / ``CLIPImageConverter`` / ``CLIPPreprocessor.from_preset``. Its vectors mean
nothing; the tests check the plumbing: tokens, preprocessing, one shared space, the index round trip,
every front end, and the errors.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photo, write_photos
from tinyclip import DIM, LENGTH, OPENAI_MEAN, OPENAI_STD, SIGLIP_LENGTH, SIZE, build_preset, build_siglip_preset, vocabulary

pytest.importorskip("keras_hub")

from revsearch import (  # noqa: E402
    Embedder, Index, ModelMismatchError, TextQuery, WeightsUnavailableError, cli, open_index, reverse_image_search,
    search_index, search_text,
)
from revsearch.clip import TEXT_MODELS, ClipEmbedder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def preset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_preset(tmp_path_factory.mktemp("tinyclip") / "tiny_clip")


@pytest.fixture(scope="module")
def clip(preset: Path) -> Embedder:
    return Embedder("clip-vit-b32", weights=preset, backend="keras")


@pytest.fixture(scope="module")
def clip_index(tmp_path_factory: pytest.TempPathFactory, preset: Path) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("clipindex")
    ds = base / "photos"
    write_photos(ds, 6)
    index, report = Index.build(ds, base / "vectors", Embedder("clip-vit-b32", weights=preset), progress=False)
    assert len(report.added) == 6 and len(index) == 6
    return ds, base / "vectors"


def test_import_revsearch_loads_no_keras_hub() -> None:
    code = (
        "import sys, revsearch, revsearch.clip, revsearch.operations, revsearch.api\n"
        "e = revsearch.Embedder('clip-vit-b32', weights=None)\n"
        "bad = [m for m in ('keras_hub', 'keras', 'tensorflow', 'openvino') if m in sys.modules]\n"
        "print(type(e).__name__, e.dim, e.input_size, bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ClipEmbedder", "512", "224", "[]"]


def test_catalogue_records_preset_constants_and_size() -> None:
    e = Embedder("CLIP-ViT-B32", weights=None)
    assert isinstance(e, ClipEmbedder) and e.name == "clip-vit-b32"
    spec = e.spec
    assert spec["preset"] == "clip_vit_base_patch32" == TEXT_MODELS["clip-vit-b32"].preset
    assert spec["dim"] == 512 and e.input_size == 224
    scale = [1 / 255 / s for s in OPENAI_STD]
    offset = [-m / s for m, s in zip(OPENAI_MEAN, OPENAI_STD)]
    np.testing.assert_allclose(e.scale, scale, rtol=1e-7)
    np.testing.assert_allclose(e.offset, offset, rtol=1e-7)
    assert spec["preprocessing"].startswith("crop:rgb(0,0,0)/resize:224:bicubic/keras_hub.CLIPImageConverter:scale=(")
    assert spec["weights"] == "none"
    assert Embedder("clip-vit-b32").spec["weights"] == "keras-hub:clip_vit_base_patch32"  # lazy: nothing downloaded
    with pytest.raises(ValueError, match="224x224"):
        Embedder("clip-vit-b32", weights=None, resolution=320)
    with pytest.raises(ValueError, match="pools itself"):
        Embedder("clip-vit-b32", weights=None, pooling="gem")


def test_local_preset_is_read_from_its_files(clip: Embedder, preset: Path) -> None:
    assert isinstance(clip, ClipEmbedder)
    assert (clip.dim, clip.input_size) == (DIM, SIZE)
    assert clip.spec["preset"] == str(preset.resolve())
    assert clip.spec["weights"].startswith("file:tiny_clip:sha256:")
    np.testing.assert_allclose(clip.scale, [1 / 255 / s for s in OPENAI_STD], rtol=1e-6)


def test_tokenizer_known_tokens_padding_and_truncation(clip: ClipEmbedder) -> None:
    v = vocabulary()
    start, end = v["<|startoftext|>"], v["<|endoftext|>"]
    ids = clip.tokenize("a red car")
    assert ids.shape == (1, LENGTH) and clip.sequence_length == LENGTH
    assert ids[0].tolist() == [start, v["a</w>"], v["red</w>"], v["car</w>"], end, end, end, end]
    assert clip.tokenize("  A  RED\tcar ").tolist() == ids.tolist()  # lower case, spaces collapsed
    long = clip.tokenize("the dog on the red car at the dog")
    assert long.shape == (1, LENGTH) and long[0, 0] == start and long[0, -1] == end
    assert long[0, 1:3].tolist() == [v["the</w>"], v["dog</w>"]]
    unknown = clip.tokenize("xyz")[0].tolist()  # letters only: still encodable
    assert unknown[:4] == [start, v["x"], v["y"], v["z</w>"]]
    with pytest.raises(ValueError, match="empty"):
        clip.embed_text("   ")


def test_prepare_centre_crops_and_resizes(clip: ClipEmbedder) -> None:
    square = make_photo(3, (96, 96))
    wide = np.zeros((96, 192, 3), np.uint8)
    wide[:, 48:144] = square
    a, b = clip.prepare(wide), clip.prepare(square)
    assert a.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(a, b)


def test_towers_match_keras_hub_and_share_one_space(clip: ClipEmbedder, preset: Path) -> None:
    import keras
    import keras_hub

    images = [make_photo(i, (SIZE, SIZE)) for i in range(3)]
    texts = ["a red car at night", "a dog on the beach"]
    img = clip.embed(images)
    txt = clip.embed_text(texts)
    assert img.shape == (3, DIM) and txt.shape == (2, DIM)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)
    # the same numbers straight from keras-hub's classes
    backbone = keras_hub.models.CLIPBackbone.from_preset(str(preset))
    converter = keras_hub.layers.CLIPImageConverter.from_preset(str(preset))
    pre = keras_hub.models.CLIPPreprocessor.from_preset(str(preset), sequence_length=LENGTH)
    x = converter(np.stack(images).astype("float32"))
    ref_img = keras.ops.convert_to_numpy(backbone.get_vision_embeddings(x))
    ids = pre({"prompts": texts, "images": None})["token_ids"]
    ref_txt = keras.ops.convert_to_numpy(backbone.get_text_embeddings(ids))
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(img, unit(ref_img), atol=2e-4)
    np.testing.assert_allclose(txt, unit(ref_txt), atol=2e-4)
    assert abs(float(txt[0] @ txt[1])) < 0.9999  # the two sentences land at different points


def test_openvino_image_tower_agrees_with_keras(clip: ClipEmbedder, preset: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    ov = Embedder("clip-vit-b32", weights=preset, backend="openvino", precision="float32", cache_dir=tmp_path)
    images = [make_photo(i, (50, 40)) for i in range(4)]
    np.testing.assert_allclose(ov.embed(images), clip.embed(images), atol=1e-4)
    assert ov.spec["weights"] == clip.spec["weights"] and ov.spec["preprocessing"] == clip.spec["preprocessing"]
    assert ov.precision == "float32"  # the CPU rule's bfloat16 was measured on CNNs only: CLIP keeps float32
    bf16 = ov.variant(precision="bfloat16")  # the precision the backend offers applies to the image tower too
    assert bf16.precision == "bfloat16" and bf16.spec["preprocessing"] == clip.spec["preprocessing"]
    cos = np.sum(bf16.embed(images) * clip.embed(images), axis=1)
    assert cos.min() > 0.98, cos


def test_index_round_trip_image_and_text(clip_index: tuple[Path, Path]) -> None:
    ds, vec = clip_index
    index = Index.open(vec)
    assert index.spec["model"] == "clip-vit-b32" and index.spec["text"] == "keras_hub.CLIPPreprocessor"
    emb = index.embedder()  # rebuilt from the record: the preset folder kept in the manifest
    assert isinstance(emb, ClipEmbedder)
    by_image = index.search(ds / "img0002.jpg", 3, expand=False)  # a plain cosine: the photo itself scores 1
    assert by_image[0].relpath == "img0002.jpg" and by_image[0].score == pytest.approx(1.0, abs=1e-4)
    assert index.search(ds / "img0002.jpg", 3)[0].relpath == "img0002.jpg"  # expanded (the default) too
    results = search_text("a red car at night", vec, k=6)
    expected = index.vectors @ emb.embed_text("a red car at night")
    order = np.argsort(-expected, kind="stable")
    assert [m.row for m in results] == [int(r) for r in order]
    np.testing.assert_allclose(results.scores, expected[order], atol=1e-5)
    # the operations layer: a text query is one more kind of query
    same = search_index(open_index(vec), TextQuery("a red car at night"), k=6)
    assert [m.row for m in same] == [m.row for m in results]
    expanded = search_index(vec, TextQuery("a red car at night"), k=3, qe=2)  # search options apply to words too
    assert len(expanded) == 3
    with pytest.raises(ValueError, match="rotations"):
        search_index(vec, TextQuery("a red car"), rotations=True)
    under = search_text("a dog", vec, k=6, exclude=["img0000.jpg"])
    assert "img0000.jpg" not in [m.relpath for m in under] and len(under) == 5


def test_one_call_api_takes_text(clip_index: tuple[Path, Path], preset: Path, tmp_path: Path) -> None:
    ds, vec = clip_index
    res = reverse_image_search(None, None, None, vec, text="a red car", k=3, save_path=tmp_path / "grid.png")
    assert [m.row for m in res] == [m.row for m in search_text("a red car", vec, k=3)]
    assert (tmp_path / "grid.png").stat().st_size > 0 and res.figure is not None
    assert "a red car" in res.figure._suptitle.get_text()
    by_image = reverse_image_search(ds / "img0001.jpg", None, None, vec, k=2)  # image queries still work
    assert by_image[0].relpath == "img0001.jpg"
    # a new index searched by words: built with CLIP (weights: the local preset)
    fresh = reverse_image_search(None, "clip-vit-b32", ds, tmp_path / "v2", True, text="a dog", weights=preset, k=2, progress=False)
    assert fresh.report is not None and len(fresh.report.added) == 6 and len(fresh) == 2
    with pytest.raises(ValueError, match="not both"):
        reverse_image_search(ds / "img0001.jpg", None, None, vec, text="a dog")
    with pytest.raises(ValueError, match="query image"):
        reverse_image_search(None, None, None, vec)


def test_text_query_on_a_cnn_index_is_one_clear_line(tmp_path: Path) -> None:
    spec = Embedder("resnet50", weights=None).spec
    Index.from_vectors(tmp_path / "cnn", np.eye(3, spec["dim"], dtype=np.float32), ["a.jpg", "b.jpg", "c.jpg"], spec)
    with pytest.raises(ModelMismatchError) as info:
        search_text("a red car", tmp_path / "cnn")
    message = str(info.value)
    assert "\n" not in message and "resnet50, an image model" in message and "--model clip-vit-b32" in message
    with pytest.raises(ModelMismatchError, match="image model"):
        reverse_image_search(None, None, None, tmp_path / "cnn", text="a red car")


def test_offline_preset_gives_one_line_saying_where_and_what(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # no network: every request goes to a closed local port (as on a machine without internet)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("no_proxy", "")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    emb = ClipEmbedder("clip-vit-b32", backend="keras")
    with pytest.raises(WeightsUnavailableError) as info:
        emb.embed(make_photo(0, (40, 40)))
    message = str(info.value)
    assert "\n" not in message
    for part in ("clip_vit_base_patch32", "Kaggle", str(tmp_path / "kagglehub"), "save_to_preset", "weights=DIR"):
        assert part in message, message


def test_bad_preset_folders_are_refused_before_loading(tmp_path: Path, preset: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="not a keras-hub preset folder"):
        Embedder("clip-vit-b32", weights=tmp_path)
    with pytest.raises(WeightsUnavailableError, match="neither 'imagenet'"):
        Embedder("clip-vit-b32", weights=tmp_path / "missing")
    other = tmp_path / "other"
    other.mkdir()
    cfg = json.loads((preset / "config.json").read_text())
    cfg["class_name"] = "SigLIPBackbone"
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsUnavailableError, match="not a CLIPBackbone"):
        Embedder("clip-vit-b32", weights=other)


def test_cli_index_and_search_by_text(preset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = tmp_path / "photos"
    write_photos(ds, 5)
    vec = tmp_path / "vectors"
    assert cli.main(["index", str(ds), str(vec), "--model", "clip-vit-b32", "--weights", str(preset), "-q"]) == 0
    assert "5 vectors (clip-vit-b32, 8-d)" in capsys.readouterr().out
    assert cli.main(["search", "--text", "a red car at night", str(vec), "-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["text"] == "a red car at night" and out["model"] == "clip-vit-b32"
    assert [r["relpath"] for r in out["results"]] == [m.relpath for m in search_text("a red car at night", vec, k=3)]
    assert cli.main(["search", str(ds / "img0003.jpg"), str(vec), "-k", "1"]) == 0  # image queries still work
    assert "img0003.jpg" in capsys.readouterr().out
    rc = cli.main(["search", "--text", "a dog", str(vec), "--rotations"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "--rotations need an image query" in err[0]
    rc = cli.main(["search", "--text", "a dog", str(ds / "img0001.jpg"), str(vec)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "not both" in err[0]
    assert cli.main(["search", "--text", "a dog", str(vec), "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")


def test_cli_text_on_cnn_index_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = Embedder("mobilenet", weights=None).spec
    Index.from_vectors(tmp_path / "cnn", np.eye(2, spec["dim"], dtype=np.float32), ["a.jpg", "b.jpg"], spec)
    rc = cli.main(["search", "--text", "a red car", str(tmp_path / "cnn")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1
    assert err[0].startswith("revsearch: error: ") and "mobilenet, an image model" in err[0]


def test_widget_words_box_searches_a_clip_index(clip_index: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("ipywidgets")
    from revsearch.widgets import SearchApp

    ds, vec = clip_index
    app = SearchApp(vec, k=3)
    row = [c for c in app.widget.children if app.words in getattr(c, "children", ())][0]
    assert row.layout.display != "none"
    app.words.value = "a red car at night"  # what pressing Enter in the box does
    assert app.searches == 1 and app.results is not None
    assert [m.row for m in app.results] == [m.row for m in search_text("a red car at night", vec, k=3)]
    kinds = [o["output_type"] for o in app.output.outputs]
    assert "display_data" in kinds and "image/png" in app.output.outputs[-2]["data"]
    app.k.value = 2  # the slider searches the last words again
    assert app.searches == 2 and len(app.results) == 2
    app.words_button.click()
    assert app.searches == 3
    app.search(ds / "img0004.jpg", "img0004.jpg")  # image queries on the same widget
    assert app.results[0].relpath == "img0004.jpg"


def test_widget_words_on_a_cnn_index_is_hidden_and_one_message(tmp_path: Path) -> None:
    pytest.importorskip("ipywidgets")
    from revsearch.widgets import SearchApp

    spec = Embedder("mobilenet", weights=None).spec
    Index.from_vectors(tmp_path / "cnn", np.eye(2, spec["dim"], dtype=np.float32), ["a.jpg", "b.jpg"], spec)
    app = SearchApp(tmp_path / "cnn")
    row = [c for c in app.widget.children if app.words in getattr(c, "children", ())][0]
    assert row.layout.display == "none"
    assert app.search_words("a red car") is None
    (message,) = app.output.outputs
    assert "mobilenet, an image model" in message["data"]["text/plain"] and "Traceback" not in str(message)


def _nb_cell(nb, number: int):  # type: ignore[no-untyped-def]
    import re

    return next(c for c in nb.cells if c.cell_type == "code" and re.match(rf"#@title {number}\.", c.source))


def _nb_text(cell) -> str:  # type: ignore[no-untyped-def]
    return "".join(o.get("text", "") if o.get("output_type") == "stream" else o.get("data", {}).get("text/plain", "") + "\n"
                   for o in cell.get("outputs", []))  # fmt: skip


@pytest.mark.slow
def test_notebook_with_clip_searches_by_words(preset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    photos = tmp_path / "photos"
    write_photos(photos, 6)
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps(
        {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "display_name": "py", "language": "python"}
    ))  # fmt: skip
    env = {
        "JUPYTER_PATH": str(tmp_path / "jupyter"),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "REVSEARCH_NB_OFFLINE": "1",
        "REVSEARCH_NB_DOWNLOAD": "0",
        "REVSEARCH_NB_STORAGE": "VM disk",
        "REVSEARCH_NB_DATASET_DIR": str(photos),
        "REVSEARCH_NB_WORK_DIR": str(tmp_path / "work"),
        "REVSEARCH_NB_K": "3",
        "REVSEARCH_NB_MODEL": "clip-vit-b32",
        "REVSEARCH_NB_WEIGHTS": str(preset),  # the local preset folder, as a user without internet passes it
        "REVSEARCH_NB_TEXT": "a red car at night",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("COLAB_")]:
        monkeypatch.delenv(key)
    kernel_cwd = tmp_path / "cwd"
    kernel_cwd.mkdir()
    nb = nbformat.read(REPO / "Reverse_Search.ipynb", as_version=4)
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(kernel_cwd)}}).execute()
    assert "clip-vit-b32" in _nb_text(_nb_cell(nb, 2))
    assert "6 vectors" in _nb_text(_nb_cell(nb, 4))
    widget = _nb_cell(nb, 5).outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in widget)
    words_cell = _nb_cell(nb, 6)
    text = _nb_text(words_cell)
    assert "also searched by words" in text
    assert any("image/png" in o.get("data", {}) for o in words_cell.outputs)
    index_dir = next((tmp_path / "work" / "indexes").iterdir())
    expected = [m.relpath for m in search_text("a red car at night", index_dir, k=3)]
    listed = [line.split()[-1] for line in text.splitlines() if line.strip()[:2] in ("1.", "2.", "3.")]
    assert listed == expected, text


def test_unusual_text_is_embedded_or_refused_in_one_line(clip: ClipEmbedder) -> None:
    for text in ("🚗 voiture rouge la nuit", "a" * 5000, "naïve café\n\ttabs", "<|endoftext|> a dog"):
        v = clip.embed_text(text)
        assert v.shape == (DIM,) and np.isfinite(v).all() and abs(float(np.linalg.norm(v)) - 1) < 1e-5
    for bad in ("", " \n ", []):
        with pytest.raises(ValueError, match="text"):
            clip.embed_text(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="string"):
        TextQuery([b"bytes"])  # type: ignore[list-item]


def test_cli_offline_clip_index_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.setenv("no_proxy", "")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    write_photos(tmp_path / "photos", 2)
    rc = cli.main(["index", str(tmp_path / "photos"), str(tmp_path / "vec"), "--model", "clip-vit-b32", "--backend", "keras", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1, err
    assert err[0].startswith("revsearch: error: could not fetch the keras-hub preset 'clip_vit_base_patch32'")
    assert "--weights DIR" in err[0]
    assert not Index.exists(tmp_path / "vec")  # no index half-written


# --------------------------------------------------------------------------- SigLIP


@pytest.fixture(scope="module")
def siglip_preset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("sentencepiece")
    return build_siglip_preset(tmp_path_factory.mktemp("tinysiglip") / "tiny_siglip")


def test_siglip_catalogue_records_its_own_preprocessing() -> None:
    e = Embedder("siglip-b16-224", weights=None)
    assert isinstance(e, ClipEmbedder) and (e.dim, e.input_size, e.fit) == (768, 224, "stretch")
    assert e.spec["preset"] == "siglip_base_patch16_224"
    np.testing.assert_allclose(e.scale, [2 / 255] * 3, rtol=1e-7)
    np.testing.assert_allclose(e.offset, [-1] * 3, rtol=1e-7)
    assert e.spec["preprocessing"].startswith("stretch:rgb(0,0,0)/resize:224:bicubic/keras_hub.SigLIPImageConverter:")


def test_siglip_tiny_preset_round_trip(siglip_preset: Path, tmp_path: Path) -> None:
    import keras
    import keras_hub

    emb = Embedder("siglip-b16-224", weights=siglip_preset, backend="keras")
    assert (emb.dim, emb.input_size, emb.fit) == (16, SIZE, "stretch")
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, :40] = 255  # left half white: a crop would keep half of it, stretching keeps all of it
    prepared = emb.prepare(wide)
    assert prepared.shape == (SIZE, SIZE, 3) and prepared[:, : SIZE // 2 - 2].min() > 250 and prepared[:, SIZE // 2 + 2 :].max() < 5
    ids = emb.tokenize("a red car at night")
    assert ids.shape == (1, SIGLIP_LENGTH) and ids[0, -1] == emb.tokenize("a")[0, -1]  # cut to the length, end token last
    # the towers against keras-hub's classes straight from the preset
    backbone = keras_hub.models.SigLIPBackbone.from_preset(str(siglip_preset))
    converter = keras_hub.layers.SigLIPImageConverter.from_preset(str(siglip_preset))
    images = [make_photo(i, (SIZE, SIZE)) for i in range(2)]
    ref = keras.ops.convert_to_numpy(backbone.get_vision_embeddings(converter(np.stack(images).astype("float32"))))
    np.testing.assert_allclose(emb.embed(images), ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=2e-4)
    ref_t = keras.ops.convert_to_numpy(backbone.get_text_embeddings(emb.tokenize(["a dog", "the red car"])))
    np.testing.assert_allclose(emb.embed_text(["a dog", "the red car"]), ref_t / np.linalg.norm(ref_t, axis=1, keepdims=True), atol=2e-4)
    # index and search by words through the operations layer
    ds = tmp_path / "photos"
    write_photos(ds, 4)
    index, _ = Index.build(ds, tmp_path / "vec", Embedder("siglip-b16-224", weights=siglip_preset), progress=False)
    found = search_text("a dog on the beach", tmp_path / "vec", k=4)
    expected = index.vectors @ emb.embed_text("a dog on the beach")
    assert [m.row for m in found] == [int(r) for r in np.argsort(-expected, kind="stable")]
    assert open_index(tmp_path / "vec").embedder().spec["preprocessing"] == emb.spec["preprocessing"]
