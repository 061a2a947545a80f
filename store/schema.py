"""The collection schema, in one place: spaces, segment rows, field sizes, and its version.

One embedding model = one vector space = one collection, named after the model, so switching
models builds a new collection beside the old one. Every segment row has the same fields whatever
its modality; a full-text space (`text`) also gets a BM25 function that derives a sparse vector
from `text`. Each collection records the schema version it was made with, and a collection made
by a newer mmrag is refused on open rather than misread.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:  # pymilvus takes ~0.6 s to import: only what talks to Milvus pays for it
    from pymilvus import MilvusClient

SCHEMA_VERSION = 1
SCHEMA_PROPERTY = "mmrag.schema"  # collection property holding SCHEMA_VERSION
MODEL_PROPERTY = "mmrag.model"
STORE_PROPERTY = "mmrag.store"  # the store id its catalog also holds (mmrag.app.open_store)
ID_MAX_LENGTH = 160  # "<xxh3-128 hex>:<space>:<index>"
MEDIA_ID_MAX_LENGTH = 64
MODALITY_MAX_LENGTH = 16
TEXT_MAX_BYTES = 65_535
OUTPUT_FIELDS = ["id", "media_id", "modality", "start", "end", "page", "text", "meta"]


class StoreError(RuntimeError):
    pass


@dataclass(frozen=True)
class Space:
    """A vector space: which model fills it and what the collection holds."""

    kind: str  # the space's name: "text", "image", "clip", "audio", ...
    model: str  # model id as configured
    dim: int
    bm25: bool = False

    def collection(self, prefix: str) -> str:
        return collection_name(prefix, self.kind, self.model)


def collection_name(prefix: str, kind: str, model: str) -> str:
    """`mmrag_text_all_MiniLM_L6_v2`: known without loading the model (the dim is checked)."""
    slug = re.sub(r"[^0-9A-Za-z]+", "_", Path(model.rstrip("/")).name).strip("_")
    return f"{prefix}_{kind}_{slug}"[:255]


@dataclass
class Segment:
    """One unit that gets a vector: a text chunk, a photo, a video moment, a sound window..."""

    id: str
    media_id: str
    modality: str  # a mmrag.kinds.Modality value
    start: float  # character offset for documents, seconds for timed media
    end: float
    text: str
    vector: np.ndarray
    page: int = 0  # 1-based page of a paginated document; 0 when none
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "media_id": self.media_id,
            "modality": self.modality,
            "start": float(self.start),
            "end": float(self.end),
            "page": int(self.page),
            "text": _fit_bytes(self.text, TEXT_MAX_BYTES),
            "meta": self.meta,
            # float32 as it is: pymilvus lists it once for the request, and the snapshot's
            # journal takes its bytes (a list here was listed, then made an array again)
            "vector": np.ascontiguousarray(self.vector, dtype=np.float32),
        }


class RankedLegs(NamedTuple):
    """A hybrid search's dense and BM25 legs as ranked (key, score) pairs, for a fusion done by
    the caller: it builds only the rows it keeps (`hits`: rows as `search_dense` gives them) and
    may check the keys' media against a filter first (`media_ids`). Keys are a snapshot's row
    numbers, or Milvus's segment ids."""

    dense: list[tuple[Any, float]]
    bm25: list[tuple[Any, float]]
    hits: Callable[[list[tuple[Any, float]]], list[dict]]
    media_ids: Callable[[Sequence[Any]], list[str]]


def _fit_bytes(text: str, limit: int) -> str:
    raw = text.encode("utf-8")
    return text if len(raw) <= limit else raw[:limit].decode("utf-8", "ignore")


def quote(value: str) -> str:
    """A string literal for a Milvus filter expression."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def collection_schema(client: MilvusClient, space: Space) -> Any:
    """The fields of a space's collection (and its BM25 function for a full-text space)."""
    from pymilvus import DataType, Function, FunctionType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_LENGTH)
    schema.add_field("media_id", DataType.VARCHAR, max_length=MEDIA_ID_MAX_LENGTH)
    schema.add_field("modality", DataType.VARCHAR, max_length=MODALITY_MAX_LENGTH)
    schema.add_field("start", DataType.DOUBLE)
    schema.add_field("end", DataType.DOUBLE)
    schema.add_field("page", DataType.INT64)
    text_opts: dict[str, Any] = {"max_length": TEXT_MAX_BYTES}
    if space.bm25:
        text_opts |= {"enable_analyzer": True, "analyzer_params": {"type": "standard"}}
    schema.add_field("text", DataType.VARCHAR, **text_opts)
    schema.add_field("meta", DataType.JSON)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=space.dim)
    if space.bm25:
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="text_bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
            )
        )
    return schema


def collection_properties(space: Space, store_id: str | None = None) -> dict[str, str]:
    props = {MODEL_PROPERTY: space.model, SCHEMA_PROPERTY: str(SCHEMA_VERSION)}
    return props | ({STORE_PROPERTY: store_id} if store_id else {})


def check_version(name: str, properties: dict[str, Any]) -> None:
    """Refuse a collection made by a newer mmrag (its rows may mean something else)."""
    found = properties.get(SCHEMA_PROPERTY)
    try:
        version = int(found) if found is not None else SCHEMA_VERSION
    except ValueError as exc:
        raise StoreError(f"collection {name}: unreadable schema version {found!r}") from exc
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"collection {name} was made by a newer mmrag (schema v{version}; this one reads "
            f"up to v{SCHEMA_VERSION}): upgrade mmrag, or use another store (--uri)"
        )
