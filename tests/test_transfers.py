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
    lease = slots.take()
    threading.Timer(0.1, lease.give_back).start()
    start = time.monotonic()
    slots.take()
    assert time.monotonic() - start < 2


def test_a_lease_is_given_back_once_however_often_it_is_called():
    slots = TransferSlots(3, wait=0)  # two slots
    lease = slots.take()
    for _ in range(3):
        lease.give_back()  # a BoundedSemaphore would raise on a release too many
    slots.take()
    slots.take()
    with pytest.raises(Overloaded):
        slots.take()


def test_a_streamed_body_gives_its_slot_back_after_its_last_part_or_when_closed():
    slots = TransferSlots(2, wait=0)  # one slot
    body = slots.take().until_sent(iter([b"a", b"b"]))
    with pytest.raises(Overloaded):
        slots.take()
    assert b"".join(body) == b"ab"
    cut = slots.take().until_sent(iter([b"a", b"b"]))
    next(cut)
    with pytest.raises(Overloaded):
        slots.take()
    cut.close()  # the client went away after the first part
    slots.take()


def test_one_thread_still_allows_one_transfer():
    slots = TransferSlots(1, wait=0)
    lease = slots.take()
    with pytest.raises(Overloaded):
        slots.take()
    lease.give_back()
    slots.take()
