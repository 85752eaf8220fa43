"""A model's prompts: the instruction prefixes (`query: `, `passage: `) some models need in front of a text.

sentence-transformers models declare them in config_sentence_transformers.json (`prompts`,
`default_prompt_name`); an SMLS_MODELS entry may override them (`prompts=query:...|passage:...`).
A request picks one by `prompt_name` or sends a literal `prompt`, not both; with neither,
the model's default prompt (if any) applies, as in sentence-transformers' own encode.
Searches and /rerank give queries the model's query prompt and documents its document
prompt, as sentence-transformers' encode_query and encode_document do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smls import fields
from smls.errors import ConflictingOption, InvalidOption, StartupError

# The request fields, in a JSON body, a form or a query string.
FIELDS = ("prompt_name", "prompt")
# The names sentence-transformers' encode_query and encode_document look for, in that order.
QUERY_NAMES = ("query",)
DOCUMENT_NAMES = ("document", "passage", "corpus")
CONFIG = "config_sentence_transformers.json"


@dataclass(frozen=True)
class Prompts:
    """One model's prompts by name, and the name of the one every text gets unless told otherwise."""

    prompts: Mapping[str, str] = field(default_factory=dict)
    default_name: str | None = None

    @classmethod
    def of(cls, folder: Path, override: Mapping[str, str] | None = None) -> Prompts:
        """The folder's prompts (its sentence-transformers config), or `override` in their place; StartupError for a bad default."""
        config: dict[str, Any] = {}
        if (folder / CONFIG).is_file():
            try:
                config = json.loads((folder / CONFIG).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise StartupError(f"{folder / CONFIG} does not parse: {e}") from None
        prompts = dict(override) if override is not None else {str(k): str(v) for k, v in (config.get("prompts") or {}).items()}
        default = config.get("default_prompt_name") or None
        if prompts and not _pools_prompt(folder):
            raise StartupError(
                f"the model at {str(folder)!r} has prompts but its pooling leaves the prompt's tokens out (include_prompt: false); smls pools every token it feeds"
            )
        if default is not None and default not in prompts:
            if override is None:
                raise StartupError(f"{folder / CONFIG}: default_prompt_name {default!r} is not one of its prompts ({', '.join(prompts) or 'none'})")
            default = None  # the override left it out: no default
        return cls(prompts, default)

    @property
    def default(self) -> str:
        """The prefix a text gets when its request names none ('' without a default prompt)."""
        return self.prompts[self.default_name] if self.default_name else ""

    @property
    def query(self) -> str:
        """The prefix of a search's or a rerank's query: the model's query prompt, else its default."""
        return self._first(QUERY_NAMES)

    @property
    def document(self) -> str:
        """The prefix of a document's sentences and of rerank's documents: the model's document (or passage) prompt, else its default."""
        return self._first(DOCUMENT_NAMES)

    def _first(self, names: tuple[str, ...]) -> str:
        return next((self.prompts[n] for n in names if n in self.prompts), self.default)

    def choose(self, values: Mapping[str, Any]) -> str:
        """The prefix a request asks for by its prompt_name or prompt (fields.collect's values), else the default."""
        name, literal = values.get("prompt_name"), values.get("prompt")
        if name is not None and literal is not None:
            raise ConflictingOption("both 'prompt_name' and 'prompt' are given; send one: a name of the model's prompts, or the prefix itself")
        if literal is not None:
            return str(literal)
        if name is None:
            return self.default
        if name not in self.prompts:
            known = ", ".join(sorted(self.prompts)) or "none (send 'prompt' with the prefix itself)"
            raise InvalidOption(f"prompt_name {name!r} is not one of this model's prompts; it has: {known}", code="unknown_prompt")
        return self.prompts[name]

    def info(self) -> dict[str, Any]:
        """What GET /models says of them."""
        return {"prompts": dict(self.prompts), "default_prompt_name": self.default_name}


def _pools_prompt(folder: Path) -> bool:
    """Whether the folder's pooling includes the prompt's tokens (sentence-transformers' include_prompt, true by default)."""
    for config in folder.glob("*Pooling*/config.json"):
        try:
            if json.loads(config.read_text(encoding="utf-8")).get("include_prompt", True) is False:
                return False
        except (OSError, ValueError):
            continue
    return True


def parsers() -> dict[str, Callable[[Any], Any]]:
    """How each request field is read and checked (the names are FIELDS)."""
    return {"prompt_name": lambda raw: _string("prompt_name", raw), "prompt": lambda raw: _string("prompt", raw)}


def _string(name: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise InvalidOption(f"option {name!r} must be a string, got {fields.show(raw)}")
    return raw


def parse_setting(raw: str, where: str) -> dict[str, str]:
    """An SMLS_MODELS `prompts=` value, `query:query: |passage:passage: ` (name, a colon, the prefix; '|' between), or StartupError."""
    out: dict[str, str] = {}
    for part in raw.split("|"):
        name, colon, prefix = part.partition(":")
        name = name.strip()
        if not colon or not name:
            raise StartupError(f"{where}: prompts must be name:prefix pairs separated by '|' (prompts=query:query: |passage:passage: ), got {part!r}")
        if name in out:
            raise StartupError(f"{where}: the prompt {name!r} is given twice")
        out[name] = prefix
    return out
