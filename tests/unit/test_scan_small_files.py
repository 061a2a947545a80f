"""Scanning and hashing small files: the hash of bytes already read is the file's hash, and
the scan tells regular files from the rest with one stat."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmrag.ingest.detect import HEAD_BYTES
from mmrag.ingest.scan import FoundFile, content_hash, scan


@pytest.mark.parametrize("size", [1, 1000, HEAD_BYTES - 1, HEAD_BYTES, 3 * HEAD_BYTES + 7])
def test_hash_of_the_bytes_read_is_the_files_hash(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    assert content_hash(str(f), data) == content_hash(str(f)) == content_hash(str(f), block=100)


def test_hash_from_bytes_does_not_open_the_file(tmp_path: Path) -> None:
    gone = tmp_path / "gone.txt"  # the bytes alone are hashed: no file is needed
    assert content_hash(str(gone), b"abc") == content_hash(_write(tmp_path / "x", b"abc"))


def test_scan_lists_regular_files_and_links_to_them_not_fifos(tmp_path: Path) -> None:
    _write(tmp_path / "a.txt", b"a")
    os.symlink(tmp_path / "a.txt", tmp_path / "link.txt")
    os.mkfifo(tmp_path / "pipe")
    found = [f for f in scan([str(tmp_path)]) if isinstance(f, FoundFile)]
    assert [Path(f.path).name for f in found] == ["a.txt", "link.txt"]
    assert all(f.size == 1 for f in found)


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)
