"""Real English sentences for measuring: the demo document, and a second corpus nothing was tuned on.

The second corpus is the docstrings of Python's own standard library (technical English,
about 12,800 distinct sentences on Python 3.11): every machine that runs smls has it, it
needs no download, and neither the int8 quantiser's calibration text nor any default was
chosen by looking at it.
"""

from __future__ import annotations

import ast
import json
import re
import sysconfig
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@cache
def demo() -> list[str]:
    """The 239 sentences of data/texts_demo.json (public-domain texts; the int8 calibration text is drawn from the same)."""
    return [s["text"] for s in json.loads((ROOT / "data" / "texts_demo.json").read_text())]


@cache
def _docstring_paragraphs() -> list[str]:
    """Every paragraph of every docstring in Python's standard library (tests left out), whitespace joined, in a fixed order."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    out: list[str] = []
    for file in sorted(lib.glob("*.py")) + sorted(lib.glob("*/*.py")):
        if "test" in file.parent.name or file.name.startswith("test"):
            continue
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                out.extend(" ".join(paragraph.split()) for paragraph in re.split(r"\n\s*\n", ast.get_docstring(node) or ""))
    return out


@cache
def stdlib() -> list[str]:
    """Distinct sentences of 30 to 400 characters from the docstrings of Python's standard library, in a fixed order."""
    seen: set[str] = set()
    out: list[str] = []
    for paragraph in _docstring_paragraphs():
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", paragraph):
            if 30 <= len(sentence) <= 400 and sentence[0].isupper() and sentence.endswith(".") and ">>>" not in sentence and sentence not in seen:
                seen.add(sentence)
                out.append(sentence)
    return out


@cache
def paragraphs() -> list[str]:
    """Distinct docstring paragraphs of 200 to 2,000 characters from the standard library: long, varied technical text, many over 256 tokens."""
    return list(dict.fromkeys(p for p in _docstring_paragraphs() if 200 <= len(p) <= 2000 and ">>>" not in p))


def stdlib_sample(n: int = 2000) -> list[str]:
    """`n` sentences spread evenly over stdlib(): the second corpus of the int8 quality checks."""
    std = stdlib()
    return std[:: max(1, len(std) // n)][:n]


def write_document(data_dir: Path, doc_id: str, texts: list[str], per_page: int = 40) -> None:
    """texts_<doc_id>.json and pages_<doc_id>.csv in data_dir: the texts in order, per_page sentences a page."""
    data_dir.mkdir(parents=True, exist_ok=True)
    n_pages = max(1, -(-len(texts) // per_page))
    rows = ["page_id,page_number,section"] + [f"p{n},{n},section {1 + (n - 1) // 10}" for n in range(1, n_pages + 1)]
    (data_dir / f"pages_{doc_id}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    items = [{"text": t, "pages": [f"p{1 + i // per_page}"]} for i, t in enumerate(texts)]
    (data_dir / f"texts_{doc_id}.json").write_text(json.dumps(items), encoding="utf-8")
