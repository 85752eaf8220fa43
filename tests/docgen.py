"""Generate synthetic documents (texts_<id>.json + pages_<id>.csv) of any size.

    python -m tests.docgen 100000 /tmp/bigdata big     # 100k sentences as document "big"
"""

from __future__ import annotations

import csv
import json
import random
import sys
import uuid
from pathlib import Path

WORDS = (
    "river mountain letter garden engine winter market harbour lantern signal orchard meadow "
    "captain council station library bridge forest candle mirror ledger thunder village castle "
    "quietly slowly briskly carefully always never often seldom bright heavy ancient modern "
    "carries finds builds opens follows watches counts paints measures gathers answers crosses"
).split()


def write_document(data_dir: Path, doc_id: str, n_sentences: int, *, per_page: int = 40, seed: int = 7) -> None:
    """Write a document of n_sentences short random sentences, per_page sentences a page."""
    rng = random.Random(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    n_pages = max(1, -(-n_sentences // per_page))
    page_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n_pages)]
    with open(data_dir / f"pages_{doc_id}.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["page_id", "page_number", "section"])
        for number, page_id in enumerate(page_ids, start=1):
            writer.writerow([page_id, number, f"section {1 + (number - 1) // 10}"])
    sentences = [
        {"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + f" ({i}).", "pages": [page_ids[i // per_page]], "n": i}
        for i in range(n_sentences)
    ]
    (data_dir / f"texts_{doc_id}.json").write_text(json.dumps(sentences), encoding="utf-8")


if __name__ == "__main__":
    write_document(Path(sys.argv[2]), sys.argv[3], int(sys.argv[1]))
