"""What `smls embed` writes: one Parquet file per block, each appearing whole or not at all, and the run's manifest.

A block's file is written under a temporary name in the output folder and renamed into
place, so a reader (or a re-run) sees either the whole block or nothing, whichever
process wrote it and however often: a block that Ray retries after a lost actor is
written again under the same name, never twice. `_smls_embed.json` records what the run
embeds (model, options, inputs); a re-run into the same folder skips the blocks already
there only when that record matches, so a folder never mixes two models' vectors.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from smls.corpus.sources import BadRow, Block, CorpusError

MANIFEST = "_smls_embed.json"
BAD_ROWS = "_bad_rows"


def check_manifest(out: Path, manifest: Mapping[str, Any]) -> None:
    """Write the run's manifest into `out`, or check that the one there describes this same run (CorpusError if not)."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(json.dumps(manifest))  # as it reads back (tuples as lists)
    path = out / MANIFEST
    if path.exists():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CorpusError(f"{path} cannot be read ({e}); remove the folder or choose another --out") from None
        differ = sorted(k for k in set(before) | set(manifest) if before.get(k) != manifest.get(k))
        if differ:
            raise CorpusError(
                f"{out} holds the output of a different run (its {', '.join(differ)} differ from this run's); choose another --out, or remove that folder"
            )
        return
    if any(out.glob("*.parquet")):
        raise CorpusError(f"{out} already holds Parquet files that no smls embed run wrote; choose another --out")
    text = json.dumps(manifest, indent=1, sort_keys=True).encode()
    _write_atomically(path, lambda f: f.write(text))


def pending(out: Path, manifest: Mapping[str, Any], blocks: Sequence[Block]) -> list[Block]:
    """The blocks not yet written in `out`, once its manifest says it holds this same run (check_manifest)."""
    check_manifest(out, manifest)
    done = {p.name[: -len(".parquet")] for p in out.glob("part-*.parquet")}
    return [b for b in blocks if b.name not in done]


def write_block(out: Path, block: Block, table: Any, bad: Sequence[BadRow]) -> None:
    """Write a block's table (and its skipped rows, if any) so that it appears whole or not at all."""
    import pyarrow.parquet as pq

    if bad:  # before the block itself: a block that is there always has its bad rows told
        lines = "".join(json.dumps({"source": b.source, "line": b.line, "reason": b.reason}) + "\n" for b in bad)
        (out / BAD_ROWS).mkdir(exist_ok=True)
        _write_atomically(out / BAD_ROWS / f"{block.name}.jsonl", lambda f: f.write(lines.encode()))
    _write_atomically(out / f"{block.name}.parquet", lambda f: pq.write_table(table, f))


def remove_leftovers(out: Path) -> None:
    """Remove the temporary files of writers that died mid-block (called once no writer of the run is left)."""
    for path in [*out.glob(".part-*.tmp"), *out.glob(f"{BAD_ROWS}/.part-*.tmp")]:
        path.unlink(missing_ok=True)


def bad_rows(out: Path) -> list[dict[str, Any]]:
    """Every row the run skipped, as written beside its block."""
    found: list[dict[str, Any]] = []
    for path in sorted((out / BAD_ROWS).glob("*.jsonl")):
        found.extend(json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    return found


def table(ids: list[Any], texts: list[str], vectors: np.ndarray, truncated: np.ndarray, model: str, columns: Mapping[str, list[Any]]) -> Any:
    """A block's Arrow table: id, text, vector (a fixed-size list of float32), model, truncated, then the other columns."""
    import pyarrow as pa

    dim = vectors.shape[1]
    flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
    data = {
        "id": pa.array(ids),
        "text": pa.array(texts, type=pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
        "model": pa.array([model] * len(ids), type=pa.string()),
        "truncated": pa.array(truncated.tolist(), type=pa.bool_()),
    }
    for name, values in columns.items():
        if name in data:
            raise CorpusError(f"--keep {name}: the output already has a column {name!r}")
        data[name] = pa.array(values)
    if not ids:  # an empty block still has the output's columns and types
        data["id"] = pa.array([], type=pa.string())
    return pa.table(data)


def _write_atomically(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write `path` through a temporary file beside it, renamed into place once whole and on disk."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
