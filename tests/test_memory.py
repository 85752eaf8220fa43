"""smls.memory: freed heap goes back to the system once a worker is quiet."""

from __future__ import annotations

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


