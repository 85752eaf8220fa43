"""TransferSlots: at most SMLS_THREADS - 1 document transfers per worker, a short wait past that, then 503."""

from __future__ import annotations

import threading
import time

import pytest

from smls.errors import Overloaded
from smls.web.state import TransferSlots


def test_all_threads_but_one_may_transfer_then_a_short_wait_then_overloaded():
    slots = TransferSlots(4, wait=0.2)
    for _ in range(3):
        slots.take()
    start = time.monotonic()
    with pytest.raises(Overloaded, match="already sending or receiving 3 documents"):
        slots.take()
    assert 0.15 < time.monotonic() - start < 2


def test_a_slot_given_back_during_the_wait_is_taken():
    slots = TransferSlots(2, wait=5)
    slots.take()
    threading.Timer(0.1, slots.give_back).start()
    start = time.monotonic()
    slots.take()
    assert time.monotonic() - start < 2


def test_one_thread_still_allows_one_transfer():
    slots = TransferSlots(1, wait=0)
    slots.take()
    with pytest.raises(Overloaded):
        slots.take()
    slots.give_back()
    slots.take()
