"""smls.memory: freed heap goes back to the system once a worker is quiet."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from smls import memory


def test_trim_runs_on_glibc():
    # (This Debian-based stack has glibc: trimming must be available, not silently off.)
    assert memory._libc is not None
    assert memory.trim() in (True, False)


def test_the_trimmer_trims_once_after_a_quiet_spell_and_not_while_busy(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "trim", lambda: calls.append(time.monotonic()) or True)
    trimmer = memory.Trimmer(quiet=0.2)
    trimmer.start()
    time.sleep(0.5)
    assert calls == []  # nothing served yet: nothing to give back
    busy_until = time.monotonic() + 0.6
    while time.monotonic() < busy_until:  # requests keep coming: no trimming in between
        trimmer.touch()
        time.sleep(0.02)
    assert calls == []
    time.sleep(0.7)
    # Once, when the quiet spell ends: not before, and not a whole polling period later.
    assert len(calls) == 1 and busy_until + 0.2 - 0.05 <= calls[0] <= busy_until + 0.2 + 0.15
    time.sleep(0.5)
    assert len(calls) == 1  # quiet since: once is enough




# Run in a fresh interpreter: the cap must be set before threads start, and this test
# process has threads of its own already. Each thread allocates while the others hold the
# arena lock often enough that glibc hands out new arenas; malloc_info lists them.
_ARENAS = r"""
import ctypes, os, sys, tempfile, threading
from smls import memory
if sys.argv[1] == "capped":
    assert memory.limit_arenas(1)
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
def churn():
    for _ in range(20000):
        blocks = [bytearray(1000 + i) for i in range(20)]
        del blocks
threads = [threading.Thread(target=churn) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
path = tempfile.mktemp()
f = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, f)
libc.fclose(f)
print(open(path).read().count("<heap nr="))
os.unlink(path)
"""


def _arenas(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", _ARENAS, mode], capture_output=True, text=True, env=env, timeout=120, check=True)
    return int(out.stdout)


def test_limit_arenas_keeps_every_thread_on_one_arena():
    assert _arenas("free") > 1  # the test can tell: uncapped, threads get arenas of their own
    assert _arenas("capped") == 1


def test_limit_arenas_leaves_glibcs_own_setting_and_zero_alone(monkeypatch):
    assert not memory.limit_arenas(0)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not memory.limit_arenas(1)


# In a fresh interpreter, as the gunicorn master: a heap left with many freed chunks (as
# loading a model leaves it) behind one live block at its top, which glibc's own trimming
# of the heap's top cannot pass.
_BEFORE_FORK = r"""
import gc, sys
from smls import memory
def anon_kb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
blocks = [bytearray(3000) for _ in range(20000)]  # 60 MB of heap chunks (over pymalloc's 512 bytes)
keep = bytearray(3000)
del blocks
before = anon_kb()
if sys.argv[1] == "before_fork":
    memory.before_fork()
print(before - anon_kb(), gc.get_freeze_count())
"""


def _before_fork(mode: str) -> tuple[int, int]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", _BEFORE_FORK, mode], capture_output=True, text=True, env=env, timeout=120, check=True)
    freed_kb, frozen = map(int, out.stdout.split())
    return freed_kb, frozen


def test_before_fork_gives_the_masters_free_heap_back_and_freezes_its_objects():
    freed_kb, frozen = _before_fork("nothing")
    assert freed_kb < 10_000 and frozen == 0  # the test can tell: glibc keeps the freed chunks
    freed_kb, frozen = _before_fork("before_fork")
    assert freed_kb > 40_000  # most of the 60 MB
    assert frozen > 1000  # the interpreter's objects, never scanned (so never copied) by a worker's collector
