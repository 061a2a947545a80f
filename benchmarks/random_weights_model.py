"""Copy a BERT-style sentence-transformers model folder with its weights replaced by random ones.

    python benchmarks/random_weights_model.py SRC_MODEL_DIR DEST_DIR

Same architecture, config and tokenizer, so the same compute: for throughput runs on machines
where the real weights cannot be brought. Never use the result for anything about quality.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main() -> None:
    from transformers import BertConfig, BertModel

    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    shutil.copytree(
        src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.safetensors", "*.bin")
    )
    BertModel(BertConfig.from_pretrained(src)).save_pretrained(dst)
    print(f"random-weight copy of {src.name} at {dst}")


if __name__ == "__main__":
    main()
