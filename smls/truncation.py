"""What happens to a text longer than the model takes: cut from the end (right), from the start (left), or refused.

A request says it with `truncate` (true, the default: cut; false: 400 input_too_long naming
the item and its token count) and `truncation_direction` (`right`, the default: keep the
start; `left`: keep the end). A model's own direction (SMLS_MODELS `truncation=left`) is
its default, and the only one its documents' vectors use, so a cached vector always
means one thing.

Right is what every backend's tokenizer does already, so a request that asks nothing
special is not tokenised twice: only the texts the encoder flags as cut are counted
afterwards, for the report. Left is done here, before the model: the text is cut at
the start of the first whole word among its last tokens that fit, so the model reads
whole words (a word cut in half would tokenise differently), and a cut text is never
longer than the model takes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from smls import fields
from smls.errors import InvalidInput, InvalidOption
from smls.parsing import parse_bool
from smls.tokens import Tokens

Direction = Literal["right", "left"]
DIRECTIONS: tuple[Direction, ...] = ("right", "left")
# The request fields, in a JSON body, a form or a query string.
FIELDS = ("truncate", "truncation_direction")


def parse_direction(raw: Any, name: str = "truncation_direction") -> Direction:
    """'right' or 'left', or InvalidOption."""
    if raw not in DIRECTIONS:
        raise InvalidOption(f"option {name!r} must be right or left, got {fields.show(raw)}")
    return "left" if raw == "left" else "right"


@dataclass(frozen=True)
class Truncation:
    """What to do with a text over the model's max_seq_length."""

    truncate: bool = True
    direction: Direction = "right"

    @staticmethod
    def parsers() -> dict[str, Callable[[Any], Any]]:
        """How each request field is read and checked (the names are FIELDS)."""
        return {"truncate": lambda raw: parse_bool("truncate", raw), "truncation_direction": parse_direction}

    @classmethod
    def of(cls, values: dict[str, Any], default: Direction = "right") -> Truncation:
        """From fields.collect's values for FIELDS; the model's direction where the request gives none."""
        return cls(values.get("truncate", True), values.get("truncation_direction", default))


@dataclass(frozen=True)
class Cut:
    """One text the model did not read whole: which (field, index), its tokens, how many were dropped."""

    field: str
    index: int
    tokens: int | None  # special tokens included, as /tokenize counts (None: no fast tokenizer to count with)
    dropped: int | None

    def json(self) -> dict[str, Any]:
        """The entry of a response's "truncations" list."""
        return {"field": self.field, "index": self.index, "tokens": self.tokens, "dropped": self.dropped}


@dataclass(frozen=True)
class Framed:
    """Texts ready for the model (cut on the left where asked), and the cuts known before it runs."""

    texts: list[str]
    field_name: str
    originals: Sequence[str]
    tokens: Tokens | None
    known: dict[int, Cut] = field(default_factory=dict)  # index -> its cut, where the texts were counted

    def cuts(self, flags: np.ndarray | Sequence[bool] = (), fed: np.ndarray | Sequence[int] = (), offset: int = 0) -> list[Cut]:
        """Every text cut: those known, and those the encoder flags (rows offset.. of its flags and tokens fed are these texts)."""
        flagged = [i for i in range(len(self.texts)) if i not in self.known and len(flags) and flags[offset + i]]
        found = dict(self.known)
        if flagged and self.tokens is None:
            found.update((i, Cut(self.field_name, i, None, None)) for i in flagged)
        elif flagged and self.tokens is not None:
            for i, entry in zip(flagged, self.tokens.encodings([self.originals[i] for i in flagged]), strict=True):
                found[i] = Cut(self.field_name, i, len(entry.ids), len(entry.ids) - int(fed[offset + i]))
        return [found[i] for i in sorted(found)]


def frame(texts: Sequence[str], truncation: Truncation, tokens: Tokens | None, field_name: str, limit: int, *, prompt: str = "", count: bool = False) -> Framed:
    """The texts as the model will read them (`prompt` in front, cut as `truncation` says), or InvalidInput (input_too_long) for one it must refuse.

    `field_name` is the client's word for the list ("message", "input", "documents", or
    "query" for a single text), for messages and the report; `limit` the model's
    max_seq_length. Texts are counted (tokenised here) where the truncation needs it or
    `count` asks, so that their cuts are known without the encoder's flags. Counts
    include the prompt, which a cut on the left never touches.
    """
    texts = list(texts)
    prompted = [prompt + t for t in texts] if prompt else texts
    if truncation == Truncation() and not count:
        return Framed(prompted, field_name, prompted, tokens)
    if tokens is None:
        if truncation == Truncation():
            return Framed(prompted, field_name, prompted, tokens)
        raise InvalidOption(
            "this model has no fast tokenizer (tokenizer.json in its folder), so it can only cut long texts on the right; leave truncate and truncation_direction out"
        )
    known: dict[int, Cut] = {}
    out = list(prompted)
    for i, entry in enumerate(tokens.encodings(prompted)):
        n = len(entry.ids)
        if n <= limit:
            continue
        if not truncation.truncate:
            what = {"query": "the query", "q": "the query q"}.get(field_name, f"{field_name} item {i}")
            raise InvalidInput(
                f'{what} is {n} tokens, over the model\'s {limit}, and "truncate" is false; shorten it, or leave truncate out to cut it',
                code="input_too_long",
            )
        kept = limit
        if truncation.direction == "left":
            if prompt:
                own = len(tokens.encodings([prompt], add_special_tokens=False)[0].ids)
                tail, kept = keep_end(texts[i], tokens.encodings([texts[i]])[0], limit - own, tokens)
                out[i], kept = prompt + tail, min(limit, kept + own)
            else:
                out[i], kept = keep_end(texts[i], entry, limit, tokens)
        known[i] = Cut(field_name, i, n, n - kept)
    return Framed(out, field_name, prompted, tokens, known)


def keep_end(text: str, encoding: Any, limit: int, tokens: Tokens, tries: int = 3) -> tuple[str, int]:
    """The end of `text` that fits `limit` tokens with the special ones (starting at a whole word where there is one), and the tokens the model reads of it."""
    specials = sum(encoding.special_tokens_mask)
    content = [j for j, special in enumerate(encoding.special_tokens_mask) if not special]
    keep = max(1, limit - specials)
    first = len(content) - keep
    start = content[first]
    words = encoding.word_ids
    # Forward to the next word's first token (a word cut in half would read as another word);
    # a text that is one endless word is cut mid-word.
    for j in content[first:]:
        if words[j] is None or j == content[0] or words[j] != words[j - 1]:
            start = j
            break
    tail = text[encoding.offsets[start][0] :]
    # Some tokenizers read a text's first word differently from the same word mid-text (a
    # leading space marker); if the tail came out longer, cut again from it (and past a few
    # tries leave the rest to the encoder's own cut).
    again = tokens.encodings([tail])[0]
    if len(again.ids) <= limit or tries <= 1 or len(tail) >= len(text):
        return tail, min(limit, len(again.ids))
    return keep_end(tail, again, limit, tokens, tries - 1)
