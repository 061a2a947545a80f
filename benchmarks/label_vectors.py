"""Photo labels as text: which vector finds photos better, the joined labels' text embedding or
the probability-weighted mean of each label's vector (ConSE, what ingest writes)?

    python benchmarks/label_vectors.py [--model efficientnet-lite0] [--top-k 5] [--min-prob 0.1]

20 scikit-image sample photos are labelled by the image model (the real offline weights), each
photo's labels become one vector both ways, and 21 short queries, each naming what one photo
shows, rank the photos by cosine. Prints hit@1 and MRR of both, and how many texts each way
embeds. No Milvus: this compares the vectors alone.
"""

from __future__ import annotations

import argparse
import json

PHOTOS = [
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel",
    "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "moon",
    "page", "retina", "rocket", "text",
]  # fmt: skip
QUERIES = {
    "cat": "chelsea",
    "kitten": "chelsea",
    "coffee": "coffee",
    "cup of espresso": "coffee",
    "rocket": "rocket",
    "space shuttle launch": "rocket",
    "horse": "horse",
    "clock": "clock",
    "wall clock": "clock",
    "coins": "coins",
    "money": "coins",
    "brick wall": "brick",
    "grass lawn": "grass",
    "gravel": "gravel",
    "moon": "moon",
    "astronaut": "astronaut",
    "camera": "camera",
    "tripod": "camera",
    "stars in space": "hubble_deep_field",
    "eye retina": "retina",
    "book page": "page",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--min-prob", type=float, default=0.1)
    args = ap.parse_args()

    import numpy as np
    from PIL import Image
    from skimage import data

    from mmrag.app import Models
    from mmrag.pipelines.base import LabelSet
    from mmrag.settings import Settings

    settings = Settings(
        image_model=args.model, clip_model="", audio_model="", speech_model="", device="cpu"
    )
    models = Models.build(settings)
    image, text = models.spaces["image"], models.text
    labels = []
    for name in PHOTOS:
        arr = getattr(data, name)()
        img = Image.fromarray(arr if arr.dtype == np.uint8 else (arr * 255).astype("uint8"))
        batch = image.encoder.preprocess([img.convert("RGB")])
        found = image.encoder.encode_and_label(batch, k=args.top_k, min_prob=args.min_prob)[1][0]
        labels.append(found)
    have = [i for i, found in enumerate(labels) if found]  # the others get no label segment
    joined = np.zeros((len(PHOTOS), text.encoder.dim), dtype=np.float32)
    conse = joined.copy()
    joined[have] = text.encode([LabelSet(tuple(labels[i])).text for i in have]).vectors
    conse[have] = text.encode([LabelSet(tuple(labels[i])) for i in have]).vectors
    queries = text.encode(list(QUERIES)).vectors
    result: dict = {"model": args.model, "photos": len(PHOTOS), "queries": len(QUERIES)}
    for way, vectors in (("joined text", joined), ("ConSE mean", conse)):
        ranks = []
        for q, want in zip(queries, QUERIES.values(), strict=True):
            order = [PHOTOS[i] for i in np.argsort(-(vectors @ q))]
            ranks.append(order.index(want) + 1)
        result[way] = {
            "hit@1": round(float(np.mean([r == 1 for r in ranks])), 3),
            "MRR": round(float(np.mean([1 / r for r in ranks])), 3),
        }
    result["texts embedded"] = {
        "joined text": len({LabelSet(tuple(f)).text for f in labels if f}),
        "ConSE mean": len({n for f in labels for n, _ in f}),
    }
    result["labels"] = {p: [n for n, _ in f] for p, f in zip(PHOTOS, labels, strict=True)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
