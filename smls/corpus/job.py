"""`smls embed`'s work, the same in one process and on Ray: read a block, embed it as the server would, write it.

`BlockEmbedder` serves one model as `python -m smls precompute` does (the Engine, every
given core, the bulk lane), so a row gets the vector /embed gives it: the model's prompt
and truncation, its backend, int8 included. A block goes to the model as one bulk job:
the job sorts its texts by length into passes and puts them back in order, so a corpus
that mixes one-liners with paragraphs is not padded to its longest text (the length
buckets). Locally the next block is read and queued while the current one is written.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from smls.batching import BulkJob
from smls.config import Settings
from smls.corpus import output
from smls.corpus.sources import Block, CorpusError, Fields, Rows, read
from smls.encoders.base import model_fingerprint
from smls.errors import SmlsError
from smls.library import Library
from smls.prompts import Prompts
from smls.serving import engine
from smls.serving.loading import machine_encoder
from smls.serving.models import EmbeddingModel
from smls.truncation import Truncation, frame
from smls.vectors import unit_rows

OnBadRow = Literal["stop", "skip"]


@dataclass(frozen=True)
class Options:
    """What a run embeds and how, besides its inputs: the same in every process of the run."""

    out: str
    model: str | None = None  # an SMLS_MODELS name; None: the default model
    fields: Fields = Fields()
    block_rows: int = 4096
    normalize: bool = False
    prompt_name: str | None = None  # rows only; document sentences always get the model's document prompt
    on_bad_row: OnBadRow = "stop"

    @property
    def prompt_request(self) -> dict[str, str]:
        """The rows' prompt as a request names it (Prompts.choose's values): --prompt-name, else nothing (the model's default)."""
        return {"prompt_name": self.prompt_name} if self.prompt_name else {}

    def as_dict(self) -> dict[str, Any]:
        """The options as plain data (for a Ray actor's constructor)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Options:
        """The inverse of as_dict."""
        fields = data["fields"]
        return cls(**{**data, "fields": Fields(fields["id"], fields["text"], tuple(fields["keep"]))})


@dataclass(frozen=True)
class Summary:
    """What embedding one block did."""

    name: str
    rows: int
    bad: int
    truncated: int
    error: str = ""  # a document that could not be cached (into the store), in the client's words
    started: float = 0.0  # when its work began and ended (time.time(), where an actor reports it)
    ended: float = 0.0
    actor: str = ""  # the actor that did it (host:pid), where one did


@dataclass
class _Pending:
    block: Block
    rows: Rows
    job: BulkJob


def manifest(settings: Settings, options: Options, inputs: Sequence[str], blocks: Sequence[Block], library: Library) -> dict[str, Any]:
    """What makes a run's output what it is (model, options, each input's size and time or digest): a re-run adds to a folder only when all of it is the same.

    Read from the settings and the model's folder, without loading the model (on Ray the driver never does).
    """
    catalog = settings.catalog()
    spec = next((s for s in catalog.models if s.name == (options.model or catalog.default)), None)
    if spec is None:
        raise CorpusError(f"no model named {options.model!r}; SMLS_MODELS has {', '.join(s.name for s in catalog.models)}")
    if not spec.embeds:
        raise CorpusError(f"--model {options.model}: a cross-encoder makes no embeddings")
    prompts = Prompts.of(spec.path, spec.prompts)
    sources: dict[str, Any] = {}
    for block in blocks:
        if block.source not in sources:
            if block.kind == "document":
                sources[block.source] = library.digest(block.source)
            else:
                stat = Path(block.source).stat()
                sources[block.source] = [stat.st_size, stat.st_mtime_ns]
    return {
        "inputs": list(inputs),
        "sources": sources,
        "model": spec.name,
        "fingerprint": model_fingerprint(spec.path),
        "backend": spec.backend or settings.backend,
        "normalize": options.normalize,
        "row_prompt": prompts.choose(options.prompt_request),
        "document_prompt": prompts.document,
        "truncation": spec.truncation,
        "block_rows": options.block_rows,
        "fields": asdict(options.fields),
    }


class BlockEmbedder:
    """One model, served on `cores` cores as precompute serves it, turning blocks into Parquet files."""

    def __init__(self, settings: Settings, options: Options, cores: int | None = None) -> None:
        encoder = machine_encoder(settings, options.model, cores)
        served = engine.build(settings, {encoder.name: encoder}, streams=encoder.streams, load_indexes=False)
        self.options, self.out = options, Path(options.out)
        self.library = served.library
        self.model: EmbeddingModel = served.embedding(served.model(encoder.name))
        self.row_prompt = self.model.prompts.choose(options.prompt_request)

    def start(self, block: Block) -> _Pending:
        """Read a block and queue its texts with the model (bad rows stop the run, or are kept aside, as the options say)."""
        rows = read(block, self.options.fields, self.library.load)
        if rows.bad and self.options.on_bad_row == "stop":
            more = f" (and {len(rows.bad) - 1} more in this block)" if len(rows.bad) > 1 else ""
            raise CorpusError(f"{rows.bad[0]}{more}; fix the input, or pass --on-bad-row skip to leave such rows out and list them")
        if block.kind == "document":
            texts = self.model.documents.texts(rows.texts)  # as its documents are served: the document prompt, the model's cut
        else:
            cut = Truncation(True, self.model.truncation)
            texts = frame(rows.texts, cut, self.model.tokens, "text", self.model.encoder.max_seq_length, prompt=self.row_prompt).texts
        return _Pending(block, rows, self.model.batcher.submit_bulk(texts))

    def finish(self, pending: _Pending) -> Summary:
        """Wait for a block's vectors and write its file."""
        encoded = pending.job.wait()
        vectors = unit_rows(encoded.vectors) if self.options.normalize else encoded.vectors
        rows = pending.rows
        columns = {**rows.extra, **rows.kept}
        table = output.table(rows.ids, rows.texts, vectors, encoded.truncated_flags, self.model.name, columns)
        output.write_block(self.out, pending.block, table, rows.bad)
        return Summary(pending.block.name, len(rows.ids), len(rows.bad), encoded.truncated)

    def embed(self, block: Block) -> Summary:
        """Read, embed and write one block."""
        return self.finish(self.start(block))

    def cache_document(self, doc_id: str) -> Summary:
        """Compute and cache one document's vectors in the store, as precompute does (its error, if any, in the summary)."""
        try:
            doc = self.library.load(doc_id)
            if not self.model.documents.is_cached(doc, self.options.normalize):
                for _ in self.model.documents.fill(doc, self.options.normalize):
                    pass
            return Summary(doc_id, len(doc.sentences), 0, 0)
        except SmlsError as exc:
            return Summary(doc_id, 0, 0, 0, exc.message)

    def run(self, blocks: Iterable[Block], on_done: Callable[[Summary], Any]) -> None:
        """Embed blocks in order, the next one read and queued while the current one finishes."""
        pending: _Pending | None = None
        try:
            for block in blocks:
                nxt = self.start(block)
                if pending is not None:
                    on_done(self.finish(pending))
                pending = nxt
            if pending is not None:
                on_done(self.finish(pending))
                pending = None
        finally:
            if pending is not None:
                pending.job.cancel()


def into_store(settings: Settings, doc_ids: list[str] | None, options: Options, progress: bool) -> int:
    """Document vectors into the configured store, exactly as `precompute` puts them (where a server finds them cached); the number that failed."""
    from smls.precompute import precompute

    return precompute(settings, doc_ids or [], normalize=options.normalize, progress=progress, model=options.model)


def report(out: Path, summaries: Sequence[Summary], skipped: int, seconds: float, began: float | None = None) -> str:
    """The closing line of a run (`began`: the run's time.time() at its start, where blocks report their own times)."""
    rows = sum(s.rows for s in summaries)
    bad = sum(s.bad for s in summaries)
    rate = f", {rows / seconds:,.0f} rows/s" if seconds > 0 and rows else ""
    line = f"{rows:,} rows in {len(summaries)} blocks written to {out} in {seconds:.1f} s{rate}"
    timed = [s for s in summaries if s.ended > 0]
    if began is not None and timed and rows:
        # The pipeline's own rate, apart from starting it (connecting, each actor loading the model):
        # what a run a thousand times longer would see.
        first, last = min(s.started for s in timed), max(s.ended for s in timed)
        actors = len({s.actor for s in timed})
        line += f" ({rows / (last - first):,.0f} rows/s once running, {actors} actor{'s' if actors > 1 else ''}; {first - began:.1f} s to start)"
    if skipped:
        line += f"; {skipped} blocks were already there"
    if bad:
        line += f"; {bad} bad rows left out, listed in {out / output.BAD_ROWS}"
    truncated = sum(s.truncated for s in summaries)
    if truncated:
        line += f"; {truncated} texts were cut to the model's length (column 'truncated')"
    return line


def run_local(settings: Settings, inputs: Sequence[str], blocks: Sequence[Block], options: Options, progress: bool) -> list[Summary]:
    """The run in this process, on every core."""
    from tqdm import tqdm

    embedder = BlockEmbedder(settings, options)
    out = Path(options.out)
    todo = output.pending(out, manifest(settings, options, inputs, blocks, embedder.library), blocks)
    summaries: list[Summary] = []
    started = time.perf_counter()
    with tqdm(total=sum(b.stop - b.start for b in todo), unit="row", disable=not progress, file=sys.stderr) as bar:

        def done(summary: Summary) -> None:
            summaries.append(summary)
            bar.update(summary.rows + summary.bad)

        embedder.run(todo, done)
    output.remove_leftovers(out)
    print(report(out, summaries, len(blocks) - len(todo), time.perf_counter() - started))
    return summaries

