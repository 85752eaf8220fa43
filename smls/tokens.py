"""What POST /tokenize and /decode answer: a served model's own tokenizer (its tokenizer.json), without running the model.

A text's tokens are the ids the model would read, each with its text and its character
offsets (start, end) into the text as sent, and whether it is a special token ([CLS],
[SEP]); the count is what the model would be fed before truncation, and `truncated` says
whether it is over the model's max_seq_length and would be cut (as /embed cuts it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smls import fields
from smls.errors import InvalidInput
from smls.parsing import type_name

FIELDS = frozenset({"model", "text", "add_special_tokens", "return_tokens"})
DECODE_FIELDS = frozenset({"model", "ids", "skip_special_tokens"})


class Tokens:
    """One model's tokenizer, untruncated and unpadded: counting and showing tokens, and ids back to text."""

    def __init__(self, path: Path, max_seq_length: int) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.max_seq_length = max_seq_length
        self.vocab_size = self._tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def of(cls, path: Path, max_seq_length: int) -> Tokens | None:
        """The model folder's tokenizer, or None if it has no tokenizer.json (a slow tokenizer only)."""
        return cls(path, max_seq_length) if (path / "tokenizer.json").is_file() else None

    def encodings(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[Any]:
        """The tokenizer's Encoding of each text (ids, tokens, offsets, word ids), untruncated."""
        return list(self._tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens))

    def pair_counts(self, query: str, documents: Sequence[str]) -> list[int]:
        """Tokens of each (query, document) pair as a cross-encoder reads it whole, special tokens included."""
        return [len(e.ids) for e in self._tokenizer.encode_batch([(query, d) for d in documents])]

    def tokenize(self, texts: Sequence[str], *, add_special_tokens: bool = True, return_tokens: bool = True) -> list[dict[str, Any]]:
        """For each text: its token count, whether the model would cut it, its ids, and (return_tokens) each token's text, offsets and kind."""
        out = []
        for encoding in self.encodings(texts, add_special_tokens=add_special_tokens):
            entry: dict[str, Any] = {"count": len(encoding.ids), "truncated": len(encoding.ids) > self.max_seq_length, "ids": encoding.ids}
            if return_tokens:
                entry["tokens"] = [
                    {"id": i, "text": token, "start": start, "end": end, "special": bool(special)}
                    for i, token, (start, end), special in zip(encoding.ids, encoding.tokens, encoding.offsets, encoding.special_tokens_mask, strict=True)
                ]
            out.append(entry)
        return out

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """The text these ids spell (checked first: check_ids)."""
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def check_ids(self, ids: Any) -> list[int]:
        """`ids` as a list of token ids of this vocabulary, or InvalidInput naming the first that is not one."""
        if not isinstance(ids, list):
            raise InvalidInput(f"'ids' is {type_name(ids)}; send a list of token ids like [101, 7592, 102]", code="invalid_token_ids")
        ids = [int(v) if isinstance(v, float) and v.is_integer() else v for v in ids]  # JSON's 3.0 is 3 (JSON Schema agrees)
        for i, value in enumerate(ids):
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidInput(f"ids item {i} is {type_name(value)} ({fields.show(value)}); every id must be an integer", code="invalid_token_ids")
            if not 0 <= value < self.vocab_size:
                raise InvalidInput(f"ids item {i} is {value}, outside this model's vocabulary (0 to {self.vocab_size - 1})", code="invalid_token_ids")
        return ids
