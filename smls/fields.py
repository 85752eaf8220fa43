"""Named fields from every place a request carries them, read by one rule. Pure functions, no web imports.

A JSON body, a form and the query string may all name options. Everywhere:
  * a name the route does not know is refused (unknown_field), with a did-you-mean;
  * JSON null means "not given" (the default), so clients that write absent values as
    null (Emacs Lisp's nil, many JSON libraries) need no special case;
  * one option given two different values, in two places or repeated in one, is refused
    (conflicting_option) instead of one of them silently winning.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from smls.errors import ConflictingOption, InvalidOption, UnknownField

# (where, [(name, value), ...], the names this place may carry)
Source = tuple[str, Iterable[tuple[str, Any]], Collection[str]]


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def word_bool(text: str) -> bool | None:
    """1/0, true/false, yes/no, on/off (any case, spaces around ignored) as a bool; None for any other text.

    The one spelling of a yes or no, for request options and SMLS_* settings alike.
    """
    word = text.strip().lower()
    return word in _TRUE if word in _TRUE | _FALSE else None


def unknown_field(name: str, known: Collection[str], where: str) -> UnknownField:
    """The error for a field `name` not in `known`, suggesting the closest known name."""
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(sorted(known)) or "none"
    return UnknownField(f"unknown field {name!r} in the {where}{hint} (known here: {listed})")


def check_names(where: str, items: Iterable[tuple[str, Any]], known: Collection[str]) -> None:
    """UnknownField for the first name in items that is not in known."""
    for name, _ in items:
        if name not in known:
            raise unknown_field(name, known, where)


def collect(sources: Sequence[Source], parsers: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    """Each option of `parsers` that the sources give, parsed; unknown names and conflicting values refused.

    Names a source may carry that have no parser (such as `message`) are allowed and skipped.
    Two values of one option conflict when they differ once parsed ("true" and true agree).
    """
    found: dict[str, tuple[Any, str, Any]] = {}
    for where, items, known in sources:
        for name, raw in items:
            if name not in known:
                raise unknown_field(name, known, where)
            if raw is None or name not in parsers:
                continue
            value = parsers[name](raw)
            if name in found and found[name][0] != value:
                _, first_where, first_raw = found[name]
                places = f"the {first_where} and the {where}" if first_where != where else f"the {where}, twice"
                raise ConflictingOption(
                    f"option {name!r} is given two different values, {show(first_raw)} and {show(raw)}, in {places}; send it once"
                )
            found.setdefault(name, (value, where, raw))
    return {name: value for name, (value, _, _) in found.items()}


def model_name(value: Any) -> str:
    """A `model` field's value: a string (a served model's name), else InvalidOption."""
    if not isinstance(value, str):
        raise InvalidOption(f"option 'model' must be a model's name (a string), got {show(value)}")
    return value


def show(value: Any) -> str:
    """A value as the client wrote it, in JSON's spelling, cut short if long."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return "a value of another kind"
