"""/documents: list, get (streamed, cached), upload, delete, search one; /search: across every document."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
from flask import Blueprint, Response, request

from smls import documents, fields, forms, hybrid, metrics, outputs, parsing, uploads
from smls.errors import InvalidInput, InvalidOption, MissingMessage, UnsupportedMediaType
from smls.serving.models import EmbeddingModel, Served
from smls.truncation import Framed, Truncation, frame
from smls.web.embed import check_charset
from smls.web.endpoints import MODEL_OPTIONS, register
from smls.web.rerank import relevance
from smls.web.responses import json_response, state, time_left

blueprint = Blueprint("documents", __name__)


def list_documents() -> Response:
    """Every document with where it lives and its sentence count."""
    return json_response({"documents": [{"id": e.doc_id, "source": e.source, "sentences": e.sentences} for e in state().library.listing()]})


def put_document(doc_id: str) -> Response:
    """Store an uploaded document (validated whole, replaced atomically); with compute=true, fill its vectors before answering."""
    app = state()
    documents.check_doc_id(doc_id)
    compute = parsing.parse_bool("compute", request.args.get("compute", "false"))
    model = app.embedding(request.args.get("model"))
    texts, pages = _read_upload()
    before = app.library.store.summary(doc_id)
    doc, replaced = app.library.put(doc_id, texts, pages)
    if before is not None and before[0] != doc.digest:
        model.documents.cache.drop(doc_id)  # the old version's vectors, for every model; searches stop finding it
    if compute:
        for _ in model.documents.fill(doc):
            pass
    summary = {
        "doc_id": doc_id,
        "source": "upload",
        "sentences": len(doc.sentences),
        "pages": len({p.id for s in doc.sentences for p in s.pages}),
        "digest": doc.digest,
        "replaced": replaced,
        "computed": model.documents.is_cached(doc),
        "model": model.name,
    }
    return json_response(summary, 200 if replaced else 201)


def delete_document(doc_id: str) -> Response:
    """Remove an uploaded document and every vector computed from it."""
    app = state()
    app.library.delete(doc_id)
    app.embedders[0].documents.cache.drop(doc_id)  # one cache holds every model's vectors
    keywords = app.embedders[0].search.keywords  # and one keyword index every model's searches
    if keywords is not None:
        keywords.drop(doc_id)
    return json_response({"doc_id": doc_id, "deleted": True})


def _read_upload() -> tuple[bytes, bytes]:
    """The two files of an upload, from multipart parts texts and pages or a JSON body."""
    check_charset()
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        parts = forms.parse_multipart(request.get_data(cache=False), request.mimetype_params.get("boundary", ""), 8)
        return uploads.from_parts(parts)
    if mimetype == "application/json" or mimetype.endswith("+json"):
        body = parsing.json_object(parsing.parse_json_body(request.get_data(cache=False)), uploads.EXAMPLE)
        return uploads.from_json(body)
    if not mimetype and not request.content_length:
        raise MissingMessage("empty request; send the document as -F texts=@texts.json -F pages=@pages.csv, or as JSON " + uploads.EXAMPLE)
    raise UnsupportedMediaType(f"content type {mimetype or 'none'!r} is not supported here; send multipart/form-data or application/json")


def get_document(doc_id: str) -> Response:
    """Every sentence of a document with its pages and embedding, streamed a chunk at a time."""
    app = state()
    model = app.embedding(request.args.get("model"))
    query = list(request.args.items(multi=True))
    options = outputs.OutputOptions(**fields.collect([("query string", query, MODEL_OPTIONS)], outputs.OutputOptions.parsers(model.encoder.dimension)))
    doc = app.library.load(doc_id)
    # The cache holds full-length vectors, raw or unit-length; a cut is normalised after
    # cutting, so it starts from the raw ones.
    cached_normalized = options.normalize and options.dimensions is None
    cached = model.documents.is_cached(doc, cached_normalized)
    metrics.DOCUMENTS.labels("cache" if cached else "computed", model.name).inc()
    if options.precision in outputs.CALIBRATED:
        model.calibration.ranges(options.dimensions, options.normalize)  # before the first byte, not mid-stream
    header = {
        "doc_id": doc.doc_id,
        "model": model.name,
        **outputs.describe(options, model.encoder.dimension),
        "count": len(doc.sentences),
        "cached": cached,
    }
    chunks = model.documents.chunks(doc, cached_normalized)
    return Response(_stream_document(doc, chunks, options, model.calibration, header), mimetype="application/json")


def search_document(doc_id: str) -> Response:
    """The k sentences of a document most similar to q, best first."""
    app = state()
    query = _query("/documents/<id>/search?q=text&k=5")
    k = _int_option("k", request.args.get("k", "5"), 1, app.settings.search_max_k)
    model = app.embedding(request.args.get("model"))
    framed = _framed_query(model, query)
    doc = app.library.load(doc_id)
    hits = model.documents.search(doc, framed.texts[0], k)
    return json_response(
        {
            "doc_id": doc.doc_id,
            "model": model.name,
            "query": query,
            "k": k,
            "results": [{"score": round(hit.score, 6), **documents.sentence_json(hit.index, doc.sentences[hit.index])} for hit in hits],
            "truncations": [cut.json() for cut in framed.cuts()],
        }
    )


def search_all() -> Response:
    """The k sentences most similar to q over every document (or those doc= names, comma-separated), best first."""
    app = state()
    query = _query("/search?q=text&k=10")
    k = _int_option("k", request.args.get("k", "10"), 1, app.settings.search_max_k)
    doc_ids = None
    if "doc" in request.args:
        doc_ids = list(dict.fromkeys(d.strip() for d in request.args["doc"].split(",") if d.strip()))
        if not doc_ids:
            raise InvalidOption("option 'doc' names no document; send doc=id or doc=id1,id2")
        for doc_id in doc_ids:
            documents.check_doc_id(doc_id)
    mode = request.args.get("mode", "vector")
    if mode not in hybrid.MODES:
        raise InvalidOption(f"option 'mode' must be one of {', '.join(hybrid.MODES)}, got {fields.show(mode)}")
    model = app.embedding(request.args.get("model"))
    judge = None if request.args.get("rerank") is None else app.model(fields.model_name(request.args["rerank"]))
    framed = _framed_query(model, query)
    # A reranker re-scores more candidates than it returns: what the first stage ranked low may be the answer.
    depth = k if judge is None else max(k, hybrid.RERANK_CANDIDATES)
    found = model.search.search(framed.texts[0], depth, doc_ids, mode=mode, words=hybrid.query_words(query))
    answer = {"model": model.name, "query": query, "k": k, "mode": mode, "results": found.hits, "skipped": found.skipped}
    if judge is not None:
        answer.update(reranked_by=judge.name, results=_reranked(judge, query, found.hits, k))
    return json_response({**answer, "truncations": [cut.json() for cut in framed.cuts()]})


def _reranked(judge: Served, query: str, hits: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The hits re-scored by a cross-encoder or an embedding model's cosine (their first score kept as retrieval_score), the k best."""
    if not hits:
        return []
    scores = relevance(judge, query, [h["text"] for h in hits], "results", time_left()).scores.scores
    rescored = [{**hit, "retrieval_score": hit["score"], "score": round(float(s), 6)} for hit, s in zip(hits, scores, strict=True)]
    rescored.sort(key=lambda hit: -hit["score"])  # stable: ties keep the first stage's order
    return rescored[:k]


def _framed_query(model: EmbeddingModel, query: str) -> Framed:
    """The query as the model will read it, as the query string's truncate and truncation_direction say (counted: one text is cheap)."""
    values = fields.collect([("query string", list(request.args.items(multi=True)), frozenset(request.args))], Truncation.parsers())
    cut = Truncation.of(values, model.truncation)
    return frame([query], cut, model.tokens, "q", model.encoder.max_seq_length, prompt=model.prompts.query, count=True)


def _query(example: str) -> str:
    """The q parameter, or InvalidInput saying what is wrong with it."""
    query = request.args.get("q", "")
    if not query.strip():
        what = "missing" if "q" not in request.args else "empty" if not query else "only whitespace"
        raise InvalidInput(f"the query parameter q is {what}: {example}", code="missing_query")
    return query


def _stream_document(
    doc: documents.Document,
    chunks: Iterator[tuple[int, np.ndarray]],
    options: outputs.OutputOptions,
    calibration: outputs.Calibration,
    header: dict[str, Any],
) -> Iterator[bytes]:
    """One JSON object, written out a chunk of sentences at a time as they are computed."""
    yield orjson.dumps(header)[:-1] + b',"sentences":['
    separator = b"\n"
    for start, vectors in chunks:
        rendered = outputs.render(vectors, options, calibration)
        parts = [
            orjson.dumps(documents.sentence_json(start + j, doc.sentences[start + j], vector), option=orjson.OPT_SERIALIZE_NUMPY)
            for j, vector in enumerate(rendered)
        ]
        yield separator + b",\n".join(parts)
        separator = b",\n"
    yield b"\n]}\n"


def _int_option(name: str, raw: str, low: int, high: int) -> int:
    """An integer query option within [low, high], or InvalidOption."""
    try:
        value = int(raw)
    except ValueError:
        raise InvalidOption(f"option {name!r} must be an integer, got {fields.show(raw)}") from None
    if not low <= value <= high:
        raise InvalidOption(f"option {name!r} must be between {low} and {high}, got {value}")
    return value


register(
    blueprint,
    {
        "list_documents": list_documents,
        "get_document": get_document,
        "put_document": put_document,
        "delete_document": delete_document,
        "search_document": search_document,
        "search_all": search_all,
    },
)
