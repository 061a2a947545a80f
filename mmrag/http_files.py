"""Serving library files over HTTP safely: a media id to a file still inside the folder it was
ingested from, its type from its content, and byte ranges so players can seek.

No path ever comes from a request: the API looks a media id up in the catalog, and the file is
opened only if its real path (symlinks resolved) is a regular file under the real path of its
ingest root, so a symlink in the library leading out of it is never followed to its target.
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mmrag.ingest.detect import HEAD_BYTES, UnsupportedContent, detect_kind

MEDIA_ID = re.compile(r"[0-9a-f]{16,64}")  # content hashes (xxh3-128: 32 hex digits)
THUMB_KEY = re.compile(r"[0-9a-f]{16,64}(?:_[tp][0-9]{1,12})?")  # a content, video moment, page
CHUNK = 256 * 1024

# Formats whose name is not enough for mimetypes; anything a page could run as script (HTML,
# SVG) is served as plain text.
_TYPES = {
    "pdf": "application/pdf",
    "jpeg": "image/jpeg",
    "cr2": "image/x-canon-cr2",
    "heic": "image/heic",
    "avif": "image/avif",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "mka": "audio/x-matroska",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mov": "video/quicktime",
    "3gp": "video/3gpp",
    "mkv": "video/x-matroska",
    "ogv": "video/ogg",
    "avi": "video/x-msvideo",
    "mpg": "video/mpeg",
    "wmv": "video/x-ms-wmv",
    "flv": "video/x-flv",
}
_SCRIPTABLE = ("text/", "image/svg", "application/xhtml", "application/xml")


class Unsatisfiable(Exception):
    """A Range header that no byte of the file satisfies (416)."""


@dataclass
class Opened:
    """An open regular file: its descriptor, size, modification time and name. Closed once
    sent, or when dropped (a response whose client left before it started)."""

    fd: int
    size: int
    mtime_ns: int
    name: str
    closed: bool = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)

    def __del__(self) -> None:
        self.close()

    def head(self) -> bytes:
        return os.pread(self.fd, HEAD_BYTES, 0)

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes start..end-1, then the file is closed (also when the client goes away)."""
        try:
            at = start
            while at < end:
                data = os.pread(self.fd, min(CHUNK, end - at), at)
                if not data:
                    break  # the file shrank while being sent
                at += len(data)
                yield data
        finally:
            self.close()


def open_inside(path: str, root: str) -> Opened | None:
    """The file at `path`, opened, if its real path is a regular file inside the real path of
    `root` (the folder it was ingested from); else None."""
    try:
        real = os.path.realpath(path, strict=True)
        top = os.path.realpath(root, strict=True)
    except (OSError, ValueError):
        return None
    if real == top or os.path.commonpath([real, top]) != top:
        return None  # a symlink leading out of the library, or the root itself
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(real, flags | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _still(fd, real):
            os.close(fd)
            return None
    except OSError:
        os.close(fd)
        return None
    return Opened(fd, st.st_size, st.st_mtime_ns, os.path.basename(real))


def _still(fd: int, real: str) -> bool:
    """The descriptor is the file that was checked (a folder swapped for a symlink between the
    check and the open is caught where the system can say which file a descriptor is)."""
    proc = f"/proc/self/fd/{fd}"
    if not os.path.exists(proc):
        return True
    return os.readlink(proc) == real


def content_type(opened: Opened) -> str:
    """The file's type from its first bytes (a misnamed file gets its real type); a text
    format, HTML included, as plain text."""
    head = opened.head()
    try:
        kind = detect_kind(Path(opened.name), head=head)
    except UnsupportedContent:
        return "application/octet-stream"
    if kind.format in _TYPES:
        return _TYPES[kind.format]
    if kind.media == "text":
        guessed = mimetypes.guess_type(f"x.{kind.format}")[0] or "text/plain"
        if guessed.startswith(_SCRIPTABLE):
            return "text/plain; charset=utf-8" if _utf8(head) else "text/plain"
        return guessed
    if kind.format == "webm":
        return f"{kind.media}/webm"
    return mimetypes.guess_type(f"x.{kind.format}")[0] or f"{kind.media}/{kind.format}"


def _utf8(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # only a character cut at the end of the head
    return True


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) for a single Range (`a-b`, `a-`, `-n`); None to send the whole
    file (no header, a malformed one, or several ranges, which a server may ignore: RFC 9110
    §14.2); Unsatisfiable when no byte is in range."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if not match or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # the last n bytes
        n = int(last)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - n), size
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise Unsatisfiable
    end = min(int(last) + 1, size) if last else size
    return start, end
