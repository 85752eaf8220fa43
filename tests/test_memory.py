"""smls.memory: freed heap goes back to the system once a worker is quiet."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

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
    assert len(calls) == 1 and calls[0] >= busy_until + 0.2 - 0.05
    time.sleep(0.5)
    assert len(calls) == 1  # quiet since: once is enough



HOLES = """
import sys
from smls import memory
if sys.argv[1] == "mapped":
    memory.map_big_blocks(1 << 20)

def rss_kib():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))

first = bytearray(4 << 20)
del first  # glibc (by default) now serves blocks of this size from its heap
blocks = [bytearray(b"x" * (4 << 20)) for _ in range(16)]  # 64 MiB, every page touched
held = rss_kib()
del blocks[::2]  # every other block: holes in a heap, which no trim at its top can give back
print(held - rss_kib())
"""


def test_big_blocks_are_mapped_and_given_back_when_freed():
    if memory._libc is None:
        pytest.skip("not glibc")
    freed = {mode: int(subprocess.run([sys.executable, "-c", HOLES, mode], capture_output=True, text=True, check=True).stdout) for mode in ("default", "mapped")}
    assert freed["mapped"] > 28_000, freed  # the 8 freed blocks (32 MiB) went back at once
    assert freed["default"] < 8_000, freed  # without it they stay (this is what the setting is for)
