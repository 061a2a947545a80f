"""Walk the library: every regular file under the given roots, once, in a stable order.

Hidden files and folders (dot names) and system clutter are skipped; symlinks to folders are
followed but each real folder is visited once, so a symlink loop cannot trap the walk.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

import xxhash

SKIP_NAMES = {
    "Thumbs.db",
    "desktop.ini",
    "Icon\r",
    "__MACOSX",
    "$RECYCLE.BIN",
    "System Volume Information",
    "lost+found",
}


@dataclass(frozen=True)
class FoundFile:
    path: str  # absolute, symlinks in the folder part kept as the user sees them
    display: str  # as the user named it: the root they typed joined with the relative part
    root: str  # the absolute root it was found under
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ScanProblem:
    """What could not be read. `path` (absolute) and `root` are set for an entry found under a
    folder root, so the catalog can record it; `unlisted`: a folder whose contents went unseen."""

    display: str
    reason: str
    path: str = ""
    root: str = ""
    unlisted: bool = False


def _skip(name: str) -> bool:
    return name.startswith(".") or name in SKIP_NAMES or name.endswith("~")


def scan(roots: list[str]) -> Iterator[FoundFile | ScanProblem]:
    """Yield files under each root (a root may itself be a file), and what could not be read."""
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    for given in roots:
        root = os.path.abspath(given)
        if not os.path.exists(root):
            yield ScanProblem(given, "no such file or folder")
            continue
        if os.path.isfile(root):
            found = _stat(root, given, os.path.dirname(root))
            if found and found.path not in seen_files:
                seen_files.add(found.path)
                yield found
            continue
        for dirpath, dirnames, filenames, problem in _walk(root, seen_dirs):
            if problem:
                yield ScanProblem(_display(given, root, dirpath), problem, dirpath, root, True)
                continue
            dirnames[:] = sorted(d for d in dirnames if not _skip(d))
            for name in sorted(filenames):
                if _skip(name):
                    continue
                full = os.path.join(dirpath, name)
                if full in seen_files:
                    continue
                seen_files.add(full)
                item = _stat(full, _display(given, root, full), root)
                if item:
                    yield item


def _walk(
    root: str, seen: set[tuple[int, int]]
) -> Iterator[tuple[str, list[str], list[str], str | None]]:
    """os.walk with followlinks, refusing to enter a (device, inode) twice."""
    errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=errors.append):
        while errors:
            err = errors.pop()
            yield err.filename or dirpath, [], [], f"cannot list folder: {err.strerror}"
        try:
            st = os.stat(dirpath)
        except OSError as exc:
            yield dirpath, [], [], f"cannot read folder: {exc.strerror}"
            dirnames[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            dirnames[:] = []  # a symlink led back to a folder already walked
            continue
        seen.add(key)
        yield dirpath, dirnames, filenames, None
    while errors:
        err = errors.pop()
        yield err.filename or root, [], [], f"cannot list folder: {err.strerror}"


def _display(given: str, root: str, full: str) -> str:
    rel = os.path.relpath(full, root)
    return given if rel == "." else os.path.join(given, rel)


def _stat(full: str, display: str, root: str) -> FoundFile | ScanProblem | None:
    try:
        st = os.stat(full)
    except OSError as exc:
        return ScanProblem(display, _unreadable(full, exc), full, root)
    if not stat.S_ISREG(st.st_mode):  # what os.path.isfile asks, without a second stat
        return None  # sockets, fifos, devices
    return FoundFile(full, display, root, st.st_size, st.st_mtime_ns)


def _unreadable(full: str, exc: OSError) -> str:
    """Why an entry cannot be read, in the user's terms: a link that leads nowhere or in a circle
    is named as such, not as a bare errno."""
    if os.path.islink(full):
        if exc.errno == errno.ENOENT:
            return f"broken symlink: {os.path.realpath(full)} does not exist"
        if exc.errno == errno.ELOOP:
            return "symlink loop: the link leads back to itself"
    return f"cannot stat: {exc.strerror}"


def content_hash(path: str, whole: bytes | None = None, block: int = 1 << 20) -> str:
    """xxh3-128 of the bytes: fast (GB/s), and collisions are not a practical concern here.
    `whole`: the file's entire content where the caller read it already (a small file's head
    that met the end of the file), so the file is not opened again."""
    if whole is not None:
        return xxhash.xxh3_128_hexdigest(whole)
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while data := f.read(block):
            h.update(data)
    return h.hexdigest()
