"""GET /documents, /documents/<id> (streamed, cached) and /documents/<id>/search."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
from flask import Blueprint, Response, request

from smls import documents, fields, metrics, outputs
from smls.errors import InvalidInput, InvalidOption
from smls.web.endpoints import MODEL_OPTIONS, register
from smls.web.responses import json_response, state

blueprint = Blueprint("documents", __name__)


def list_documents() -> Response:
    """The documents in the data folder with their sentence counts."""
    data_dir = state().settings.data_dir
    ids = documents.list_documents(data_dir)
    return json_response({"documents": [{"id": i, "sentences": documents.count_sentences(data_dir, i)} for i in ids]})


def get_document(doc_id: str) -> Response:
    """Every sentence of a document with its pages and embedding, streamed a chunk at a time."""
    app = state()
    model = app.embedding(request.args.get("model"))
    query = list(request.args.items(multi=True))
    options = outputs.OutputOptions(**fields.collect([("query string", query, MODEL_OPTIONS)], outputs.OutputOptions.parsers(model.encoder.dimension)))
    doc = documents.load_document(app.settings.data_dir, doc_id)
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
    query = request.args.get("q", "")
    if not query.strip():
        what = "missing" if "q" not in request.args else "empty" if not query else "only whitespace"
        raise InvalidInput(f"the query parameter q is {what}: /documents/<id>/search?q=text&k=5", code="missing_query")
    k = _int_option("k", request.args.get("k", "5"), 1, app.settings.search_max_k)
    model = app.embedding(request.args.get("model"))
    doc = documents.load_document(app.settings.data_dir, doc_id)
    hits = model.documents.search(doc, query, k)
    return json_response(
        {
            "doc_id": doc.doc_id,
            "model": model.name,
            "query": query,
            "k": k,
            "results": [{"score": round(hit.score, 6), **documents.sentence_json(hit.index, doc.sentences[hit.index])} for hit in hits],
        }
    )


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


register(blueprint, {"list_documents": list_documents, "get_document": get_document, "search_document": search_document})
