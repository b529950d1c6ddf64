"""Query by URL (revsearch.remote), through the API and the command line, against a local HTTP server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_photo, write_photos
from revsearch.errors import ImageReadError
from revsearch.remote import fetch_image, is_url, read_query

ROOT = Path(__file__).resolve().parents[1]


def _jpeg(seed: int = 99) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(make_photo(seed)).save(buf, "JPEG", quality=92)
    return buf.getvalue()


PAGE = b"<!DOCTYPE html><html><head><title>A cat</title></head><body><img src='cat.jpg'></body></html>"


class _Handler(BaseHTTPRequestHandler):
    routes: dict = {}

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0]
        if path == "/cat.jpg":
            self._send(200, "image/jpeg", self.routes["cat"])
        elif path == "/page.html":
            self._send(200, "text/html; charset=utf-8", PAGE)
        elif path == "/page-as-image":  # a page a misconfigured server labels as an image
            self._send(200, "image/jpeg", PAGE)
        elif path == "/text.jpg":
            self._send(200, "image/jpeg", b"plain words, no picture at all")
        elif path == "/huge.jpg":  # announces its size
            self._send(200, "image/jpeg", b"\xff\xd8" + b"0" * 300_000)
        elif path == "/huge-chunked.jpg":  # does not: caught while reading
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            for _ in range(40):
                self.wfile.write(b"\xff" * 10_000)
            self.close_connection = True
        elif path == "/slow.jpg":  # sends nothing for a long time
            time.sleep(5)
            self._send(200, "image/jpeg", self.routes["cat"])
            self.routes["finished"].add(path)
        elif path == "/trickle.jpg":  # sends a little, often: never idle long, never done
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            try:
                for _ in range(60):
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                pass
            self.routes["finished"].add(path)
            self.close_connection = True
        else:
            self._send(404, "text/html", b"<html><body>Not Found</body></html>")

    @staticmethod
    def finished_routes(server: str) -> set[str]:
        """The slow routes whose answer was sent in full so far."""
        return _SERVERS[server].RequestHandlerClass.routes["finished"]

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


#: The running test servers, by URL.
_SERVERS: dict[str, ThreadingHTTPServer] = {}


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # noqa: ANN001
        # The client hanging up mid-body is what the size-cap and time-limit tests do on purpose.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    # "finished": the slow routes that sent their whole answer (so a test can tell the client gave up first)
    handler = type("H", (_Handler,), {"routes": {"cat": _jpeg(), "finished": set()}})
    httpd = _Server(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}"
        _SERVERS[url] = httpd
        yield url
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_is_url():
    assert is_url("https://example.com/cat.jpg") and is_url(" HTTP://x/y.png")
    assert not is_url("cat.jpg") and not is_url(Path("https:/x")) and not is_url(b"https://x")


def test_a_good_image_is_downloaded(server):
    data = fetch_image(server + "/cat.jpg?size=large")
    assert data == _jpeg()
    assert read_query(server + "/cat.jpg") == data


@pytest.mark.parametrize(
    "path, kwargs, needles",
    [
        ("/missing.jpg", {}, ["HTTP 404", "not found", "/missing.jpg"]),
        ("/page.html", {}, ["web page", "Copy image address"]),
        ("/page-as-image", {}, ["web page"]),
        ("/text.jpg", {}, ["not an image"]),
        ("/huge.jpg", {"max_bytes": 100_000}, ["MiB", "smaller copy"]),
        ("/huge-chunked.jpg", {"max_bytes": 100_000}, ["larger than", "smaller copy"]),
        ("/slow.jpg", {"timeout": 1.0}, ["longer than 1 s", "slow"]),
        ("/trickle.jpg", {"timeout": 1.0}, ["longer than 1 s", "slow"]),
    ],
)
def test_bad_urls_are_clear_errors(server, path, kwargs, needles):
    with pytest.raises(ImageReadError) as info:
        fetch_image(server + path, **kwargs)
    for needle in needles:
        assert needle in str(info.value), str(info.value)
    if "timeout" in kwargs:  # the client gave up while the server was still answering (no clock read here)
        assert path not in _Handler.finished_routes(server)


def test_an_unreachable_host(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ImageReadError, match="cannot reach 127.0.0.1"):
        fetch_image(f"http://127.0.0.1:{port}/x.jpg", timeout=3)


@pytest.fixture(scope="module")
def url_index(tmp_path_factory, resnet_random, server):
    from revsearch import Index

    root = tmp_path_factory.mktemp("url")
    photos = root / "photos"
    write_photos(photos, 5)
    # The served cat is one of the indexed photos (byte for byte).
    (photos / "cat.jpg").write_bytes(_jpeg())
    Index.build(photos, root / "vectors", resnet_random, progress=False)
    return photos, root / "vectors"


def test_reverse_image_search_with_a_url(url_index, server):
    from revsearch import reverse_image_search

    photos, vectors = url_index
    results = reverse_image_search(server + "/cat.jpg", vector_dir=vectors, k=3, weights=None, expand=False)
    assert results[0].relpath == "cat.jpg" and results[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ImageReadError, match="bad query.*HTTP 404"):
        reverse_image_search(server + "/nope.jpg", vector_dir=vectors, weights=None)


def test_cli_search_with_a_url(url_index, server, tmp_path):
    _, vectors = url_index
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run(
        [sys.executable, "-m", "revsearch", "search", server + "/cat.jpg", str(vectors), "-k", "2", "--json",
         "--out", str(tmp_path / "grid.png")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["query"] == server + "/cat.jpg" and got["results"][0]["relpath"] == "cat.jpg"
    assert (tmp_path / "grid.png").read_bytes().startswith(b"\x89PNG")
    bad = subprocess.run(
        [sys.executable, "-m", "revsearch", "search", server + "/page.html", str(vectors)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "web page" in bad.stderr
