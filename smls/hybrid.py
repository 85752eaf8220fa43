"""Keyword and vector rankings fused into one: a query's words, and reciprocal rank fusion.

Sentence vectors miss exact names, numbers and rare terms; the store's full-text engine
finds them. Reciprocal rank fusion (Cormack et al., 2009) adds 1 / (60 + rank) from each
ranking a sentence appears in: it needs no calibration between a cosine and a BM25 score,
which mean nothing to each other, and a sentence near the top of both wins.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from typing import TypeVar

MODES = ("vector", "keyword", "hybrid")
# RRF's constant: ranks past the first few count for little, and no single list dominates.
RRF_K = 60
# Candidates each ranking gives the fusion (at least k): a sentence ranked 50th by one and
# absent from the other still scores below one in the top ten of both.
CANDIDATES = 50
# Candidates /search?rerank= re-scores (at least k): a reranker can lift what the first stage ranked low.
RERANK_CANDIDATES = 20
# A query's words beyond these are left out (a pasted paragraph still searches quickly).
MAX_WORDS = 32

_WORD = re.compile(r"\w+", re.UNICODE)
Key = TypeVar("Key", bound=Hashable)


def query_words(query: str) -> list[str]:
    """The words of a query, lowercased, each once, in order: what the keyword engines match (any one of them)."""
    return list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))[:MAX_WORDS]


def fuse(rankings: Sequence[Sequence[Key]], k: int) -> list[tuple[Key, float, list[int | None]]]:
    """The k best keys by reciprocal rank fusion of `rankings` (each best first): (key, score, its 1-based rank in each, None where absent).

    Ties go to the key ranked better in the first ranking, then the second, and so on.
    """
    ranks: dict[Key, list[int | None]] = {}
    for n, ranking in enumerate(rankings):
        for rank, key in enumerate(ranking, start=1):
            ranks.setdefault(key, [None] * len(rankings))
            if ranks[key][n] is None:
                ranks[key][n] = rank
    scored = [(key, sum(1 / (RRF_K + r) for r in where if r is not None), where) for key, where in ranks.items()]
    far = 1 << 30
    scored.sort(key=lambda item: (-item[1], *[r if r is not None else far for r in item[2]]))
    return scored[:k]
