"""Query images given by URL: download them carefully, as any reverse image search lets you paste a link.

:func:`fetch_image` downloads one image with a time limit and a size cap and checks that what
arrived is an image (not the web page around it); :func:`read_query` is what the API, the command
line and the widget call on a query: a URL is downloaded, anything else is read as before.

``requests`` is imported only when a URL is fetched, so importing this module is cheap.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
import urllib.parse
from typing import Any

from ..core.errors import ImageReadError
from .images import ImageSource, read_source

__all__ = ["MAX_QUERY_BYTES", "QUERY_TIMEOUT", "fetch_image", "is_url", "read_query"]

logger = logging.getLogger(__name__)

#: Largest image file :func:`fetch_image` accepts by default (bytes).
MAX_QUERY_BYTES = 30 * 2**20
#: Seconds :func:`fetch_image` waits by default for the whole download.
QUERY_TIMEOUT = 30.0

_URL_RE = re.compile(r"^https?://", re.IGNORECASE)
_CHUNK = 64 * 1024
_HTML_STARTS = (b"<!doctype", b"<html", b"<head", b"<body", b"<?xml", b"<svg", b"<!--")


def is_url(query: Any) -> bool:
    """Tell whether ``query`` is an http(s) URL (a string starting with ``http://`` or ``https://``)."""
    return isinstance(query, str) and bool(_URL_RE.match(query.strip()))


def _short(url: str) -> str:
    return url if len(url) <= 120 else url[:80] + "..." + url[-30:]


def fetch_image(url: str, *, timeout: float = QUERY_TIMEOUT, max_bytes: int = MAX_QUERY_BYTES) -> bytes:
    """Download the image at ``url``.

    Parameters
    ----------
    url : str
        An http(s) URL of an image file (JPEG, PNG, WebP, GIF, BMP, TIFF...).
    timeout : float, default :data:`QUERY_TIMEOUT`
        Seconds the whole download may take (a server that sends slowly is given up on too).
    max_bytes : int, default :data:`MAX_QUERY_BYTES`
        Largest file accepted; a bigger one is refused as soon as that is known.

    Returns
    -------
    bytes
        The file's content; Pillow can open it.

    Raises
    ------
    ImageReadError
        If the server cannot be reached, answers with an error status, is too slow, sends
        more than ``max_bytes``, or sends something that is not an image (for example the web
        page the image is shown on). The message names the URL and what to do.
    """
    import requests

    url = url.strip()
    name = _short(url)
    if not is_url(url):
        raise ImageReadError(f"{name!r} is not an http(s) URL")
    deadline = time.monotonic() + timeout
    try:
        with requests.get(
            url,
            stream=True,
            timeout=(min(10.0, timeout), timeout),
            headers={"User-Agent": "revsearch (reverse image search)", "Accept": "image/*,*/*;q=0.5"},
        ) as res:
            if res.status_code >= 400:
                reason = " (not found)" if res.status_code == 404 else ""
                raise ImageReadError(
                    f"downloading the image at {name} failed: the server answered HTTP {res.status_code}"
                    f"{reason}. Check the link (open it in a browser: it should show the picture alone)."
                )
            length = res.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_bytes:
                raise ImageReadError(
                    f"the file at {name} is {int(length) / 2**20:.1f} MiB, more than the "
                    f"{max_bytes / 2**20:.0f} MiB a query may have: download it and pass a smaller copy"
                )
            content_type = res.headers.get("Content-Type", "").split(";")[0].strip().lower()
            data = _read_capped(res, name, deadline, timeout, max_bytes)
    except requests.exceptions.Timeout:
        raise ImageReadError(
            f"downloading the image at {name} took longer than {timeout:g} s: the server is too slow "
            "or not answering; try again, or download the file and search with it"
        ) from None
    except requests.exceptions.RequestException as e:
        host = urllib.parse.urlparse(url).hostname or url
        raise ImageReadError(
            f"could not download the image at {name}: cannot reach {host} ({type(e).__name__}). "
            "Check the link and the internet connection."
        ) from None
    _check_image(data, name, content_type)
    logger.info("downloaded the query image %s (%d bytes)", name, len(data))
    return data


def _read_capped(res: Any, name: str, deadline: float, timeout: float, max_bytes: int) -> bytes:
    # read1 returns what has arrived (urllib3 2), so a server trickling bytes is caught by the deadline.
    raw = res.raw
    buf = io.BytesIO()
    while True:
        chunk = raw.read1(_CHUNK, decode_content=True) if hasattr(raw, "read1") else raw.read(
            _CHUNK, decode_content=True
        )
        if not chunk:
            break
        buf.write(chunk)
        if buf.tell() > max_bytes:
            raise ImageReadError(
                f"the file at {name} is larger than the {max_bytes / 2**20:.0f} MiB a query may have: "
                "download it and pass a smaller copy"
            )
        if time.monotonic() > deadline:
            raise ImageReadError(
                f"downloading the image at {name} took longer than {timeout:g} s: the server is too "
                "slow; try again, or download the file and search with it"
            )
    return buf.getvalue()


def _check_image(data: bytes, name: str, content_type: str) -> None:
    if not data:
        raise ImageReadError(f"the server sent an empty file for {name}")
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if content_type in ("text/html", "application/xhtml+xml") or head.startswith(_HTML_STARTS):
        raise ImageReadError(
            f"{name} is a web page, not an image: open it in a browser, right-click the picture and "
            "choose 'Copy image address', then search with that link"
        )
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        kind = f" (the server calls it {content_type})" if content_type else ""
        raise ImageReadError(f"the file at {name} is not an image Pillow can read{kind}: {e}") from None


def read_query(query: ImageSource, *, timeout: float = QUERY_TIMEOUT, max_bytes: int = MAX_QUERY_BYTES) -> ImageSource:
    """A query's image source: a URL is downloaded (:func:`fetch_image`), a path read, anything else kept.

    Parameters
    ----------
    query : str, os.PathLike, bytes, PIL.Image.Image or numpy.ndarray
    timeout, max_bytes
        For a URL, as in :func:`fetch_image`.

    Returns
    -------
    ImageSource
        The file's bytes for a URL or a path; ``query`` itself otherwise.

    Raises
    ------
    ImageReadError
        If the URL cannot be fetched as an image, or the path cannot be read.
    """
    if is_url(query):
        return fetch_image(str(query), timeout=timeout, max_bytes=max_bytes)
    if isinstance(query, (str, os.PathLike)):
        return read_source(query)
    return query
