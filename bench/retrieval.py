"""Retrieval quality of /search's modes on a labelled set: recall@10 and MRR for vector, keyword, hybrid and hybrid + rerank.

    .venv/bin/python -m bench.retrieval

The documents: the demo corpus (239 sentences of public-domain prose) and 1,000
standard-library docstring sentences (bench/corpora.py), served as two documents by the
real search path (smls.serving's engine, the embedded model, SQLite FTS5 and hnswlib).

Two kinds of labelled queries, built here and used for nothing but this measure (nothing
in smls was tuned on them; RRF's constant is the literature's 60):
- exact terms: every 10th sentence that holds a word of 5+ characters found in no other
  sentence (a name, an identifier, a rare term); the query is that word alone, and the
  sentence is the one answer. This is what sentence vectors are known to miss.
- paraphrases: 28 demo sentences restated by hand in other words (PARAPHRASES below); the
  restated sentence is the one answer. This is what keywords are known to miss.
"""

from __future__ import annotations

import re
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.corpora import demo, stdlib_sample, write_document

# (demo sentence index, the sentence said in other words): written by hand for this measure.
PARAPHRASES = [
    (6, "a pattern of abuses aimed at putting them under tyranny"),
    (12, "refusing laws unless the people give up being represented"),
    (18, "created many new posts and sent officials to harass the people"),
    (24, "we warned them their parliament was overreaching its authority"),
    (30, "the neighbours assume a newcomer will marry one of their girls"),
    (60, "you have to call on the new neighbour once he arrives"),
    (66, "her life's work was finding husbands for her girls"),
    (78, "the rabbit pulled a clock from its vest and rushed off"),
    (84, "after such a drop a tumble down the steps would be nothing"),
    (90, "I must be close to the middle of the planet"),
    (96, "I hope someone gives the cat her milk in the afternoon"),
    (102, "she was unhurt and leapt up but above her all was black"),
    (114, "instead of killing myself I go off to sea"),
    (120, "look at all the people staring at the sea"),
    (126, "it is right and suitable for us to do so"),
    (138, "time is merely a river I fish in"),
    (144, "from conflict in nature, hunger and dying come the higher animals"),
    (150, "the citizens form a better union and establish fairness"),
    (156, "a defendant gets a quick open trial before an unbiased jury"),
    (162, "for the detective she was always the woman"),
    (168, "he only talked of tender feelings with mockery"),
    (192, "I got here yesterday and want to reassure my sister I am well"),
    (198, "believing that your private truth holds for everyone is genius"),
    (210, "he looked at the fence and became deeply sad"),
    (216, "the girl lived on the prairie with her uncle and aunt, who farmed"),
    (222, "flat land without trees or houses stretching to the horizon"),
    (228, "the best way to lead an army is to thwart the foe's plans"),
    (234, "a fire burns behind the captives with a raised path between"),
]
MODES = ("vector", "keyword", "hybrid", "hybrid + rerank")
_WORD = re.compile(r"\w+")


def exact_term_queries(docs: dict[str, list[str]], every: int = 10) -> list[tuple[str, tuple[str, int]]]:
    """(query, its one answer): for every `every`th sentence with a word of 5+ characters that no other sentence has, that word."""
    words = {(doc, i): {w.lower() for w in _WORD.findall(text)} for doc, texts in docs.items() for i, text in enumerate(texts)}
    df = Counter(w for ws in words.values() for w in ws)
    out = []
    for n, (where, ws) in enumerate(words.items()):
        rare = sorted((w for w in ws if df[w] == 1 and len(w) >= 5 and not w.isdigit()), key=lambda w: (-len(w), w))
        if n % every == 0 and rare:
            out.append((rare[0], where))
    return out


def measure(say: Callable[[str], None], short: bool = False) -> dict[str, dict[str, tuple[float, float]]]:
    """Recall@10 and MRR of every mode on both kinds of queries, printed as a table; {kind: {mode: (recall, mrr)}}."""
    import smls  # noqa: F401  (offline settings first)
    from smls.config import Settings
    from smls.hybrid import query_words
    from smls.serving import engine
    from smls.web.rerank import relevance

    docs = {"demo": demo(), "stdlib": stdlib_sample(300 if short else 1000)}
    with tempfile.TemporaryDirectory() as tmp:
        for doc_id, texts in docs.items():
            write_document(Path(tmp) / "data", doc_id, texts)
        served = engine.build(Settings(data_dir=Path(tmp) / "data", cache_dir=Path(tmp) / "cache"), load_indexes=False)
        model = served.embedders[0]
        kinds = {"exact terms": exact_term_queries(docs), "paraphrases": [(q, ("demo", i)) for i, q in PARAPHRASES]}
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for kind, queries in kinds.items():
            out[kind] = {}
            for mode in MODES:
                found, rr = 0, 0.0
                for query, answer in queries:
                    base = "hybrid" if mode.startswith("hybrid") else mode
                    hits = model.search.search(query, 20 if mode == "hybrid + rerank" else 10, mode=base, words=query_words(query)).hits
                    if mode == "hybrid + rerank" and hits:
                        scores = relevance(model, query, [h["text"] for h in hits], "results", 30.0).scores.scores
                        hits = [h for _, h in sorted(zip(scores.tolist(), hits, strict=True), key=lambda p: -p[0])]
                    ranked = [(h["doc_id"], h["index"]) for h in hits[:10]]
                    if answer in ranked:
                        found += 1
                        rr += 1 / (ranked.index(answer) + 1)
                out[kind][mode] = (found / len(queries), rr / len(queries))
    say(f"## Retrieval quality of /search's modes ({len(kinds['exact terms'])} exact-term and {len(PARAPHRASES)} paraphrase queries)")
    say()
    say("bench/retrieval.py says how the labelled queries were built; the documents are the demo corpus and "
        f"{len(docs['stdlib'])} standard-library sentences. Rerank here is the model's own cosine (no real cross-encoder ships offline).")
    say()
    say("| queries | " + " | ".join(f"{m}: recall@10 | MRR" for m in MODES) + " |")
    say("|---|" + "---|---|" * len(MODES))
    for kind, row in out.items():
        say(f"| {kind} | " + " | ".join(f"{r:.3f} | {m:.3f}" for r, m in row.values()) + " |")
    say()
    return out


if __name__ == "__main__":
    measure(print)
