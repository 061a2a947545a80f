"""BM25 on Milvus Lite with its `standard` analyzer against English analysis (stemmer, stop
words) on data/eval's 30 labelled queries (issue 16: "BM25 with an English analyzer where the
store supports it").

    python benchmarks/bm25_analyzers.py [--work /tmp/bm25-analyzers]

Ingests data/library/docs once into a store under WORK (text only, offline profile), copies its
text rows into one Lite collection per analyzer and scores BM25 alone (file-level nDCG@10,
recall@10, MRR@10). A probe then asks each collection for words that only stemming
("fermenting" against "ferments") or only a stop list ("the") would change.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ANALYZERS: dict[str, dict] = {
    "standard (mmrag's)": {"tokenizer": "standard"},
    "english: stemmer+stop": {
        "tokenizer": "standard",
        "filter": [
            "lowercase",
            {"type": "stemmer", "language": "english"},
            {"type": "stop", "stop_words": ["_english_"]},
        ],
    },
    "stemmer only": {
        "tokenizer": "standard",
        "filter": ["lowercase", {"type": "stemmer", "language": "english"}],
    },
    "stop words only": {
        "tokenizer": "standard",
        "filter": ["lowercase", {"type": "stop", "stop_words": ["_english_"]}],
    },
}
PROBES = ("fermenting", "ferments", "the")


def text_rows() -> tuple[list[dict], dict[str, str]]:
    """The text space's rows of the sample documents, and each media id's library path."""
    from mmrag.app import open_store
    from mmrag.settings import Settings

    catalog, store = open_store(Settings())
    try:
        col = next(c for c in store.existing_collections() if "_text_" in c)
        store.client.load_collection(col)
        it = store.client.query_iterator(
            col, batch_size=500, filter="", output_fields=["id", "media_id", "text"]
        )
        rows: list[dict] = []
        while batch := it.next():
            rows += batch
        it.close()
        root = REPO / "data" / "library"
        paths = catalog.display_paths(r["media_id"] for r in rows)
        return rows, {m: str(Path(p.path).resolve().relative_to(root)) for m, p in paths.items()}
    finally:
        store.close()
        catalog.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/bm25-analyzers"))
    args = ap.parse_args()
    home = args.work / "home"
    os.environ.update(
        MMRAG_HOME=str(home),
        MMRAG_PROFILE="offline",
        MMRAG_IMAGE_MODEL="",
        MMRAG_AUDIO_MODEL="",
        MMRAG_SPEECH_MODEL="",
        MMRAG_OCR="false",
        MMRAG_CACHE_DIR=str(args.work / "cache"),
    )
    if not home.exists():
        mmrag = Path(sys.executable).with_name("mmrag")
        docs = REPO / "data" / "library" / "docs"
        subprocess.run([str(mmrag), "ingest", str(docs), "--quiet"], check=True)

    from pymilvus import DataType, Function, FunctionType, MilvusClient

    from mmrag.search.evaluate import align_qrels, fold, load_qrels, load_queries, score

    rows, where = text_rows()
    queries = load_queries(REPO / "data" / "eval" / "text_queries.jsonl")
    qrels, _ = align_qrels(load_qrels(REPO / "data" / "eval" / "text_qrels.jsonl"), where.values())
    print(f"{len(rows)} text rows, {len(queries)} queries")
    client = MilvusClient(str(args.work / "analyzers.db"))
    for n, (name, params) in enumerate(ANALYZERS.items()):
        col = f"bm25_{n}"
        if client.has_collection(col):
            client.drop_collection(col)
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=200)
        schema.add_field("media_id", DataType.VARCHAR, max_length=100)
        schema.add_field(
            "text", DataType.VARCHAR, max_length=65535, enable_analyzer=True, analyzer_params=params
        )
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
            )
        )
        index = client.prepare_index_params()
        index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        client.create_collection(col, schema=schema, index_params=index)
        client.insert(col, [{k: r[k] for k in ("id", "media_id", "text")} for r in rows])
        client.flush(col)
        client.load_collection(col)

        def bm25(text: str, limit: int, col: str = col) -> list[dict]:
            return client.search(
                col,
                data=[text],
                anns_field="sparse",
                limit=limit,
                output_fields=["media_id"],
                search_params={"metric_type": "BM25"},
            )[0]

        rankings = [
            (
                fold(where.get(h["entity"]["media_id"]) for h in bm25(q["text"], 100)),
                qrels.get(q["id"], {}),
            )
            for q in queries
        ]
        s = score(rankings, [0.0])
        probes = ", ".join(f"{p!r} {len(bm25(p, 5))} rows" for p in PROBES)
        print(
            f"{name:24s} nDCG@10 {s.ndcg:.3f}  R@10 {s.recall:.3f}  MRR@10 {s.mrr:.3f}  ({probes})"
        )


if __name__ == "__main__":
    main()
