"""The fixed vocabularies every layer shares: what a file is, what a segment is, what a query is.

They are string enums, so a value compares equal to the string stored in Milvus and SQLite
(`Modality.SHOT == "shot"`) and prints as that string.
"""

from __future__ import annotations

from enum import StrEnum


class MediaType(StrEnum):
    """What a file is, judged from its content (ingest.detect); one pipeline per type."""

    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"


class Modality(StrEnum):
    """What a segment (one row in a space) is."""

    DOCUMENT = "document"  # a chunk of a document's text (page and character range)
    LABEL = "label"  # a photo's classifier labels, as text
    OCR = "ocr"  # words printed in a photo
    IMAGE = "image"  # a photo
    TRANSCRIPT = "transcript"  # a stretch of speech (seconds)
    TAGS = "tags"  # a run of sound-event tags (seconds)
    AUDIO = "audio"  # a window of sound (seconds)
    RECORDING = "recording"  # a whole recording's sound, for "recordings like this one"
    SHOT = "shot"  # a video moment's keyframe (seconds)
    SHOT_LABEL = "shot_label"  # a video moment's keyframe labels, as text (seconds)

    @property
    def timed(self) -> bool:
        """Its start and end are seconds in a recording or video (else characters, or none)."""
        return self in _TIMED

    @property
    def moment(self) -> bool:
        """A moment of a video: neighbouring hits merge into one time range."""
        return self in (Modality.SHOT, Modality.SHOT_LABEL)

    @property
    def picture(self) -> bool:
        """A still picture or what was read from one (no time range, a thumbnail)."""
        return self in (Modality.IMAGE, Modality.LABEL, Modality.OCR)


_TIMED = frozenset(
    {
        Modality.TRANSCRIPT,
        Modality.TAGS,
        Modality.AUDIO,
        Modality.RECORDING,
        Modality.SHOT,
        Modality.SHOT_LABEL,
    }
)


class IngestBackend(StrEnum):
    """Where an ingest decodes and embeds (the catalog and the writes stay with its driver)."""

    LOCAL = "local"  # reader threads or processes and the models in this process
    RAY = "ray"  # Ray Data and actors on a Ray cluster (ingest/ray_backend.py)


class QueryKind(StrEnum):
    """What a user searches with."""

    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"
    VIDEO = "video"
