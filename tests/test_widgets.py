"""The search widget and the notebook's steps (revsearch.widgets), used the way a user would.

The widget is driven through real ipywidgets: a ``FileUpload`` value is set to the bytes of a
file, the path box is typed into and the button clicked, and what the ``Output`` area shows is
checked.
"""

from __future__ import annotations

import base64
import bz2
import datetime as dt
import io
import logging
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from revsearch.display import figure_png

from conftest import write_photos
from revsearch.errors import RevsearchError

widgets = pytest.importorskip("ipywidgets")

from revsearch import notebook as nb  # noqa: E402
from revsearch import widgets as rw  # noqa: E402


# --------------------------------------------------------------------------- helpers


def _walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child)


def _parts(box):
    """The upload, path box, button, slider and output of a search widget (the first of each kind: the
    words box and its button come after the path box)."""
    found: dict = {}
    for w in _walk(box):
        found.setdefault(type(w).__name__, w)
    return found["FileUpload"], found["Text"], found["Button"], found["IntSlider"], found["Output"]


def _upload_value(name: str, content: bytes, mime: str = "image/jpeg") -> tuple[dict, ...]:
    """What ipywidgets 8 puts in ``FileUpload.value`` when a user picks a file."""
    return (
        {
            "name": name,
            "type": mime,
            "size": len(content),
            "content": memoryview(content),
            "last_modified": dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc),
        },
    )


IPYWIDGETS_MAJOR = int(widgets.__version__.split(".")[0])


def front_end_upload(upload, name: str, content: bytes, mime: str = "image/jpeg") -> None:
    """Pick a file as the browser's widget does: the sync message each ipywidgets version sends.

    ipywidgets 7 (Colab's 7.7.1): ``metadata`` and ``data`` and ``_counter`` + 1 in one message;
    ipywidgets 8: ``value``, a list of file dicts (content as a binary buffer, time in ms).
    """
    if IPYWIDGETS_MAJOR < 8:
        upload.set_state(
            {
                "_counter": upload._counter + 1,
                "metadata": [{"name": name, "type": mime, "size": len(content), "lastModified": 1714521600000}],
                "data": [memoryview(content)],
            }
        )
    else:
        upload.set_state(
            {
                "value": [
                    {"name": name, "type": mime, "size": len(content), "content": memoryview(content),
                     "last_modified": 1714521600000}
                ]
            }
        )


@pytest.fixture()
def count_searches(monkeypatch):
    """Count the searches the widget runs (calls of show_search)."""
    calls = []
    real = rw.show_search

    def counted(output, query, **kwargs):
        calls.append(kwargs.get("name"))
        return real(output, query, **kwargs)

    monkeypatch.setattr(rw, "show_search", counted)
    return calls


def _pngs(output) -> list[bytes]:
    return [base64.b64decode(o["data"]["image/png"]) for o in output.outputs if "image/png" in o.get("data", {})]


def _all_text(output) -> str:
    parts = []
    for o in output.outputs:
        if o.get("output_type") == "stream":
            parts.append(o["text"])
        for key in ("text/plain", "text/html"):
            parts.append(o.get("data", {}).get(key, ""))
        if o.get("output_type") == "error":
            parts.append("Traceback " + "\n".join(o.get("traceback", [])))
    return "\n".join(parts)


def _listing(output) -> list[str]:
    text = "".join(o["text"] for o in output.outputs if o.get("output_type") == "stream")
    return [line.split()[-1] for line in text.splitlines() if line.strip()[:1].isdigit()]


def _assert_message(output, *needles: str) -> None:
    """A clear message and nothing else: no picture, no traceback, no error output."""
    assert not _pngs(output)
    assert all(o.get("output_type") != "error" for o in output.outputs)
    text = _all_text(output)
    assert "Traceback" not in text and 'File "' not in text
    for needle in needles:
        assert needle in text, f"{needle!r} not in {text!r}"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, resnet_random):
    """A folder of 10 photos and its index (ResNet50, random weights)."""
    from revsearch import Index

    root = tmp_path_factory.mktemp("widget")
    photos = root / "photos"
    write_photos(photos / "a", 6, start=0)
    write_photos(photos / "b", 4, start=6, ext=".png")
    Index.build(photos, root / "vectors", resnet_random, progress=False)
    return photos, root / "vectors"


@pytest.fixture()
def box(indexed):
    photos, vectors = indexed
    return rw.search_widget(vectors, dataset_dir=photos, k=9)


# --------------------------------------------------------------------------- the widget


def test_each_front_end_upload_is_searched_exactly_once(box, indexed, count_searches):
    photos, _ = indexed
    upload, _, _, _, output = _parts(box)
    content = (photos / "a" / "img0002.jpg").read_bytes()
    front_end_upload(upload, "first.jpg", content)
    assert count_searches == ["first.jpg"]
    assert _listing(output)[0] == "a/img0002.jpg" and len(_pngs(output)) == 1
    front_end_upload(upload, "first.jpg", content)  # the same file again: searched again, once
    assert count_searches == ["first.jpg", "first.jpg"]
    front_end_upload(upload, "other.png", (photos / "b" / "img0009.png").read_bytes(), "image/png")
    assert count_searches == ["first.jpg", "first.jpg", "other.png"]
    assert _listing(output)[0] == "b/img0009.png"
    assert not uploaded_now(upload)  # emptied after each upload


def uploaded_now(upload):
    return rw.uploaded_files(upload.value)


def test_the_first_result_carries_the_note(indexed, count_searches):
    photos, vectors = indexed
    app = rw.SearchApp(vectors, dataset_dir=photos, k=3, note="These results come from resnet50 (test).")
    front_end_upload(app.upload, "q.jpg", (photos / "a" / "img0001.jpg").read_bytes())
    assert "These results come from resnet50" in _all_text(app.output)
    app.k.value = 2  # a second search: no note
    assert "These results come from" not in _all_text(app.output) and app.searches == 2


def test_search_widget_has_upload_path_slider_button_output(box):
    assert isinstance(box, widgets.VBox)
    upload, path, button, slider, output = _parts(box)
    assert upload.accept == "image/*"
    assert slider.value == 9 and slider.min == 1
    assert button.description == "Search"
    assert output.outputs == ()


def test_upload_of_a_photo_then_of_a_broken_file(box, indexed):
    photos, _ = indexed
    upload, _, _, _, output = _parts(box)
    query = photos / "a" / "img0003.jpg"

    front_end_upload(upload, "holiday.jpg", query.read_bytes())

    pngs = _pngs(output)
    assert len(pngs) == 1, _all_text(output)
    from PIL import Image

    picture = Image.open(io.BytesIO(pngs[0]))
    assert picture.format == "PNG"
    assert picture.height > picture.width  # the query on top of a 3 x 3 grid
    listing = _listing(output)
    assert len(listing) == 9
    assert listing[0] == "a/img0003.jpg"  # the same photo is its own best match
    assert "Traceback" not in _all_text(output)
    assert not uploaded_now(upload)  # emptied, so the same file can be uploaded again

    front_end_upload(upload, "broken.jpg", b"\xff\xd8\xff\xe0 this is not really a JPEG")

    _assert_message(output, "broken.jpg", "Could not search")
    assert len(output.outputs) == 1  # the previous result was replaced by the message


def test_upload_of_a_text_file_and_of_an_empty_file(box):
    upload, _, _, _, output = _parts(box)
    front_end_upload(upload, "notes.txt", b"hello, not a picture", "text/plain")
    _assert_message(output, "notes.txt", "not an image")
    front_end_upload(upload, "empty.jpg", b"")
    _assert_message(output, "empty.jpg", "empty")


def test_uploading_the_same_file_twice_searches_twice(box, indexed):
    photos, _ = indexed
    upload, _, _, slider, output = _parts(box)
    content = (photos / "b" / "img0007.png").read_bytes()
    front_end_upload(upload, "x.png", content, "image/png")
    output.outputs = ()
    front_end_upload(upload, "x.png", content, "image/png")
    assert len(_pngs(output)) == 1
    assert _listing(output)[0] == "b/img0007.png"


def test_path_box_and_button(box, indexed):
    photos, _ = indexed
    _, path, button, _, output = _parts(box)

    button.click()
    _assert_message(output, "Upload a photo")

    path.value = str(photos / "b" / "img0008.png")
    button.click()
    assert len(_pngs(output)) == 1
    assert _listing(output)[0] == "b/img0008.png"

    path.value = str(photos / "missing.jpg")
    button.click()
    _assert_message(output, "missing.jpg", "does not exist")


def test_slider_searches_the_last_query_again(box, indexed):
    photos, _ = indexed
    upload, _, button, slider, output = _parts(box)
    front_end_upload(upload, "q.jpg", (photos / "a" / "img0001.jpg").read_bytes())
    assert len(_listing(output)) == 9
    slider.value = 3
    assert len(_listing(output)) == 3
    assert len(_pngs(output)) == 1
    button.click()  # an empty path box: the last upload again, with the slider's k
    assert _listing(output)[0] == "a/img0001.jpg" and len(_listing(output)) == 3


def test_widget_without_an_index_says_so(tmp_path, indexed):
    photos, _ = indexed
    box = rw.search_widget(tmp_path / "no-index-here")
    upload, _, _, _, output = _parts(box)
    front_end_upload(upload, "q.jpg", (photos / "a" / "img0000.jpg").read_bytes())
    _assert_message(output, "no revsearch index")


def test_widget_with_the_wrong_model_says_so(indexed):
    photos, vectors = indexed
    box = rw.search_widget(vectors, model="mobilenet", weights=None)
    upload, _, _, _, output = _parts(box)
    front_end_upload(upload, "q.jpg", (photos / "a" / "img0000.jpg").read_bytes())
    _assert_message(output, "q.jpg", "resnet50")


def test_show_search_handles_one_upload(indexed):
    photos, vectors = indexed
    output = widgets.Output()
    query = (photos / "a" / "img0002.jpg").read_bytes()
    results = rw.show_search(output, query, name="up.jpg", vector_dir=vectors, k=4)
    assert results is not None and len(results) == 4 and results.figure is not None
    assert len(_pngs(output)) == 1
    assert rw.show_search(output, b"GIF89a broken", name="bad.gif", vector_dir=vectors, append=True) is None
    assert len(_pngs(output)) == 1  # appended: the earlier picture stays, the message follows
    assert "bad.gif" in _all_text(output)


def test_search_image_draws_query_above_matches(indexed):
    photos, vectors = indexed
    results = rw.search_image(photos / "a" / "img0004.jpg", vectors, k=5, title="mine")
    axes = results.figure.axes
    assert len(axes) == 6 and axes[0].get_title() == "mine"
    assert figure_png(results.figure).startswith(b"\x89PNG")


def test_uploaded_files_reads_ipywidgets_7_and_8_values():
    v8 = _upload_value("a.jpg", b"abc") + _upload_value("b.png", b"de")
    assert rw.uploaded_files(v8) == [("a.jpg", b"abc"), ("b.png", b"de")]
    v7 = {"c.jpg": {"metadata": {"name": "c.jpg", "type": "image/jpeg", "size": 3}, "content": b"xyz"}}
    assert rw.uploaded_files(v7) == [("c.jpg", b"xyz")]
    assert rw.uploaded_files(()) == [] and rw.uploaded_files({}) == [] and rw.uploaded_files(None) == []


def test_running_under_the_expected_ipywidgets():
    """Under tests/test_compat.py's overlay the old version must really be the one imported."""
    import os

    expected = os.environ.get("REVSEARCH_TEST_EXPECT_IPYWIDGETS")
    if expected:
        assert widgets.__version__ == expected


def test_importing_revsearch_and_its_widgets_module_stays_light():
    code = (
        "import sys, revsearch, revsearch.widgets, revsearch.notebook, revsearch.remote, revsearch.console, revsearch.demo; "
        "heavy = [m for m in ('tensorflow', 'keras', 'ipywidgets', 'IPython', 'gdown', 'requests', 'skimage') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# --------------------------------------------------------------------------- Colab


@pytest.fixture()
def fake_colab(monkeypatch, tmp_path):
    """A google.colab module whose drive.mount creates MyDrive under a temporary mount point."""
    calls: dict[str, list] = {"mount": [], "widget_manager": []}

    def mount(mountpoint: str) -> None:
        calls["mount"].append(mountpoint)
        (Path(mountpoint) / "MyDrive").mkdir(parents=True)

    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mount)  # type: ignore[attr-defined]
    colab.output = types.SimpleNamespace(  # type: ignore[attr-defined]
        enable_custom_widget_manager=lambda: calls["widget_manager"].append(True)
    )
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setattr(nb, "COLAB_CONTENT", tmp_path / "content")
    monkeypatch.setattr(nb, "DRIVE_MOUNT", tmp_path / "content" / "drive")
    for key in [k for k in __import__("os").environ if k.startswith(nb.ENV_PREFIX)]:
        monkeypatch.delenv(key)
    return calls


def test_colab_with_drive_keeps_images_and_index_on_drive_and_archives_on_the_vm(fake_colab, tmp_path):
    assert nb.in_colab()
    s = nb.notebook_settings("Google Drive", True, "", "resnet50-seed", 9)
    assert fake_colab["mount"] == [str(tmp_path / "content" / "drive")]
    drive = tmp_path / "content" / "drive" / "MyDrive" / "revsearch-data"
    vm = tmp_path / "content" / "revsearch-data"
    assert s.storage == "drive" and s.colab and s.vectors == nb.ORIGINAL_VECTORS
    assert s.persist_dir == drive and s.work_dir == vm
    assert s.archive_dir == vm / "archives"  # zips never go to Drive (unless kept)
    assert s.vector_dir == drive / "indexes" / "imagenet_resized-resnet50-seed"
    assert s.dataset_dir == drive / "imagenet_resized"  # a new session finds them
    assert s.legacy_dir == vm / "legacy_vectors"  # deleted once imported
    kept = nb.notebook_settings("Google Drive", True, "", "mobilenet", 9, vectors="re-index", keep_archives=True)
    assert kept.archive_dir == drive / "archives" and kept.model == "mobilenet" and kept.vectors == nb.REINDEX
    assert len(fake_colab["mount"]) == 1  # already mounted: not again
    # Colab renders ipywidgets 7 itself; 8 (and tqdm's bars built on it) needs the custom manager.
    assert bool(fake_colab["widget_manager"]) == (IPYWIDGETS_MAJOR >= 8)
    assert nb.enable_colab_widgets() is (IPYWIDGETS_MAJOR >= 8)


def test_colab_with_vm_disk_does_not_mount(fake_colab, tmp_path):
    s = nb.notebook_settings("VM disk", True, "", "mobilenet", 5, vectors="re-index")
    assert fake_colab["mount"] == []
    assert s.storage == "local" and s.persist_dir == s.work_dir == tmp_path / "content" / "revsearch-data"


def test_colab_offline_never_mounts(fake_colab, monkeypatch):
    monkeypatch.setenv("REVSEARCH_NB_OFFLINE", "1")
    s = nb.notebook_settings("Google Drive", True, "", "resnet50", 9, vectors="re-index")
    assert fake_colab["mount"] == [] and not s.colab and not s.download and s.offline


def test_drive_refused_is_one_line_and_the_vm_disk_is_used(fake_colab, monkeypatch, tmp_path, capsys):
    import google.colab as colab  # the fake

    def refuse(mountpoint: str) -> None:
        fake_colab["mount"].append(mountpoint)
        raise ValueError("mount failed: credential propagation was unsuccessful")

    monkeypatch.setattr(colab.drive, "mount", refuse)
    log = nb.notebook_logging()
    try:
        s = nb.notebook_settings("Google Drive", True, "", "resnet50-seed", 9)
    finally:
        for h in [h for h in log.handlers if isinstance(h, nb.NotebookHandler)]:
            log.removeHandler(h)
    out = capsys.readouterr().out
    assert s.storage == "local" and s.persist_dir == tmp_path / "content" / "revsearch-data"
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Warning: Google Drive is not available")
    assert "VM's disk" in lines[0] and "Traceback" not in out


@pytest.mark.parametrize(
    "devices, expected",
    [([], "original"), (["/physical_device:GPU:0"], "reindex"), (["/physical_device:CPU:0"], "original")],
)
def test_auto_vectors_follow_the_device_list(no_env, tmp_path, devices, expected):
    assert nb.default_vectors(devices) == expected
    s = nb.notebook_settings("VM disk", True, "", "resnet50", 9, work_dir=tmp_path, devices=devices)
    assert s.vectors == expected and ("a GPU is available" in s.vectors_reason) == (expected == "reindex")
    assert s.model == ("resnet50-seed" if expected == "original" else "resnet50")
    assert s.vector_dir.name == f"imagenet_resized-{s.model}"
    # Chosen explicitly, the device list does not matter.
    s = nb.notebook_settings(
        "VM disk", True, "", "mobilenet", 9, work_dir=tmp_path, devices=devices, vectors="use the original vectors"
    )
    assert s.vectors == "original" and s.model == "resnet50-seed"
    own = nb.notebook_settings("VM disk", True, str(tmp_path), "mobilenet", 9, work_dir=tmp_path, devices=devices)
    assert own.vectors == "reindex" and own.model == "mobilenet"  # own images are always indexed


def test_sources_come_from_the_form_or_the_environment(no_env, tmp_path):
    from revsearch.data import ORIGINAL_IMAGES_ID, ORIGINAL_VECTORS_ID

    s = nb.notebook_settings(work_dir=tmp_path, devices=[])
    assert (s.images_source, s.vectors_source) == (ORIGINAL_IMAGES_ID, ORIGINAL_VECTORS_ID)
    env = {
        "REVSEARCH_NB_IMAGES_SOURCE": "https://mirror.example.org/imagenet_resized.zip",
        "REVSEARCH_NB_VECTORS_SOURCE": "https://drive.google.com/file/d/1AbCdEfGhIjKlMnOpQrStUvWxYz/view",
        "REVSEARCH_NB_WORK_DIR": str(tmp_path),
        "REVSEARCH_NB_KEEP_ARCHIVES": "1",
    }
    s = nb.notebook_settings(images_source="ignored-because-env-wins-xxxxx", devices=[], env=env)
    assert s.images_source == env["REVSEARCH_NB_IMAGES_SOURCE"] and s.vectors_source == env["REVSEARCH_NB_VECTORS_SOURCE"]
    assert s.keep_archives and "mirror.example.org" in s.describe()
    with pytest.raises(RevsearchError, match="IMAGES_SOURCE"):
        nb.notebook_settings(images_source="ftp://nope", devices=[], env={})


# --------------------------------------------------------------------------- settings


@pytest.fixture()
def no_env(monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith((nb.ENV_PREFIX, "COLAB_"))]:
        monkeypatch.delenv(key)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)


def test_settings_outside_colab_use_local_folders(no_env, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.INFO, logger="revsearch"):
        s = nb.notebook_settings("Google Drive", True, "", "resnet50-seed", 9)
    assert not s.colab and s.storage == "local"
    assert s.work_dir == s.persist_dir == tmp_path / "revsearch-data"
    assert "Google Drive is not used" in caplog.text
    assert not (tmp_path / "revsearch-data").exists()  # nothing created yet
    assert nb.enable_colab_widgets() is False
    assert "resnet50-seed" in s.describe() and str(s.vector_dir) in s.describe()


def test_environment_overrides_the_form(no_env, tmp_path, monkeypatch):
    photos = tmp_path / "my photos"
    monkeypatch.setenv("REVSEARCH_NB_DATASET_DIR", str(photos))
    monkeypatch.setenv("REVSEARCH_NB_MODEL", "MobileNet")
    monkeypatch.setenv("REVSEARCH_NB_K", "4")
    monkeypatch.setenv("REVSEARCH_NB_WEIGHTS", "none")
    monkeypatch.setenv("REVSEARCH_NB_DOWNLOAD", "no")
    monkeypatch.setenv("REVSEARCH_NB_WORK_DIR", str(tmp_path / "work"))
    s = nb.notebook_settings("Google Drive", True, "", "resnet50-seed", 9)
    assert (s.model, s.k, s.weights, s.download) == ("mobilenet", 4, None, False)
    assert s.dataset_dir == photos and s.own_dataset
    assert s.vector_dir == tmp_path / "work" / "indexes" / "my photos-mobilenet-random"
    kwargs = s.search_kwargs()
    assert kwargs["vector_dir"] == s.vector_dir and kwargs["k"] == 4 and kwargs["weights"] is None


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"REVSEARCH_NB_MODEL": "vgg16"}, "unknown model"),
        ({"REVSEARCH_NB_K": "many"}, "whole number"),
        ({"REVSEARCH_NB_K": "0"}, "at least 1"),
        ({"REVSEARCH_NB_DOWNLOAD": "perhaps"}, "REVSEARCH_NB_DOWNLOAD"),
        ({"REVSEARCH_NB_STORAGE": "floppy"}, "floppy"),
        ({"REVSEARCH_NB_VECTORS": "both"}, "vectors 'both'"),
        ({"REVSEARCH_NB_KEEP_ARCHIVES": "maybe"}, "KEEP_ARCHIVES"),
    ],
)
def test_bad_settings_are_clear_errors(env, needle):
    with pytest.raises(RevsearchError, match=needle):
        nb.notebook_settings(env=env, devices=[])


# --------------------------------------------------------------------------- data and index steps


def _settings(tmp_path: Path, **env: str) -> nb.NotebookSettings:
    base = {"REVSEARCH_NB_WORK_DIR": str(tmp_path / "work"), "REVSEARCH_NB_STORAGE": "VM disk"}
    base.update(env)
    return nb.notebook_settings(env=base, devices=[])


def test_fetch_data_skips_cleanly_when_download_is_off(tmp_path, monkeypatch, caplog):
    import revsearch.data

    monkeypatch.setattr(revsearch.data, "fetch_original_data", lambda *a, **k: pytest.fail("must not download"))
    with caplog.at_level(logging.INFO, logger="revsearch"):
        assert nb.fetch_data(_settings(tmp_path, REVSEARCH_NB_DOWNLOAD="0")) == {}
        assert nb.fetch_data(_settings(tmp_path, REVSEARCH_NB_OFFLINE="1")) == {}
        assert nb.fetch_data(_settings(tmp_path, REVSEARCH_NB_DATASET_DIR=str(tmp_path))) == {}
    assert "Download is off" in caplog.text and "nothing to download" in caplog.text


@pytest.mark.parametrize("choice, vectors", [("use the original vectors", True), ("re-index", False)])
def test_fetch_data_asks_for_what_the_settings_need(tmp_path, monkeypatch, choice, vectors):
    import revsearch.data

    calls = []

    def fake(root, **kwargs):
        calls.append((root, kwargs))
        return {"images": kwargs["images_dir"]}

    monkeypatch.setattr(revsearch.data, "fetch_original_data", fake)
    s = _settings(tmp_path, REVSEARCH_NB_VECTORS=choice, REVSEARCH_NB_IMAGES_SOURCE="http://mirror.test/i.zip")
    assert nb.fetch_data(s, quiet=True) == {"images": s.dataset_dir}
    (root, kwargs), = calls
    assert root == s.work_dir and kwargs["archive_dir"] == s.archive_dir
    assert kwargs["images"] is True and kwargs["vectors"] is vectors and kwargs["quiet"] is True
    assert kwargs["images_source"] == "http://mirror.test/i.zip" and kwargs["keep_archives"] is False
    assert kwargs["images_dir"] == s.dataset_dir and kwargs["vectors_dir"] == s.legacy_dir
    # Once the index exists, the vector files are not needed any more (a new Colab session).
    s.vector_dir.mkdir(parents=True)
    (s.vector_dir / "revsearch.json").write_text("{}")
    nb.fetch_data(s)
    assert calls[-1][1]["images"] is True and calls[-1][1]["vectors"] is False


@pytest.mark.slow
def test_prepare_index_builds_then_reuses(tmp_path, resnet_random):
    photos = tmp_path / "photos"
    write_photos(photos, 5)
    s = _settings(
        tmp_path, REVSEARCH_NB_DATASET_DIR=str(photos), REVSEARCH_NB_MODEL="resnet50", REVSEARCH_NB_WEIGHTS="none",
        REVSEARCH_NB_BACKEND="keras",
    )
    assert s.vectors == "reindex"  # own images are always indexed
    index, report = nb.prepare_index(s, progress=False)
    assert len(index) == 5 and report is not None and len(report.added) == 5
    assert index.spec["backend"] == "keras"  # the BACKEND setting ran the model
    write_photos(photos, 1, start=5)
    index, report = nb.prepare_index(s, progress=False)
    assert len(index) == 6 and report.added == ["img0005.jpg"] and len(report.unchanged) == 5
    assert nb.sample_query(s) == photos / "img0000.jpg"
    assert nb.sample_query(s, "~/x.jpg") == Path.home() / "x.jpg"


def test_backend_setting_from_the_form_or_the_environment(tmp_path):
    assert _settings(tmp_path).backend == "auto"
    assert nb.notebook_settings(work_dir=tmp_path, devices=[], env={}, backend="OpenVINO").backend == "openvino"
    assert _settings(tmp_path, REVSEARCH_NB_BACKEND="keras").backend == "keras"
    with pytest.raises(RevsearchError, match="unknown backend 'tpu'"):
        _settings(tmp_path, REVSEARCH_NB_BACKEND="tpu")


def test_prepare_index_without_images_says_what_to_do(tmp_path):
    with pytest.raises(RevsearchError, match="DOWNLOAD_ORIGINAL_DATA"):
        nb.prepare_index(_settings(tmp_path, REVSEARCH_NB_DOWNLOAD="0"))
    s = _settings(tmp_path, REVSEARCH_NB_VECTORS="original")
    write_photos(s.dataset_dir, 2)
    with pytest.raises(RevsearchError, match="original vector files are not in"):
        nb.prepare_index(s)
    with pytest.raises(RevsearchError, match="check DATASET_DIR"):
        nb.prepare_index(_settings(tmp_path, REVSEARCH_NB_DATASET_DIR=str(tmp_path / "nope")))


def test_prepare_index_imports_the_original_vectors_once(tmp_path):
    s = _settings(tmp_path, REVSEARCH_NB_MODEL="resnet50-seed")
    names = [p.name for p in write_photos(s.dataset_dir, 3, prefix="0001_00000")]
    s.legacy_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate(names, start=1):  # the original format: {name: (100352,) float32}, bz2 pickle
        with bz2.BZ2File(s.legacy_dir / f"{i}.pbz2", "wb") as f:
            pickle.dump({name: rng.random(100352, dtype=np.float32)}, f)
    index, report = nb.prepare_index(s, progress=False, estimate=False)
    assert report is None and len(index) == 3 and sorted(index.paths) == sorted(names)
    assert index.spec["model"] == "resnet50-seed" and index.dataset_dir == s.dataset_dir
    assert not s.legacy_dir.exists()  # imported, then deleted (keep_archives is off)
    again, report = nb.prepare_index(s, progress=False, estimate=False)  # a rerun opens it, never re-imports
    assert report is None and len(again) == 3
    note = nb.pipeline_note(again, s)
    assert "original project's vectors" in note and "raw BGR" in note and "re-index the images" in note


@pytest.mark.slow
def test_estimate_indexing_times_the_first_batches_and_remembers(tmp_path, monkeypatch):
    s = _settings(tmp_path, REVSEARCH_NB_VECTORS="original", REVSEARCH_NB_WEIGHTS="none")
    write_photos(s.dataset_dir, 12)
    seconds = nb.estimate_indexing(s, model="mobilenet", batch_size=4, batches=1, devices=[])
    assert seconds is not None and seconds > 0
    import revsearch.embedding

    monkeypatch.setattr(revsearch.embedding, "get_embedder", lambda *a, **k: pytest.fail("timed again"))
    assert nb.estimate_indexing(s, model="mobilenet", batch_size=4, batches=1, devices=[]) == pytest.approx(
        seconds, abs=0.051
    )
    write_photos(s.dataset_dir, 1, start=12)  # more images: the cached estimate no longer fits
    with pytest.raises(pytest.fail.Exception, match="timed again"):
        nb.estimate_indexing(s, model="mobilenet", batch_size=4, batches=1, devices=[])
    assert nb.estimate_indexing(s, model="mobilenet", batch_size=40, devices=[]) is None  # too few images


def test_sample_query_of_an_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RevsearchError, match="no image"):
        nb.sample_query(_settings(tmp_path, REVSEARCH_NB_DATASET_DIR=str(tmp_path / "empty")))


def test_notebook_logging_adds_one_handler(capsys):
    log = nb.notebook_logging()
    nb.notebook_logging()
    try:
        handlers = [h for h in log.handlers if isinstance(h, nb.NotebookHandler)]
        assert len(handlers) == 1
        logging.getLogger("revsearch.index").info("indexed %d images", 3)
        logging.getLogger("revsearch.data").warning("quota exceeded")
        out = capsys.readouterr().out
        assert "indexed 3 images\n" in out and "Warning: quota exceeded" in out
    finally:
        for h in handlers:
            log.removeHandler(h)
        log.setLevel(logging.NOTSET)


def test_link_box_searches_an_image_url_and_explains_a_page(indexed, count_searches, monkeypatch):
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    photos, vectors = indexed
    for var in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    served = photos.parent / "served"
    served.mkdir(exist_ok=True)
    (served / "found%20it.jpg").write_bytes((photos / "a" / "img0005.jpg").read_bytes())
    (served / "page.html").write_text("<!DOCTYPE html><html><body><img src='x.jpg'></body></html>")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(served)))
    httpd.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        box = rw.search_widget(vectors, dataset_dir=photos, k=3)
        _, path, button, _, output = _parts(box)
        path.value = f"  {base}/found%2520it.jpg?w=800 "
        button.click()
        assert count_searches == ["found%20it.jpg"]
        assert _listing(output)[0] == "a/img0005.jpg" and len(_pngs(output)) == 1
        path.value = base + "/page.html"
        button.click()
        _assert_message(output, "web page", "Copy image address")
    finally:
        httpd.shutdown()
        httpd.server_close()
