"""`python -m smls precompute`: every document's vectors computed and cached, so that a server starts hot."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from smls.config import Settings
from smls.errors import SmlsError
from smls.serving import engine
from smls.serving.loading import machine_encoder


def precompute(settings: Settings, doc_ids: list[str], *, normalize: bool = False, progress: bool = True, model: str | None = None) -> int:
    """Embed and cache each document with the named (else the default) model; report errors per document and go on.

    Returns the number that failed.
    """
    encoder = machine_encoder(settings, model)
    # Served as the server serves it, on every core: precompute is the only job on the machine.
    served = engine.build(settings, {encoder.name: encoder}, streams=encoder.streams, load_indexes=False)
    library, embedder = served.library, served.embedders[0].documents
    ids = doc_ids or [entry.doc_id for entry in library.listing()]
    if not ids:
        print(f"no documents in {settings.data_dir}", file=sys.stderr)
        return 0
    failed = 0
    for doc_id in ids:
        try:
            doc = library.load(doc_id)
            if embedder.is_cached(doc, normalize):
                print(f"{doc_id}: {len(doc.sentences)} sentences, already cached")
                continue
            start = time.perf_counter()
            with tqdm(total=len(doc.sentences), desc=doc_id, unit="sentence", disable=not progress) as bar:
                for n in embedder.fill(doc, normalize):
                    bar.update(n)
            print(f"{doc_id}: {len(doc.sentences)} sentences cached in {time.perf_counter() - start:.1f} s")
        except SmlsError as exc:
            failed += 1
            print(f"{doc_id}: error: {exc.message}", file=sys.stderr)
    return failed
