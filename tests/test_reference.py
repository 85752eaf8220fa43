"""docs/reference.org's tables against the code's own: every setting, route, error code and metric, and nothing else."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import prometheus_client

from smls import errors, metrics
from smls.config import Settings
from smls.web.endpoints import ENDPOINTS
from tests.helpers import ROOT

REFERENCE = ROOT / "docs" / "reference.org"

# Raised in-process only (ml_services.get, start-up), never sent over HTTP.
IN_PROCESS_ONLY = {"unknown_service", "startup_error"}


def named_table(name: str, path: Path = REFERENCE) -> str:
    """The org table after `#+NAME: name`, as text."""
    return path.read_text().split(f"#+NAME: {name}\n", 1)[1].split("\n\n", 1)[0]


def readme_table() -> dict[str, int]:
    """code -> status from the table named error-codes in docs/reference.org."""
    table = named_table("error-codes")
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
    assert set(table) == sent, f"missing from docs/reference.org: {sorted(sent - set(table))}; not in the code: {sorted(set(table) - sent)}"
    for code, status in known.items():
        if code in table:
            assert table[code] == status, f"{code}: docs/reference.org says {table[code]}, the code {status}"


def test_literal_codes_have_the_status_of_the_error_class_that_raises_them():
    # InvalidInput(..., code="invalid_json") is a 400: every code= literal is passed to a 400 class.
    table = readme_table()
    _, literals = codes_in_the_code()
    assert all(table[code] == 400 for code in literals - IN_PROCESS_ONLY)


def cells(table: str) -> list[list[str]]:
    """The rows of an org table below its header line, each a list of stripped cells."""
    rows = [line for line in table.splitlines() if line.startswith("|") and not line.startswith("|-")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def test_the_settings_table_matches_settings_field_by_field():
    table = cells(named_table("settings"))
    rows = {row[0]: row for row in table}
    fields = {f"=SMLS_{f.name.upper()}=": f for f in dataclasses.fields(Settings)}
    assert len(rows) == len(table), "a setting is listed twice"
    assert sorted(rows) == sorted(fields), f"missing: {sorted(set(fields) - set(rows))}; not settings: {sorted(set(rows) - set(fields))}"
    for variable, f in fields.items():
        default = f.default
        if default is None or isinstance(default, bool) or default is dataclasses.MISSING:
            continue  # computed (cores, workers) or unset: the table says so in words
        shown = re.match(r"=([^=]*)=", rows[variable][1])
        assert shown, f"{variable}: the default column should show {default!r}"
        if isinstance(default, (int, float)):
            assert float(shown.group(1)) == float(default), f"{variable}: the table says {shown.group(1)}, Settings {default}"
        else:
            assert shown.group(1) == str(default), f"{variable}: the table says {shown.group(1)!r}, Settings {str(default)!r}"


def route_rows() -> list[list[str]]:
    """The rows the routes table must have, made from the endpoint table."""
    flags = ("model", "fast", "public", "upload", "transfer")
    return [
        [f"={e.method} {e.rule}=", e.summary, ", ".join(f for f in flags if getattr(e, f)), ", ".join(f"={q}=" for q in sorted(e.query))]
        for e in ENDPOINTS
    ]


def test_the_routes_table_is_the_endpoint_table():
    expected = route_rows()
    printed = "\n".join("| " + " | ".join(row) + " |" for row in expected)
    assert cells(named_table("routes")) == expected, f"docs/reference.org's routes table should read:\n{printed}"


def test_the_metrics_table_lists_every_metric_of_smls():
    listed = {row[0].strip("=") for row in cells(named_table("metrics"))}
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, prometheus_client.metrics.MetricWrapperBase):
            described = value.describe()[0].name
            names.add(described + "_total" if value._type == "counter" else described)
    assert names and listed == names
