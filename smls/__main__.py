"""Command line: `python -m smls precompute [doc_id ...]` fills the document cache so a server starts hot."""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m smls`."""
    parser = argparse.ArgumentParser(prog="python -m smls", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    pre = commands.add_parser("precompute", help="embed documents into the cache (all when none is named)")
    pre.add_argument("doc_ids", nargs="*", metavar="doc_id")
    pre.add_argument("--normalize", action="store_true", help="cache the normalized vectors (as ?normalize=1 asks)")
    pre.add_argument("--no-progress", action="store_true", help="no progress bar")
    pre.add_argument("--model", help="the SMLS_MODELS name of the embedding model to use (default: the default model)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        failed = precompute(settings, args.doc_ids, normalize=args.normalize, progress=not args.no_progress, model=args.model)
    except SmlsError as exc:  # settings or model: one line, no traceback
        print(f"smls: {exc.message}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
