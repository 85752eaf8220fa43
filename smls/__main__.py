"""Command line: `python -m smls precompute [doc_id ...]` fills the document cache so a server starts hot;
`python -m smls embed INPUT... --out DIR` embeds a corpus into Parquet files, on this machine or on Ray;
`python -m smls prepare` makes the models' exports ahead of serving (a read-only image)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from smls.config import BACKENDS, Settings
from smls.errors import SmlsError
from smls.precompute import precompute
from smls.prepare import prepare


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m smls`."""
    parser = argparse.ArgumentParser(prog="python -m smls", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    pre = commands.add_parser("precompute", help="embed documents into the cache (all when none is named)")
    pre.add_argument("doc_ids", nargs="*", metavar="doc_id")
    pre.add_argument("--normalize", action="store_true", help="cache the normalized vectors (as ?normalize=1 asks)")
    pre.add_argument("--no-progress", action="store_true", help="no progress bar")
    pre.add_argument("--model", help="the SMLS_MODELS name of the embedding model to use (default: the default model)")
    add_embed_parser(commands)
    prep = commands.add_parser("prepare", help="export every embedding model (ONNX, int8) and its int8 ranges into SMLS_EXPORT_DIR")
    prep.add_argument("--backend", action="append", default=[], choices=BACKENDS, help="also for this backend (repeatable)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.command == "embed":
            from smls.corpus.command import embed

            return embed(settings, args)
        if args.command == "prepare":
            print("\n".join(prepare(settings, args.backend)))
            return 0
        failed = precompute(settings, args.doc_ids, normalize=args.normalize, progress=not args.no_progress, model=args.model)
    except SmlsError as exc:  # settings, model or input: one line, no traceback
        print(f"smls: {exc.message}", file=sys.stderr)
        return 2
    return 1 if failed else 0


def add_embed_parser(commands: Any) -> None:
    """The `embed` command's arguments."""
    cmd = commands.add_parser(
        "embed",
        help="embed a corpus (JSONL, Parquet or documents) into Parquet files, here or on a Ray cluster",
        description="Inputs: .jsonl files (one JSON object per line), .parquet files, folders of either, "
        "'documents' (every document of SMLS_DATA_DIR and the store) or 'documents/<id>'.",
    )
    cmd.add_argument("inputs", nargs="+", metavar="INPUT")
    cmd.add_argument("--out", help="the output folder: one Parquet file per block (id, text, vector, model, truncated, kept columns)")
    cmd.add_argument("--model", help="the SMLS_MODELS name of the embedding model, with its backend (default: the default model)")
    cmd.add_argument("--id-field", default="id", help="the field (column) holding each row's id (default: id)")
    cmd.add_argument("--text-field", default="text", help="the field (column) holding each row's text (default: text)")
    cmd.add_argument("--keep", action="append", default=[], metavar="FIELD[,FIELD...]", help="fields (columns) copied to the output as they are")
    cmd.add_argument("--block-rows", type=int, default=4096, metavar="N", help="rows per block: the unit of work, of output files and of a re-run (default 4096)")
    cmd.add_argument("--normalize", action="store_true", help="unit-length vectors")
    cmd.add_argument("--prompt-name", help="the model's prompt for every row (default: its default prompt); document sentences get its document prompt")
    cmd.add_argument("--on-bad-row", choices=("stop", "skip"), default="stop", help="a row with no id or no text: stop the run (default), or leave it out and list it")
    cmd.add_argument("--into-store", action="store_true", help="documents only: their vectors into the configured store, as precompute puts them, not into files")
    cmd.add_argument("--ray", nargs="?", const="auto", metavar="ADDRESS", help="run on Ray: 'auto' (the running cluster, else one started here) or a cluster's address")
    cmd.add_argument("--actors", type=int, metavar="N", help="Ray: how many model actors (default: the cluster's CPUs over --cpus-per-actor)")
    cmd.add_argument("--cpus-per-actor", type=int, metavar="N", help="Ray: CPUs (and inference streams) per actor (default: the smallest node's CPUs)")
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar")


if __name__ == "__main__":
    sys.exit(main())
