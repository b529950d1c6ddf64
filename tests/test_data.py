"""Tests of revsearch.data against a real HTTP server on 127.0.0.1 (no internet needed)."""

from __future__ import annotations

import io
import socket
import sys
import tarfile
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from revsearch.data import (
    ORIGINAL_IMAGES_ID,
    ORIGINAL_VECTORS_ID,
    download,
    extract,
    fetch_original_data,
)
from revsearch.errors import DownloadError

FILES = {"0001_000001.jpg": b"\xff\xd8jpeg one", "0002_000002.jpg": b"\xff\xd8jpeg two!"}
HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Google Drive - Quota exceeded</title></head>"
    b"<body>Too many users have viewed or downloaded this file recently.</body></html>\n"
)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy set in the environment must not intercept requests to 127.0.0.1.
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# --------------------------------------------------------------------------------------
# archives
# --------------------------------------------------------------------------------------


def make_zip(path: Path, members: dict[str, bytes], *, dirs: tuple[str, ...] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for d in dirs:
            zf.writestr(zipfile.ZipInfo(d.rstrip("/") + "/"), b"")
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def zip_one_top_folder(path: Path) -> Path:
    return make_zip(
        path, {f"imagenet_resized/{n}": d for n, d in FILES.items()}, dirs=("imagenet_resized",)
    )


def zip_files_at_root(path: Path) -> Path:
    return make_zip(path, dict(FILES))


def zip_with_macos_junk(path: Path) -> Path:
    members = {f"imagenet_resized/{n}": d for n, d in FILES.items()}
    members["__MACOSX/imagenet_resized/._0001_000001.jpg"] = b"apple double"
    members["imagenet_resized/.DS_Store"] = b"finder"
    return make_zip(path, members)


def zip_truncated(path: Path) -> Path:
    zip_one_top_folder(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def zip_slip(path: Path) -> Path:
    return make_zip(path, {"good.txt": b"fine", "../evil.txt": b"pwned"})


def listing(folder: Path) -> dict[str, bytes]:
    """Every file under folder, by relative path, with its content."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# --------------------------------------------------------------------------------------
# server
# --------------------------------------------------------------------------------------


@dataclass
class Server:
    root: Path
    base_url: str
    hits: Counter = field(default_factory=Counter)
    ranges: list = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


class _Handler(SimpleHTTPRequestHandler):
    server_state: Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        self.server_state.hits[path] += 1
        self.server_state.ranges.append(self.headers.get("Range"))
        if path.startswith("/error500"):
            self.send_error(500, "Internal Server Error")
            return
        if path.startswith("/ranged/"):  # a server that honours Range requests
            data = (self.server_state.root / path[len("/ranged/"):]).read_bytes()
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[len("bytes="):-1])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start:])
            return
        if path == "/quota.html":
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(HTML_PAGE)))
            self.end_headers()
            self.wfile.write(HTML_PAGE)
            return
        if path == "/dropped":
            # Announces 1000 bytes, sends 10, and hangs up.
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"PK\x03\x04shrt")
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "served"
    root.mkdir()
    state = Server(root=root, base_url="")
    handler = type("Handler", (_Handler,), {"server_state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    httpd.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def leftovers(folder: Path, keep: set[str] = frozenset()) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep) if folder.exists() else []


# --------------------------------------------------------------------------------------
# download + extract
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("maker", [zip_one_top_folder, zip_files_at_root, zip_with_macos_junk])
def test_download_and_extract_put_files_directly_in_dest_dir(server, tmp_path, maker):
    maker(server.root / "data.zip")
    archive = download(server.url("data.zip"), tmp_path / "dl" / "data.zip", quiet=True)
    assert archive == tmp_path / "dl" / "data.zip"
    assert archive.read_bytes() == (server.root / "data.zip").read_bytes()
    assert leftovers(tmp_path / "dl") == ["data.zip"]  # no temporary file left behind

    out = extract(archive, tmp_path / "out", quiet=True)
    assert out == tmp_path / "out"
    assert listing(out) == FILES
    assert leftovers(tmp_path, {"served", "dl"}) == ["out"]  # no temporary folder left


def test_second_calls_skip_without_network(server, tmp_path):
    zip_one_top_folder(server.root / "data.zip")
    dest = tmp_path / "data.zip"
    download(server.url("data.zip"), dest, quiet=True)
    extract(dest, tmp_path / "out", quiet=True)
    assert server.hits["/data.zip"] == 1
    (tmp_path / "out" / "marker").write_bytes(b"mine")

    assert download(server.url("data.zip"), dest, quiet=True) == dest
    assert extract(dest, tmp_path / "out", quiet=True) == tmp_path / "out"
    assert server.hits["/data.zip"] == 1
    assert listing(tmp_path / "out") == {**FILES, "marker": b"mine"}  # left untouched


def test_server_error_raises_and_leaves_no_file(server, tmp_path):
    dest = tmp_path / "dl" / "data.zip"
    with pytest.raises(DownloadError, match=r"HTTP 500") as info:
        download(server.url("error500"), dest, quiet=True)
    assert str(dest) in str(info.value)  # says where to put a file downloaded by hand
    assert server.hits["/error500"] == 1
    assert not dest.exists()
    assert leftovers(tmp_path / "dl") == []


def test_missing_file_says_not_found(server, tmp_path):
    with pytest.raises(DownloadError, match=r"404"):
        download(server.url("nope.zip"), tmp_path / "nope.zip", quiet=True)
    assert not (tmp_path / "nope.zip").exists()


def test_html_page_instead_of_file_raises(server, tmp_path):
    dest = tmp_path / "data.zip"
    with pytest.raises(DownloadError, match=r"HTML page"):
        download(server.url("quota.html"), dest, quiet=True)
    assert not dest.exists()
    assert leftovers(tmp_path, {"served"}) == []


def test_connection_refused_raises_network_error(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dest = tmp_path / "data.zip"
    with pytest.raises(DownloadError, match=r"(?i)network") as info:
        download(f"http://127.0.0.1:{port}/data.zip", dest, quiet=True)
    assert "internet connection" in str(info.value)
    assert not dest.exists()


def test_dropped_connection_raises_and_leaves_nothing_at_dest(server, tmp_path):
    dest = tmp_path / "data.zip"
    with pytest.raises(DownloadError, match=r"(?s)interrupted.*network connection dropped.*Run again"):
        download(server.url("dropped"), dest, quiet=True)
    assert not dest.exists()
    assert server.hits["/dropped"] >= 2  # gdown retried


def test_unresumable_partial_is_restarted(server, tmp_path):
    # A partial file gdown left earlier; this server ignores Range requests, so the
    # download must start again rather than fail for ever.
    zip_one_top_folder(server.root / "data.zip")
    dest = tmp_path / "data.zip"
    stale = tmp_path / "data.zip.partabcd1234.part"
    stale.write_bytes(b"PK\x03\x04 stale bytes")
    download(server.url("data.zip"), dest, quiet=True)
    assert dest.read_bytes() == (server.root / "data.zip").read_bytes()
    assert leftovers(tmp_path, {"served"}) == ["data.zip"]


def test_truncated_zip_raises_and_does_not_create_dest_dir(tmp_path):
    archive = zip_truncated(tmp_path / "data.zip")
    with pytest.raises(DownloadError, match=r"download it again") as info:
        extract(archive, tmp_path / "out", quiet=True)
    assert str(archive) in str(info.value)
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path) == ["data.zip"]


def test_corrupt_member_crc_raises_and_does_not_create_dest_dir(tmp_path):
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("a.txt", b"A" * 100)
    data = bytearray(archive.read_bytes())
    data[data.index(b"A" * 100) + 50] = ord("B")  # flip a byte of the stored data
    archive.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match=r"(?i)delete it and download it again"):
        extract(archive, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path) == ["data.zip"]


def test_not_an_archive_raises(tmp_path):
    page = tmp_path / "data.zip"
    page.write_bytes(HTML_PAGE)
    with pytest.raises(DownloadError, match=r"HTML page"):
        extract(page, tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_zip_slip_is_refused(tmp_path):
    archive = zip_slip(tmp_path / "work" / "data.zip")
    with pytest.raises(DownloadError, match=r"outside the destination"):
        extract(archive, tmp_path / "work" / "out", quiet=True)
    assert not (tmp_path / "work" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert leftovers(tmp_path / "work") == ["data.zip"]


def test_absolute_member_is_refused(tmp_path):
    archive = make_zip(tmp_path / "data.zip", {"/tmp/abs.txt": b"x"})
    with zipfile.ZipFile(archive) as zf:
        if not zf.namelist()[0].startswith("/"):  # zipfile may strip it when writing
            pytest.skip("this Python's zipfile strips absolute names")
    with pytest.raises(DownloadError, match=r"absolute path"):
        extract(archive, tmp_path / "out", quiet=True)


def test_nested_single_folders_are_stripped(tmp_path):
    archive = make_zip(
        tmp_path / "data.zip", {f"content/drive/MyDrive/imagenet_resized/{n}": d for n, d in FILES.items()}
    )
    assert listing(extract(archive, tmp_path / "out", quiet=True)) == FILES


def test_several_top_entries_keep_their_layout(tmp_path):
    archive = make_zip(tmp_path / "data.zip", {"a/x.jpg": b"x", "b/y.jpg": b"y", "top.txt": b"t"})
    assert listing(extract(archive, tmp_path / "out", quiet=True)) == {
        "a/x.jpg": b"x",
        "b/y.jpg": b"y",
        "top.txt": b"t",
    }


def test_expect_pattern_mismatch_raises(tmp_path):
    archive = zip_files_at_root(tmp_path / "data.zip")
    with pytest.raises(DownloadError, match=r"\*\.pbz2"):
        extract(archive, tmp_path / "out", expect="*.pbz2", quiet=True)
    assert not (tmp_path / "out").exists()
    assert listing(extract(archive, tmp_path / "out", expect="*.JPG", quiet=True)) == FILES


def test_existing_empty_dest_dir_is_filled_and_stale_temp_removed(tmp_path):
    archive = zip_one_top_folder(tmp_path / "data.zip")
    (tmp_path / "out").mkdir()
    stale = tmp_path / ".out.extracting-abc123"
    stale.mkdir()
    (stale / "half.jpg").write_bytes(b"half")
    assert listing(extract(archive, tmp_path / "out", quiet=True)) == FILES
    assert not stale.exists()


def test_tar_gz_is_extracted_without_links(tmp_path):
    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for name, data in FILES.items():
            info = tarfile.TarInfo(f"./imagenet_resized/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("./imagenet_resized/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    assert listing(extract(archive, tmp_path / "out", quiet=True)) == FILES
    assert not (tmp_path / "out" / "link").exists()


def test_tar_slip_is_refused(tmp_path):
    archive = tmp_path / "data.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"pwned"))
    with pytest.raises(DownloadError, match=r"outside the destination"):
        extract(archive, tmp_path / "out", quiet=True)
    assert not (tmp_path / "evil.txt").exists()
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------


def test_drive_sources_are_recognised():
    from revsearch.data import parse_source

    for source in (
        ORIGINAL_IMAGES_ID,
        f"https://drive.google.com/file/d/{ORIGINAL_IMAGES_ID}/view?usp=sharing",
        f"https://drive.google.com/uc?id={ORIGINAL_IMAGES_ID}&export=download",
    ):
        parsed = parse_source(source)
        assert parsed.drive_id == ORIGINAL_IMAGES_ID
        assert parsed.url == f"https://drive.google.com/uc?id={ORIGINAL_IMAGES_ID}"
    assert parse_source("http://127.0.0.1:8000/x.zip").drive_id is None
    with pytest.raises(ValueError):
        parse_source("not a source")
    with pytest.raises(ValueError, match="folder"):
        parse_source("https://drive.google.com/drive/folders/abc")


def test_import_is_cheap():
    import subprocess

    code = "import sys, revsearch.data; print('gdown' in sys.modules, 'requests' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------------------
# fetch_original_data
# --------------------------------------------------------------------------------------


def test_fetch_original_data_end_to_end(server, tmp_path):
    zip_one_top_folder(server.root / "images.zip")
    vectors = {"0.pbz2": b"vec zero", "1.pbz2": b"vec one"}
    make_zip(server.root / "vectors.zip", vectors)
    root = tmp_path / "data"
    kwargs = dict(
        quiet=True,
        images_source=server.url("images.zip"),
        vectors_source=server.url("vectors.zip"),
    )

    got = fetch_original_data(root, keep_archives=True, **kwargs)
    assert got == {"images": root / "imagenet_resized", "vectors": root / "legacy_vectors"}
    assert listing(got["images"]) == FILES
    assert listing(got["vectors"]) == vectors
    assert sorted(p.name for p in (root / "archives").iterdir()) == ["imagenet_resized.zip", "vectors.zip"]
    assert (server.hits["/images.zip"], server.hits["/vectors.zip"]) == (1, 1)

    # Again, even with the archives gone: the filled folders are kept, nothing downloaded.
    for p in (root / "archives").iterdir():
        p.unlink()
    assert fetch_original_data(root, **kwargs) == got
    assert (server.hits["/images.zip"], server.hits["/vectors.zip"]) == (1, 1)


def test_fetch_original_data_only_vectors_with_archive_dir(server, tmp_path):
    make_zip(server.root / "v.zip", {"vectors/0.pbz2": b"v0"})
    got = fetch_original_data(
        tmp_path / "data",
        images=False,
        archive_dir=tmp_path / "drive",
        quiet=True,
        images_source=server.url("missing.zip"),
        vectors_source=server.url("v.zip"),
    )
    assert got == {"vectors": tmp_path / "data" / "legacy_vectors"}
    assert listing(got["vectors"]) == {"0.pbz2": b"v0"}
    assert not (tmp_path / "drive" / "vectors.zip").exists()  # deleted once unpacked
    assert not (tmp_path / "data" / "imagenet_resized").exists()
    assert server.hits["/missing.zip"] == 0


def test_fetch_original_data_wrong_archive_raises(server, tmp_path):
    make_zip(server.root / "v.zip", {"readme.txt": b"not vectors"})
    with pytest.raises(DownloadError, match=r"\*\.pbz2.*\*\.pickle.*\*\.pkl"):
        fetch_original_data(
            tmp_path / "data", images=False, quiet=True, vectors_source=server.url("v.zip")
        )
    assert not (tmp_path / "data" / "legacy_vectors").exists()


def test_original_ids():
    assert ORIGINAL_IMAGES_ID == "1UagIDGCSQJWHdkrY0C0tEwOf_PwhOlpD"
    assert ORIGINAL_VECTORS_ID == "1O6k80XBJUJn6O0UTDCuD7w1mIHVSXIIr"


# --------------------------------------------------------------------------------------
# any gdown version, resuming, the archives' life
# --------------------------------------------------------------------------------------


def test_installed_versions_are_the_ones_the_run_expects():
    """Under tests/test_compat.py's overlay the old versions must really be the ones imported."""
    import os

    import gdown

    expected = os.environ.get("REVSEARCH_TEST_EXPECT_GDOWN")
    if expected:
        assert gdown.__version__ == expected


@pytest.fixture
def drive_via_server(server, monkeypatch):
    """Send Google Drive ids through gdown to the local server (``<root>/<id>``)."""
    import revsearch.data

    monkeypatch.setattr(revsearch.data, "DRIVE_DOWNLOAD_URL", server.base_url + "/{id}")
    return server


DRIVE_ID = "1AbCdEfGhIjKlMnOpQrStUvWxYz0123"


def test_a_drive_id_is_downloaded_with_gdown_of_any_version(drive_via_server, tmp_path):
    zip_one_top_folder(drive_via_server.root / DRIVE_ID)
    dest = download(DRIVE_ID, tmp_path / "dl" / "images.zip", quiet=True)
    assert dest.read_bytes() == (drive_via_server.root / DRIVE_ID).read_bytes()
    assert leftovers(tmp_path / "dl") == ["images.zip"]
    assert drive_via_server.hits["/" + DRIVE_ID] == 1
    download(DRIVE_ID, dest, quiet=True)  # already there: no request
    assert drive_via_server.hits["/" + DRIVE_ID] == 1


def test_a_drive_download_that_fails_says_so_with_any_gdown(drive_via_server, tmp_path):
    # gdown 5.x saves the error page (then: "HTML page"); 6.x raises on the status.
    with pytest.raises(DownloadError, match=r"HTTP 500|HTML page") as info:
        download("error500-aaaaaaaaaaaaaaaaaaaa", tmp_path / "x.zip", quiet=True)
    assert "drive.google.com/file/d/error500-aaaaaaaaaaaaaaaaaaaa" in str(info.value)  # by hand
    assert "AttributeError" not in str(info.value)
    assert leftovers(tmp_path, {"served"}) == []


def test_a_drive_download_with_several_stale_partials_starts_over(drive_via_server, tmp_path):
    zip_files_at_root(drive_via_server.root / DRIVE_ID)
    dest = tmp_path / "v.zip"
    for tag in ("abcd1234", "efgh5678"):
        (tmp_path / f"v.zip.part{tag}.part").write_bytes(b"PK stale")
    download(DRIVE_ID, dest, quiet=True)
    assert dest.read_bytes() == (drive_via_server.root / DRIVE_ID).read_bytes()
    assert leftovers(tmp_path, {"served"}) == ["v.zip"]


def test_gdown_options_are_found_by_looking():
    import types

    from revsearch.data import gdown_options

    def old(url=None, output=None, quiet=False, resume=False):  # gdown 5.x / 6.0-6.2
        pass

    def new(url=None, output=None, quiet=False, resume=False, timeout=None, retries=0):  # 6.3+
        pass

    class FileURLRetrievalError(Exception):
        pass

    class GdownDownloadError(Exception):
        pass

    five = types.SimpleNamespace(download=old, exceptions=types.SimpleNamespace(FileURLRetrievalError=FileURLRetrievalError))
    kwargs, errors = gdown_options(five)
    assert kwargs == {} and errors == (FileURLRetrievalError,)
    six = types.SimpleNamespace(
        download=new,
        exceptions=types.SimpleNamespace(DownloadError=GdownDownloadError, FileURLRetrievalError=FileURLRetrievalError),
    )
    kwargs, errors = gdown_options(six)
    assert set(kwargs) == {"timeout", "retries"} and errors == (GdownDownloadError, FileURLRetrievalError)


def test_an_interrupted_url_download_resumes_with_a_range_request(server, tmp_path):
    zip_one_top_folder(server.root / "big.zip")
    data = (server.root / "big.zip").read_bytes()
    dest = tmp_path / "big.zip"
    (tmp_path / "big.zip.partial").write_bytes(data[:100])  # what a dropped transfer left
    download(server.url("ranged/big.zip"), dest, quiet=True)
    assert dest.read_bytes() == data
    assert server.ranges[-1] == "bytes=100-"
    assert leftovers(tmp_path, {"served"}) == ["big.zip"]


def test_a_partial_longer_than_the_file_starts_over(server, tmp_path):
    zip_one_top_folder(server.root / "big.zip")
    data = (server.root / "big.zip").read_bytes()
    (tmp_path / "big.zip.partial").write_bytes(b"x" * (len(data) + 10))  # the file changed
    download(server.url("ranged/big.zip"), tmp_path / "big.zip", quiet=True)
    assert (tmp_path / "big.zip").read_bytes() == data


def test_archives_are_deleted_once_unpacked_unless_kept(server, tmp_path, caplog):
    import logging

    zip_one_top_folder(server.root / "images.zip")
    make_zip(server.root / "vectors.zip", {"vectors/1.pickle": b"p", "vectors/2.pkl": b"q"})
    root = tmp_path / "data"
    with caplog.at_level(logging.INFO, logger="revsearch"):
        got = fetch_original_data(
            root, quiet=True, images_source=server.url("images.zip"), vectors_source=server.url("vectors.zip")
        )
    assert listing(got["vectors"]) == {"1.pickle": b"p", "2.pkl": b"q"}  # .pickle/.pkl accepted
    assert listing(got["images"]) == FILES
    assert leftovers(root / "archives") == []
    assert "Deleted the archive" in caplog.text and "freed" in caplog.text


def test_unpacking_to_chosen_folders(server, tmp_path):
    zip_one_top_folder(server.root / "images.zip")
    got = fetch_original_data(
        tmp_path / "local", vectors=False, quiet=True, images_source=server.url("images.zip"),
        images_dir=tmp_path / "drive" / "imagenet_resized",
    )
    assert got == {"images": tmp_path / "drive" / "imagenet_resized"}
    assert listing(got["images"]) == FILES


def test_folder_size_and_format_bytes(tmp_path):
    from revsearch.data import folder_size, format_bytes

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_bytes(b"1" * 1500)
    (tmp_path / "y").write_bytes(b"1" * 500)
    assert folder_size(tmp_path) == 2000 and folder_size(tmp_path / "none") == 0
    assert format_bytes(2000) == "2.0 kB" and format_bytes(999) == "999 bytes"
    assert format_bytes(3.5e9) == "3.5 GB" and format_bytes(7e12) == "7000.0 GB"
