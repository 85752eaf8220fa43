"""README.org's error table lists exactly the codes the server can send, each with its status."""

from __future__ import annotations

import inspect
import re

from smls import errors
from tests.helpers import ROOT

# Raised in-process only (ml_services.get, start-up), never sent over HTTP.
IN_PROCESS_ONLY = {"unknown_service", "startup_error"}


def readme_table() -> dict[str, int]:
    """code -> status from the table named error-codes in README.org."""
    text = (ROOT / "README.org").read_text()
    table = text.split("#+NAME: error-codes\n", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\|\s*(\d{3})\s*\|\s*=(\w+)=\s*\|", table, re.MULTILINE)
    codes = {code: int(status) for status, code in rows}
    assert len(codes) == len(rows), "a code is listed twice"
    statuses = [int(status) for status, _ in rows]
    assert statuses == sorted(statuses), "the table is sorted by status"
    return codes


def codes_in_the_code() -> tuple[dict[str, int], set[str]]:
    """(code -> status where the status is known from a class or table, every code= literal in smls/)."""
    known: dict[str, int] = {}
    for _, cls in inspect.getmembers(errors, inspect.isclass):
        if issubclass(cls, errors.SmlsError):
            known[cls.code] = cls.status
    for status, code in errors.PROTOCOL_CODES.items():
        known[code] = status
    for status, code in errors.ROUTING_CODES.items():
        known[code] = status
    known[errors.routing_code(400)] = 400  # the fallback for any other werkzeug 4xx
    literals = set()
    for path in (ROOT / "smls").rglob("*.py"):
        literals |= set(re.findall(r'\bcode="(\w+)"', path.read_text()))
    return known, literals


def test_the_error_table_lists_every_code_the_server_sends_and_no_other():
    table = readme_table()
    known, literals = codes_in_the_code()
    sent = (set(known) | literals) - IN_PROCESS_ONLY
    assert set(table) == sent, f"missing from README: {sorted(sent - set(table))}; not in the code: {sorted(set(table) - sent)}"
    for code, status in known.items():
        if code in table:
            assert table[code] == status, f"{code}: README says {table[code]}, the code {status}"


def test_literal_codes_have_the_status_of_the_error_class_that_raises_them():
    # InvalidInput(..., code="invalid_json") is a 400: every code= literal is passed to a 400 class.
    table = readme_table()
    _, literals = codes_in_the_code()
    assert all(table[code] == 400 for code in literals - IN_PROCESS_ONLY)
