"""Download one file into place, verified, with the standard library only.

The bytes stream into a temp file beside the target (same folder, so the
final rename is atomic), are hashed on the way, and are renamed into place
only when the checksum matches: the target path never holds a partial or
unverified file, and the temp file is removed whatever happens. Transient
failures (connection errors, 5xx, a body cut short) are retried a bounded
number of times with exponential backoff; a redirect from https to anything
else is refused.

Which URL and hash are used for CIFAR (the official ones, or a mirror given
by argument or by ``VGGCIFAR_CIFAR10_URL`` / ``VGGCIFAR_CIFAR10_SHA256`` and
their CIFAR-100 twins) is decided in ``vggcifar.data.load_cifar``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit


class DownloadError(ValueError):
    """A download that failed for good; the message names the URL and the fix."""

_CHUNK = 2**20  # bytes read and hashed per step
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class _Transient(Exception):
    """A failure worth another attempt."""


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follows redirects, except from https to anything that is not https."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlsplit(req.full_url).scheme == "https" and urlsplit(newurl).scheme != "https":
            raise DownloadError(f"{req.full_url}: redirected to {newurl}, a downgrade from https; refusing it "
                            f"(download the file yourself and pass it with --data PATH)")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def build_opener() -> urllib.request.OpenerDirector:
    """urllib's opener with the https-downgrade guard in place."""
    return urllib.request.build_opener(_NoDowngrade)


class _Bar:
    """``name  12.3/162.6 MB  7%`` redrawn in place at most five times a second."""

    def __init__(self, stream, name: str, total: int | None):
        self.stream, self.name, self.total, self.last = stream, name, total, 0.0

    def update(self, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if self.stream is None or (not final and now - self.last < 0.2):
            return
        self.last = now
        size = f"{done / 1e6:.1f}/{self.total / 1e6:.1f} MB {100 * done // self.total:3d}%" if self.total \
            else f"{done / 1e6:.1f} MB"
        self.stream.write(f"\rdownloading {self.name}  {size}" + ("\n" if final else ""))
        self.stream.flush()


def _progress_stream(progress):
    if progress is True:
        return sys.stderr if getattr(sys.stderr, "isatty", lambda: False)() else None
    return progress if hasattr(progress, "write") else None


def _attempt(url: str, target: Path, opener, timeout: float, sha256: str | None, md5: str | None,
             stream, hint: str, hash_hint: str) -> Path:
    from vggcifar import __version__

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        request = urllib.request.Request(url, headers={"User-Agent": f"vggcifar/{__version__}"})
        with os.fdopen(fd, "wb") as out:
            try:
                resp = opener.open(request, timeout=timeout)
            except urllib.error.HTTPError as exc:
                if exc.code in _RETRY_STATUS:
                    raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
                raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; {hint}") from None
            with resp:
                if urlsplit(url).scheme == "https" and urlsplit(resp.geturl()).scheme != "https":
                    raise DownloadError(f"{url}: ended at {resp.geturl()}, a downgrade from https; refusing it")
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                hashers = [hashlib.sha256(), hashlib.md5(usedforsecurity=False)]
                bar = _Bar(stream, target.name, total)
                done = 0
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    for h in hashers:
                        h.update(chunk)
                    done += len(chunk)
                    bar.update(done)
                bar.update(done, final=True)
            if total is not None and done != total:
                raise _Transient(f"connection closed after {done} of {total} bytes")
            out.flush()
            os.fsync(out.fileno())
        for name, expected, h in (("sha256", sha256, hashers[0]), ("md5", md5, hashers[1])):
            if expected and h.hexdigest() != expected.lower():
                raise DownloadError(f"{url}: {name} {h.hexdigest()} does not match the expected {expected.lower()}; "
                                f"nothing was saved ({hash_hint})")
        os.replace(tmp, target)
        return target
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch(url: str, target: str | os.PathLike, *, sha256: str | None = None, md5: str | None = None,
          retries: int = 3, backoff: float = 1.0, sleep: Callable[[float], None] | None = None,
          timeout: float = 60.0, progress=True, hint: str = "download it yourself and pass it with --data PATH",
          hash_hint: str = "check the URL, or pass the expected sha256 of this file",
          opener: urllib.request.OpenerDirector | None = None) -> Path:
    """Download ``url`` to ``target`` and return ``target``.

    At least one of ``sha256`` / ``md5`` is required, and every one given
    must match before the file is renamed into place. ``retries`` attempts in
    all, ``backoff * 2**k`` seconds apart (``sleep``, default ``time.sleep``,
    is injectable for tests).
    ``progress``: True draws a bar on stderr when it is a terminal, a file
    object draws it there, False never. ``hint`` ends the error raised when
    the download fails for good (say where to put the file by hand).
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"Expected an http(s) URL. Received: url={url!r}")
    if not sha256 and not md5:
        raise ValueError("Expected a checksum to verify the download against. Received: sha256=None, md5=None")
    if retries < 1:
        raise ValueError(f"Expected `retries` to be a positive integer. Received: retries={retries!r}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    opener = opener or build_opener()
    stream = _progress_stream(progress)
    last: Exception | None = None
    for attempt in range(retries):
        if attempt:
            (sleep or time.sleep)(backoff * 2 ** (attempt - 1))
        try:
            return _attempt(url, target, opener, timeout, sha256, md5, stream, hint, hash_hint)
        except _Transient as exc:
            last = exc
        except urllib.error.URLError as exc:
            last = exc.reason if isinstance(exc.reason, Exception | str) else exc
        except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
            last = exc
    raise DownloadError(f"cannot download {url}: {last} (after {retries} attempts); {hint}")
