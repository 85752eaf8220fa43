"""`python -m smls embed`: check the arguments, plan the blocks, and run them here, on Ray, or into the store."""

from __future__ import annotations

import argparse
from pathlib import Path

from smls.config import Settings
from smls.corpus import job, sources
from smls.corpus.sources import CorpusError, Fields
from smls.library import Library
from smls.store import open_store


def options_of(args: argparse.Namespace) -> job.Options:
    """The run's Options from the command line (CorpusError for a bad combination)."""
    if args.block_rows < 1:
        raise CorpusError(f"--block-rows must be 1 or more, got {args.block_rows}")
    if any(n is not None and n < 1 for n in (args.actors, args.cpus_per_actor)):
        raise CorpusError("--actors and --cpus-per-actor must be 1 or more")
    if (args.actors is not None or args.cpus_per_actor is not None) and not args.ray:
        raise CorpusError("--actors and --cpus-per-actor size a Ray run; add --ray (auto, or the cluster's address)")
    keep = tuple(name.strip() for item in args.keep for name in item.split(",") if name.strip())
    fields = Fields(args.id_field, args.text_field, keep)
    clash = {fields.id, fields.text} & set(keep) if fields.id != fields.text else {fields.id}
    if clash:
        raise CorpusError(f"{', '.join(sorted(clash))}: the id and the text are two different fields, and are always written; --keep names others")
    if args.into_store:
        if args.out or args.keep or args.prompt_name:
            raise CorpusError("--into-store fills the store's cache, as precompute does; --out, --keep and --prompt-name are for files")
    elif not args.out:
        raise CorpusError("--out DIR is needed: the folder the Parquet files go to (or --into-store for documents)")
    return job.Options(args.out or "", args.model, fields, args.block_rows, args.normalize, args.prompt_name, args.on_bad_row)


def embed(settings: Settings, args: argparse.Namespace) -> int:
    """Run `smls embed`; the exit status (0: every block written)."""
    options = options_of(args)
    _need("pyarrow", "requirements-embed.txt")
    if args.ray:
        _need("ray", "requirements-ray.txt")
    progress = not args.no_progress
    doc_ids = sources.document_ids(args.inputs)
    library = Library(open_store(settings.store, settings.data_dir), settings.data_dir)
    if args.into_store:
        if any(not (s == sources.DOCUMENTS or s.startswith(sources.DOCUMENTS + "/")) for s in args.inputs):
            raise CorpusError("--into-store takes documents only ('documents' or 'documents/<id>'): the store caches document vectors")
        if args.ray:
            from smls.corpus.on_ray import into_store_on_ray

            return into_store_on_ray(settings, library, args.ray, doc_ids, options, args.actors, args.cpus_per_actor)
        return 1 if job.into_store(settings, doc_ids, options, progress) else 0
    documents = _documents(library, doc_ids)
    blocks = sources.plan(args.inputs, options.block_rows, documents)
    if Path(options.out).is_file():
        raise CorpusError(f"--out {options.out}: a file, not a folder")
    if args.ray:
        from smls.corpus.on_ray import run_on_ray

        run_on_ray(settings, library, args.ray, args.inputs, blocks, options, args.actors, args.cpus_per_actor, progress)
    else:
        job.run_local(settings, args.inputs, blocks, options, progress)
    return 0


def _documents(library: Library, doc_ids: list[str] | None) -> list[tuple[str, int]]:
    """(id, sentence count) of each document the inputs name (every one for None)."""
    if doc_ids == []:
        return []
    listing = {entry.doc_id: entry for entry in library.listing()}
    wanted = sorted(listing) if doc_ids is None else doc_ids
    found: list[tuple[str, int]] = []
    for doc_id in wanted:
        if doc_id not in listing:
            raise CorpusError(f"documents/{doc_id}: no such document (see GET /documents)")
        count = listing[doc_id].sentences
        if count is None:  # its texts file is not a JSON list: loading it says what is wrong
            count = len(library.load(doc_id).sentences)
        found.append((doc_id, count))
    return found


def _need(module: str, requirements: str) -> None:
    """CorpusError naming the requirements file when an optional package is not installed."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise CorpusError(f"smls embed needs {module}, which serving does not: pip install -r {requirements}")
