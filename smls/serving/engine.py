"""The Engine: every served model by name, with the documents and the settings, built once by `build`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from smls import metrics, outputs
from smls.batching import MicroBatcher
from smls.catalog import ModelSpec
from smls.config import Settings
from smls.doc_vectors import DocumentEmbedder
from smls.encoders import Budget, Encoder, PairScorer
from smls.errors import ModelNotFound, StartupError, StoreUnavailable, WrongModelKind
from smls.index import SearchIndex
from smls.library import Library
from smls.prompts import Prompts
from smls.search import ChosenIndex, CrossSearch, VectorIndex
from smls.serving.loading import load_model
from smls.serving.models import EmbeddingModel, ScoringModel, Served
from smls.store import VectorStore, is_postgres, open_keywords, open_store, open_vectors
from smls.tokens import Tokens
from smls.truncation import parse_direction

__all__ = ["Engine", "build"]

log = logging.getLogger("smls")


@dataclass(frozen=True)
class Engine:
    """The served models by name (in the configured order), the default embedding model, the documents and the settings: what every user of smls serves from."""

    settings: Settings
    library: Library
    models: dict[str, Served]
    default: str  # an embedding model's name

    @property
    def embedders(self) -> list[EmbeddingModel]:
        """The embedding models, in the configured order."""
        return [m for m in self.models.values() if isinstance(m, EmbeddingModel)]

    def model(self, name: str | None, *, listed_at: str = "GET /models") -> Served:
        """The model named (None: the default), or ModelNotFound listing the served names (and where a client finds them)."""
        found = self.models.get(self.default if name is None else name)
        if found is None:
            raise ModelNotFound(f"model {name!r} is not served here; {listed_at} lists: {', '.join(self.models)}")
        return found

    def embedding(self, found: Served) -> EmbeddingModel:
        """`found` if it makes embeddings; WrongModelKind, naming the embedding models, for a cross-encoder."""
        if not isinstance(found, EmbeddingModel):
            embedders = ", ".join(m.name for m in self.embedders)
            raise WrongModelKind(
                f"model {found.name!r} is a cross-encoder: it scores query-document pairs (POST /rerank) and makes no "
                f"embeddings; the embedding models here are: {embedders}"
            )
        return found

    def default_reranker(self) -> str:
        """The model that reranks when none is named: the first cross-encoder served, else the default (embedding) model."""
        cross = [m for m in self.models.values() if isinstance(m, ScoringModel)]
        return cross[0].name if cross else self.default

    def warm_up(self) -> None:
        """One tiny inference through every model (starting the batchers), so the first client does not pay for it."""
        for model in self.models.values():
            if isinstance(model, EmbeddingModel):
                model.batcher.encode(["warm up"])
            else:
                model.scorer.score("warm up", ["warm up"])

    def follow_store(self) -> None:
        """With a shared store (PostgreSQL), keep the search indexes in step with what other instances change."""
        if not is_postgres(self.settings.store):
            return
        from smls.store.postgres import listen

        indexes = [m.search.index for m in self.embedders]

        def follow() -> None:
            for index in indexes:
                index.sync()

        listen(str(self.settings.store), follow)


def _search_index(cache: VectorStore, model: str, dimension: int, settings: Settings) -> VectorIndex:
    """pgvector in the database where the store is PostgreSQL and has (or may create) the extension; else each worker's own index."""
    in_memory = SearchIndex(cache, model, dimension, settings.cache_dir / "index")
    if not is_postgres(settings.store):
        return in_memory
    from smls.store.pgvector import PgvectorIndex
    from smls.store.postgres import PostgresVectors

    assert isinstance(cache, PostgresVectors)

    def choose() -> VectorIndex:
        why_not = cache.use_pgvector(model, dimension)
        if why_not is None:
            return PgvectorIndex(cache, model, dimension)
        log.warning("pgvector is not available in SMLS_STORE's database (%s): each worker keeps its own search index", why_not)
        return in_memory

    index = ChosenIndex(choose)
    try:
        index.chosen()  # now, in the gunicorn master, when the database answers
    except StoreUnavailable:
        log.warning("SMLS_STORE's database cannot be reached: the first search will tell pgvector's index from each worker's own")
    return index


def build(settings: Settings, models: Mapping[str, Encoder | PairScorer] | None = None, *, streams: int | None = None, load_indexes: bool = True) -> Engine:
    """Serve every model of the settings' catalog (loaded here, no inference), or the loaded `models` given (name -> model, the first embedding model the default).

    Every model may run its own passes, but all of them together hold at most `streams`
    (SMLS_INFERENCE_STREAMS, a worker's share of the cores) at once: one budget, so two
    busy models never oversubscribe the cores. With one model the budget would only
    repeat the model's own limit. `load_indexes` reads each search index now (in the
    gunicorn master, so the workers share its pages); a command that does not search
    leaves it to the first search.
    """
    specs: dict[str, ModelSpec] = {}  # each model's own settings: its truncation, prompts and matryoshka
    if models is None:
        models = {}
        for entry in settings.catalog().models:
            specs[entry.name] = entry
            models[entry.name] = load_model(entry, settings)
            log.info("model %s (%s) loaded from %s (%s)", entry.name, entry.kind, entry.path, entry.origin)
    else:
        # A command (precompute, embed) loads its one model itself: that model still keeps its
        # SMLS_MODELS entry's options, or its documents' vectors would be cached under keys
        # the server never asks for.
        by_name = {entry.name: entry for entry in settings.catalog().models}
        specs = {name: by_name[name] for name, model in models.items() if name in by_name and Path(by_name[name].path).resolve() == Path(model.path).resolve()}
    library = Library(open_store(settings.store, settings.data_dir), settings.data_dir)
    streams = settings.effective_streams if streams is None else streams
    budget = Budget(streams) if len(models) > 1 else None
    cache = open_vectors(settings.store, settings.cache_dir)
    keywords = open_keywords(settings.store, settings.cache_dir)  # one for every model: words do not depend on it
    served: dict[str, Served] = {}
    for name, model in models.items():
        hooks = metrics.ModelMetrics(name)
        model.on_encoded = hooks.observe_encoded
        if model.kind == "cross-encoder":
            model.set_streams(1, budget)
            served[name] = ScoringModel(name, model, Tokens.of(model.path, model.max_seq_length))
            continue
        encoder = model
        own = streams if encoder.parallel_safe else 1
        encoder.set_streams(own, budget)
        batcher = MicroBatcher(
            encoder,
            max_batch=settings.max_batch,
            max_wait=settings.batch_wait_ms / 1000,
            queue_size=settings.queue_size,
            streams=own,
            piece_size=encoder.batch_size,
            direct=budget is None,
            on_depth=hooks.queue_depth,
            on_batch=hooks.batch_size,
            on_shed=metrics.SHED.labels("deadline").inc,
        )
        tokens = Tokens.of(encoder.path, encoder.max_seq_length)
        spec = specs.get(name)
        truncation = parse_direction(spec.truncation if spec else "right")
        prompts = Prompts.of(encoder.path, spec.prompts if spec else None)
        documents = DocumentEmbedder(
            batcher, cache, settings.doc_batch, settings.request_timeout, truncation=truncation, tokens=tokens, prompt=prompts.document
        )
        index = _search_index(cache, documents.index_name, encoder.dimension, settings)
        if load_indexes:
            index.load()
        search = CrossSearch(library, documents, index, settings.request_timeout, shared=is_postgres(settings.store), keywords=keywords)
        calibration = outputs.Calibration(encoder, settings.exports)
        matryoshka = bool(spec and spec.matryoshka)
        served[name] = EmbeddingModel(name, encoder, batcher, documents, search, calibration, tokens, truncation, prompts, matryoshka)
    embedders = [m.name for m in served.values() if isinstance(m, EmbeddingModel)]
    if not embedders:
        raise StartupError("no embedding model to serve; /embed, /v1/embeddings and /documents need one")
    default = settings.default_model if settings.default_model in served else embedders[0]
    return Engine(settings, library, served, default)
