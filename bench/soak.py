"""make soak: a bounded mixed load on a real server, then requests, errors by status, and worker memory.

Starts `gunicorn server:app -c gunicorn.conf.py` (2 workers) on a free loopback port and
drives it with wrk at concurrency 64 through a Lua script that rotates /embed (form, and
JSON with int8/base64 output, on two models: the embedded one and a tiny one built here),
/v1/embeddings, /rerank, /tokenize and /decode, /documents/demo and its search, /search in
every mode and the search page, each sentence different; beside it a writer uploads (PUT) and deletes documents the whole time. A warm-up phase (60 s) comes first (so caches, the calibration ranges and
allocator arenas are in place); the RSS of every worker is read after it and at the end.

It fails (exit 1) on any unexpected status (anything but 200, or 503 with Retry-After
when the server sheds load) or on a worker whose RSS grew by 5% (--rss-limit) or more after warm-up.

    .venv/bin/python -m bench.soak [--seconds 600] [--warmup 60] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from bench.procs import children, free_port, rss_mb, wait_accepting

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
STATUSES = (200, 400, 401, 404, 413, 429, 500, 502, 503)

LUA = r"""
local requests = {}
local function add(method, path, headers, body) table.insert(requests, wrk.format(method, path, headers, body)) end
local form = {["Content-Type"] = "application/x-www-form-urlencoded"}
local json = {["Content-Type"] = "application/json"}
local texts = %s
for i, t in ipairs(texts) do
  local q = t:gsub("[^%%w ]", ""):gsub(" ", "+")
  add("POST", "/embed", form, "message=" .. q)
  add("POST", "/embed", json, '{"message": ["' .. t:gsub('["\\]', "") .. '", "second sentence"], "precision": "int8", "encoding": "base64"}')
  add("POST", "/v1/embeddings", json, '{"input": "' .. t:gsub('["\\]', "") .. '", "dimensions": 128}')
  add("GET", "/documents/demo/search?k=3&q=" .. q:sub(1, 60), nil, nil)
  add("POST", "/embed", form, "model=tiny&message=" .. q)
  add("POST", "/rerank", json, '{"query": "' .. t:gsub('["\\]', "") .. '", "documents": ["a first document", "' .. t:gsub('["\\]', "") .. '", "a third"]}')
  add("GET", "/search?k=5&mode=" .. ({"vector", "keyword", "hybrid"})[i %% 3 + 1] .. "&q=" .. q:sub(1, 60), nil, nil)
  add("POST", "/tokenize", json, '{"text": ["' .. t:gsub('["\\]', "") .. '"], "model": "' .. ({"mini", "tiny"})[i %% 2 + 1] .. '"}')
  add("POST", "/decode", json, '{"ids": [101, ' .. (1000 + i) .. ', 102]}')
  if i %% 8 == 0 then add("GET", "/documents/demo", nil, nil) end
  if i %% 16 == 0 then add("GET", "/search.html", nil, nil) end
end
local i = 0
request = function() i = i + 1; return requests[(i %% #requests) + 1] end
%s
local others = 0
response = function(status, headers, body)
  local name = "s" .. status
  if _G[name] ~= nil then _G[name] = _G[name] + 1 else others = others + 1 end
  if status == 503 and headers["Retry-After"] == nil then no_retry_after = no_retry_after + 1 end
end
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, reqs)
  local out = {errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout}
  for _, t in ipairs(threads) do
    for _, s in ipairs({%s}) do out["s" .. s] = (out["s" .. s] or 0) + t:get("s" .. s) end
    out.no_retry_after = (out.no_retry_after or 0) + t:get("no_retry_after")
  end
  local parts = {}
  for k, v in pairs(out) do table.insert(parts, string.format('"%%s": %%d', k, v)) end
  io.write("SOAK {" .. table.concat(parts, ", ") .. "}\n")
end
"""


WORKERS = 2


def script(path: Path) -> None:
    texts = [t["text"][:200] for t in json.loads((ROOT / "data" / "texts_demo.json").read_text())][:120]
    lua_texts = "{" + ",\n".join("[==[" + t.replace("]==]", "") + "]==]" for t in texts) + "}"
    counters = "\n".join(f"s{s} = 0" for s in STATUSES) + "\nno_retry_after = 0"
    path.write_text(LUA % (lua_texts, counters, ", ".join(str(s) for s in STATUSES)))


def wrk(url: str, lua: Path, seconds: float, concurrency: int) -> dict:
    out = subprocess.run(["wrk", "-t2", f"-c{concurrency}", f"-d{int(seconds)}s", "--timeout", "60s", "-s", str(lua), url],
                         capture_output=True, text=True, timeout=seconds + 120)
    line = next((row for row in out.stdout.splitlines() if row.startswith("SOAK ")), None)
    if line is None:
        sys.exit(f"soak: wrk gave no result:\n{out.stdout}\n{out.stderr}")
    return json.loads(line[5:])


class Writer(threading.Thread):
    """Uploads and deletes small documents for as long as the load runs: every answer 200/201 (or a shed 503 with Retry-After)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.done = url, threading.Event(), 0
        self.unexpected: list[str] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            doc = f"soak-{n % 4}"
            body = {"texts": [{"text": f"Upload {n} of the soak, sentence {j}.", "pages": ["p1"]} for j in range(3)], "pages": [{"id": "p1", "page_number": 1}]}
            for method, path, kwargs, ok in (
                ("PUT", f"/documents/{doc}", {"json": body}, (200, 201)),
                ("GET", f"/search?mode=keyword&q=soak+{n}&doc={doc}", {}, (200,)),
                *((("DELETE", f"/documents/{doc}", {}, (200,)),) if n % 2 else ()),
            ):
                try:
                    r = requests.request(method, self.url + path, timeout=60, **kwargs)
                except requests.RequestException as exc:
                    self.unexpected.append(f"{method} {path}: {exc}")
                    continue
                if r.status_code in ok or (r.status_code == 503 and "Retry-After" in r.headers):
                    self.done += 1
                else:
                    self.unexpected.append(f"{method} {path}: {r.status_code} {r.text[:200]}")
            n += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", 600)))
    parser.add_argument("--warmup", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rss-limit", type=float, default=5.0,
                        help="percent of RSS growth after warm-up that fails the run (5; CI's one-minute run uses 30, see .ci/run)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="smls-soak-"))
    lua = work / "soak.lua"
    script(lua)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMLS_")}
    from scripts.tiny_models import build_embedding

    tiny = build_embedding(work / "tiny")  # a second model, served beside the embedded one
    data = work / "data"  # the demo document, and the writer's uploads (never the repository's data folder)
    data.mkdir()
    for name in ("texts_demo.json", "pages_demo.csv"):
        (data / name).write_bytes((ROOT / "data" / name).read_bytes())
    env.update(SMLS_PORT=str(port), SMLS_WORKERS=str(WORKERS), SMLS_ACCESS_LOG="", SMLS_LOG_LEVEL="warning", SMLS_CACHE_DIR=str(work / "cache"),
               SMLS_MODELS=f"mini=embedded,tiny={tiny}", SMLS_DATA_DIR=str(data))
    server = subprocess.Popen([str(GUNICORN), "server:app", "-c", "gunicorn.conf.py"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "w"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                sys.exit(f"soak: the server did not start:\n{(work / 'server.log').read_text()}")
            time.sleep(0.2)
        try:
            took = wait_accepting(port, server.pid, WORKERS, max(1.0, deadline - time.monotonic()))
        except TimeoutError as exc:
            sys.exit(f"soak: {exc}:\n{(work / 'server.log').read_text()}")
        print(f"soak: every worker accepts connections ({took:.1f} s after the first /ready)", flush=True)
        print(f"soak: warm-up {args.warmup:g} s, then {args.seconds:g} s at concurrency {args.concurrency} against {url}", flush=True)
        warm = wrk(url, lua, args.warmup, args.concurrency)
        pids = children(server.pid)
        before = {pid: rss_mb(pid) for pid in pids}
        started = time.monotonic()
        samples: list[tuple[float, dict[int, float]]] = []
        sampling = threading.Event()

        def sample() -> None:  # the RSS trend: a leak climbs, a heap settling flattens out
            while not sampling.wait(max(5.0, args.seconds / 10)):
                samples.append((time.monotonic() - started, {p: rss_mb(p) for p in children(server.pid)}))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        writer = Writer(url)
        writer.start()
        result = wrk(url, lua, args.seconds, args.concurrency)
        writer.stop.set()
        writer.join(120)
        sampling.set()
        elapsed = time.monotonic() - started
        after = {pid: rss_mb(pid) for pid in children(server.pid)}
        # Why any 503 was given (warm-up included): shed before work (by reason), or the model's queue.
        shed = [line for line in requests.get(url + "/metrics", timeout=30).text.splitlines()
                if line.startswith("smls_shed_requests_total{") or (line.startswith("smls_http_requests_total{") and 'status="503"' in line)]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    total = sum(result.get(f"s{s}", 0) for s in STATUSES)
    unexpected = total - result.get("s200", 0) - result.get("s503", 0) + result["errors"] + result["no_retry_after"] + len(writer.unexpected)
    print(f"\nwarm-up: {sum(warm.get(f's{s}', 0) for s in STATUSES)} requests\n")
    print("| requests | per second | 200 | 503 (shed, with Retry-After) | other statuses | socket errors | unexpected |")
    print("|---|---|---|---|---|---|---|")
    others = ", ".join(f"{s}: {result[f's{s}']}" for s in STATUSES if s not in (200, 503) and result.get(f"s{s}")) or "none"
    print(f"| {total} | {total / elapsed:.1f} | {result.get('s200', 0)} | {result.get('s503', 0)} | {others} | {result['errors']} | {unexpected} |")
    print(f"\nthe writer: {writer.done} uploads, keyword searches and deletes answered as expected; unexpected: {writer.unexpected[:5] or 'none'}")
    print("\n| worker | RSS after warm-up MB | RSS at end MB | growth |")
    print("|---|---|---|---|")
    grew = False
    for pid in sorted(set(before) | set(after)):
        if pid in before and pid in after:
            growth = after[pid] / before[pid] - 1
            grew |= growth >= args.rss_limit / 100
            print(f"| {pid} | {before[pid]:.0f} | {after[pid]:.0f} | {growth:+.1%} |")
        else:
            print(f"| {pid} | {before.get(pid, 0):.0f} | {after.get(pid, 0):.0f} | replaced during the run |")
            grew = True
    if samples:
        print("\nRSS over the run (MB), worker by worker:")
        for pid in sorted(before):
            print(f"  {pid}: " + " ".join(f"{t:.0f}s={rss.get(pid, 0):.0f}" for t, rss in samples))
    print("\n503s by cause, warm-up included (from /metrics): " + ("; ".join(shed) or "none"))
    ok = unexpected == 0 and not grew and set(before) == set(after)
    print(f"\nsoak: {'OK' if ok else 'FAILED'} (goal: 0 unexpected, every worker's RSS growth under {args.rss_limit:g}%, no worker replaced)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
