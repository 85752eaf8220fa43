"""README.org's examples, run as a reader would (bash, curl, jq) against live servers, and checked against what the README shows.

Conventions in the README that this test reads:
  * in a sh block, lines starting with "# " after a command are what it prints;
  * a sh block followed by a json block: the json block is what the block prints;
  * "..." ends a shortened list or string (the rest is not shown); "…" stands for text
    that differs between machines (paths, timings, fingerprints);
  * numbers are compared with a small tolerance (floats may differ in the last digits
    from one CPU to another); integers exactly.
Every example block is either run here or listed in NOT_RUN with the test that covers it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import ROOT, start_server

pytestmark = pytest.mark.live

README = ROOT / "README.org"
MORE = "@@shortened@@"  # marks a shortened list in expected JSON
# Blocks this test does not run, each with where it is covered (matched by a line of the block).
NOT_RUN = {
    "make serve   # creates .venv": "installing and serving: CI's clean-clone run of .ci/run does exactly this",
    "python3.11 -m venv .venv": "installing: the same steps as make serve",
    "sh clients/shell/embed.sh": "tests/test_clients.py runs every client (make test-clients)",
    "nginx -c": "tests/test_deploy.py runs deploy/nginx.conf in front of two instances (make test-deploy)",
    "ray start --head": "tests/test_embed_ray.py runs smls embed on a real two-node Ray cluster",
    "podman run -d --name smls": "tests/test_image.py runs the image: key, volume, podman stop (make test-image)",
}


@dataclass
class Step:
    """One command of a block and the lines the README says it prints."""

    command: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    """One example: its kind (sh, python, example), first line number, source and expected output."""

    kind: str
    line: int
    source: str
    steps: list[Step] = field(default_factory=list)
    json_after: str | None = None  # the json block right after it, if any


def read_blocks() -> list[Block]:
    """Every sh, python and example block of README.org, in order (a json block is the output of the sh block before it)."""
    lines = README.read_text().split("\n")
    blocks: list[Block] = []
    last_end = -2  # >= 0 while the latest block is an sh block
    i = 0
    while i < len(lines):
        match = re.match(r"#\+begin_(src (sh|python|json)|example)", lines[i])
        if not match:
            i += 1
            continue
        kind = match.group(2) or "example"
        end = lines.index("#+end_example" if kind == "example" else "#+end_src", i)
        body = lines[i + 1 : end]
        if kind == "json":
            if blocks and last_end >= 0:  # the output of the sh block before it (prose may stand between)
                blocks[-1].json_after = "\n".join(body)
        else:
            blocks.append(Block(kind, i + 1, "\n".join(body), steps(body)))
            last_end = end if kind == "sh" else -2
        i = end + 1
    return blocks


def steps(body: list[str]) -> list[Step]:
    """Commands (continuation lines joined) and their expected output lines."""
    out: list[Step] = []
    pending = ""
    for line in body:
        if pending:
            pending += "\n" + line
            if not line.endswith("\\"):
                out.append(Step(pending))
                pending = ""
        elif line.startswith("# ") or line == "#":
            if out:
                out[-1].expected.append(line[2:])
        elif line.strip():
            if line.endswith("\\"):
                pending = line
            else:
                out.append(Step(line))
    return out


def why_not_run(block: Block) -> str | None:
    """The reason a block is not run here, or None."""
    for marker, reason in NOT_RUN.items():
        if marker in block.source:
            return reason
    return None


# ---------------------------------------------------------------- comparing what is printed


def parse_expected_json(text: str) -> object:
    """JSON with the README's elisions: [a, b, ...] and [...] (a list shortened or left out)."""
    text = re.sub(r",\s*\.\.\.\s*\]", f', "{MORE}"]', text)
    text = re.sub(r"\[\s*\.\.\.\s*\]", f'["{MORE}"]', text)
    return json.loads(text)


def close(expected: float, actual: float) -> bool:
    """Numbers agree: integers exactly, floats to 1e-3 (relative) or 1e-4 (absolute)."""
    if isinstance(expected, int) and isinstance(actual, int):
        return expected == actual
    return math.isclose(expected, actual, rel_tol=1e-3, abs_tol=1e-4)


def same(expected: object, actual: object, where: str = "$") -> None:
    """Assert that actual is what the README shows (structure exact, shortened parts as prefixes)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        assert set(expected) == set(actual), f"{where}: keys {sorted(expected)} in the README, {sorted(actual)} from the server"
        for key in expected:
            same(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: expected a list, got {actual!r}"
        if expected and expected[-1] == MORE:
            shown = expected[:-1]
            assert len(actual) >= len(shown), f"{where}: shorter than the README shows"
            actual = actual[: len(shown)]
            expected = shown
        assert len(expected) == len(actual), f"{where}: {len(expected)} items in the README, {len(actual)} from the server"
        for k, (e, a) in enumerate(zip(expected, actual, strict=True)):
            same(e, a, f"{where}[{k}]")
    elif isinstance(expected, str):
        assert isinstance(actual, str), f"{where}: expected a string, got {actual!r}"
        assert text_matches(expected, actual), f"{where}: README {expected!r}, server {actual!r}"
    elif isinstance(expected, bool) or expected is None:
        assert expected == actual, f"{where}: README {expected!r}, server {actual!r}"
    else:
        assert isinstance(actual, (int, float)) and not isinstance(actual, bool), f"{where}: expected a number, got {actual!r}"
        assert close(expected, actual), f"{where}: README {expected!r}, server {actual!r}"  # type: ignore[arg-type]


NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"


def text_matches(expected: str, actual: str) -> bool:
    """A line or string: "…" matches anything, a trailing "..." a prefix, numbers with tolerance."""
    if expected.endswith("...") and "…" not in expected:
        return actual.startswith(expected[:-3])
    pattern, numbers = "", []
    for piece in re.split(f"(…|{NUMBER})", expected):
        if piece == "…":
            pattern += ".*?"
        elif piece and re.fullmatch(NUMBER, piece):
            pattern += f"({NUMBER})"
            numbers.append(piece)
        else:
            pattern += re.escape(piece)
    found = re.fullmatch(pattern, actual, re.S)
    if not found:
        return False
    return all(close(_number(e), _number(a)) for e, a in zip(numbers, found.groups(), strict=True))


def _number(text: str) -> float:
    return int(text) if re.fullmatch(r"-?\d+", text) else float(text)


def check_output(step: Step, printed: str) -> None:
    """The command printed what the README shows under it."""
    lines = printed.rstrip("\n").split("\n") if printed.strip() else []
    if " -i " in step.command:  # response headers vary (date, request id): the shown lines, in order
        position = 0
        for want in step.expected:
            while position < len(lines) and not text_matches(want, lines[position].rstrip("\r")):
                position += 1
            assert position < len(lines), f"{step.command!r}: {want!r} not printed; got:\n{printed}"
        return
    assert len(lines) == len(step.expected), f"{step.command!r} printed:\n{printed}\nthe README shows:\n" + "\n".join(step.expected)
    for want, got in zip(step.expected, lines, strict=True):
        if want.startswith(("{", "[")) and got.startswith(("{", "[")):
            same(parse_expected_json(want), json.loads(got), step.command[:60])
        else:
            assert text_matches(want, got), f"{step.command!r}: README {want!r}, printed {got!r}"


# ---------------------------------------------------------------- running the examples


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """A folder like the repository's root for the examples: data/ holds a copy of the demo document."""
    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "data", root / "data", ignore=shutil.ignore_patterns("models"))
    shutil.copytree(ROOT / "scripts", root / "scripts")  # examples build tiny models with python -m scripts.tiny_models
    return root


@pytest.fixture(scope="module")
def server(place):
    srv = start_server(place, workers=1, SMLS_DATA_DIR=str(place / "data"), SMLS_CACHE_DIR=str(place / "cache"))
    yield srv
    srv.stop()


def shell(command: str, place: Path, env: dict[str, str] | None = None) -> str:
    """Run one example command with bash in `place`, as a reader would; its stdout."""
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=place, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, f"{command!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def localize(command: str, url: str, place: Path) -> str:
    """The command against the test's server and folders: its port, its /tmp, this venv's python."""
    command = command.replace("http://localhost:8000", url).replace("localhost:8000", url)
    command = command.replace("/tmp/", f"{place}/tmp/").replace(".venv/bin/python", sys.executable)
    return command


def run_block(block: Block, url: str, place: Path, env: dict[str, str] | None = None) -> None:
    for step in block.steps:
        printed = shell(localize(step.command, url, place), place, env)
        if step.expected:
            check_output(step, printed)
    if block.json_after is not None:
        same(parse_expected_json(block.json_after), json.loads(printed), f"line {block.line}")


def example_id(block: Block) -> str:
    return f"line {block.line}: {block.source.splitlines()[0][:50]}"


BLOCKS = read_blocks()
ON_THE_DEMO_SERVER = [b for b in BLOCKS if b.kind == "sh" and "localhost:8000" in b.source and "make serve" not in b.source and not why_not_run(b)]
WITH_THEIR_OWN_SERVER = [b for b in BLOCKS if b.kind == "sh" and "make serve" in b.source and not why_not_run(b)]


def test_every_example_is_run_or_covered_elsewhere():
    run = set(map(id, ON_THE_DEMO_SERVER + WITH_THEIR_OWN_SERVER))
    others = [b for b in BLOCKS if id(b) not in run]
    assert {b.kind for b in others} <= {"sh", "python", "example"}
    for block in others:
        assert block.kind in ("python", "example") or why_not_run(block) or "precompute" in block.source or "smls embed" in block.source, f"README line {block.line} is neither run nor covered"
    assert len(ON_THE_DEMO_SERVER) >= 15  # the parser found the curl examples


def test_the_demo_server_examples_print_what_the_readme_shows(server, place):
    # In README order, on one server: the document examples rely on the first call computing
    # the vectors (cached false) and later ones finding them (cached true).
    for block in ON_THE_DEMO_SERVER:
        try:
            run_block(block, server.url.removeprefix("http://"), place)
        except AssertionError as exc:
            raise AssertionError(f"README.org line {block.line}: {exc}") from None


@pytest.mark.parametrize("block", WITH_THEIR_OWN_SERVER, ids=example_id)
def test_examples_with_their_own_settings(block, place, tmp_path):
    """Blocks that start `SMLS_...=... make serve`: that server, then the rest of the block."""
    (place / "tmp").mkdir(exist_ok=True)
    serve = next(i for i, step in enumerate(block.steps) if "make serve" in step.command)
    for step in block.steps[:serve]:
        shell(localize(step.command, "", place), place)
    settings = dict(re.findall(r"(SMLS_\w+)=(\S+)", block.steps[serve].command))
    settings = {k: v.strip("\"'").replace("/tmp/", f"{place}/tmp/") for k, v in settings.items()}
    srv = start_server(tmp_path, workers=1, SMLS_CACHE_DIR=str(tmp_path / "cache"), **settings)
    try:
        rest = Block(block.kind, block.line, block.source, block.steps[serve + 1 :])
        run_block(rest, srv.url.removeprefix("http://"), place)
    finally:
        srv.stop()


@pytest.mark.parametrize("command", ["smls precompute", "smls embed"])
def test_commands_print_what_the_readme_shows(tmp_path, command):
    block = next(b for b in BLOCKS if command in b.source and not why_not_run(b))
    (tmp_path / "tmp").mkdir()
    shutil.copytree(ROOT / "data", tmp_path / "data", ignore=shutil.ignore_patterns("models"))
    env = {**os.environ, "SMLS_DATA_DIR": str(tmp_path / "data"), "SMLS_CACHE_DIR": str(tmp_path / "cache")}
    env = {k: v for k, v in env.items() if not k.startswith("SMLS_") or k in ("SMLS_DATA_DIR", "SMLS_CACHE_DIR")}
    for step in block.steps:
        printed = shell(localize(step.command, "", tmp_path), ROOT, env)
        check_output(step, printed)


def test_the_python_example_prints_what_its_comments_say(tmp_path):
    block = next(b for b in BLOCKS if b.kind == "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMLS_")}
    done = subprocess.run([sys.executable, "-c", block.source], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    expected = [line.split("# ", 1)[1].split(":", 1)[0].strip() for line in block.source.splitlines() if line.startswith("print(")]
    assert done.stdout.splitlines() == expected


def test_a_bad_model_path_stops_the_start_with_the_line_the_readme_shows(tmp_path):
    # "A bad path stops the start with one line: =smls: model path '/tmp/nope' (from SMLS_MODEL) does not exist=."
    found = re.search(r"=(smls: model path '([^']+)' \(from (SMLS_\w+)\) does not exist)=", README.read_text(encoding="utf-8"))
    assert found, "README.org no longer shows the line a bad model path prints"
    shown, settings = found.group(1), {found.group(3): found.group(2)}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SMLS_")}, **settings}
    done = subprocess.run([str(Path(sys.executable).with_name("gunicorn")), "server:app", "-c", "gunicorn.conf.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == shown
