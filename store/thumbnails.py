"""The thumbnail cache beside the store: one JPEG per content (or video moment), by key.

Keys are content hashes (or a hash and a moment's start), so a renamed file keeps its thumbnail,
and the path is built from the key alone: the HTTP API serves thumbnails without ever taking a
path from a request.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

# Thumbnails shown with hits fill a 256 px square cell (shorter side 256, as Immich's do): a
# photo decoded for the models already has that size, so a thumbnail is one JPEG encode.
THUMBNAIL_SIDE = 256

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def thumbnail_path(cache_dir: Path, media_id: str, size: int = THUMBNAIL_SIDE) -> Path:
    """cache_dir/ab/<media_id>_<size>.jpg: keyed by content hash, so a renamed file keeps it.

    The id is checked because the path is built from it and served over HTTP.
    """
    if not _SAFE_ID.fullmatch(media_id):
        raise ValueError(f"media id {media_id!r} is not a plain hash (letters, digits, _ and -)")
    return Path(cache_dir) / media_id[:2] / f"{media_id}_{int(size)}.jpg"


def ensure_thumbnail(
    cache_dir: Path, media_id: str, make: Callable[[], bytes], size: int = THUMBNAIL_SIDE
) -> Path:
    """The thumbnail's path, writing `make()`'s JPEG first only if it is missing (once per
    content hash).

    Written to a temporary file and renamed into place, so a reader or a crash never sees half a
    JPEG; an empty file (a crash before the data reached the disk) counts as missing.
    """
    target = thumbnail_path(cache_dir, media_id, size)
    try:
        if target.stat().st_size > 0:
            return target
    except FileNotFoundError:
        pass
    data = make()
    temp = {"dir": target.parent, "prefix": f".{target.name}.", "suffix": ".tmp"}
    try:
        fd, tmp = tempfile.mkstemp(**temp)
    except FileNotFoundError:  # the shard's first thumbnail (mkdir first costs every one 0.2 ms)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(**temp)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
