"""The one error a pipeline raises for a file it cannot read: the run reports it and goes on."""

from __future__ import annotations


class MediaError(Exception):
    """A file cannot be turned into pieces; str() says why, in plain words, for the user."""


class NoVideoStream(MediaError):
    """A video container with sound only (a podcast saved as .mp4): a recording, not a video."""
