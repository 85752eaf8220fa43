"""Work held until an answer is sent (smls.afterwards): at once elsewhere, in order, and never lost."""

from __future__ import annotations

import logging
import threading

import pytest

from smls import afterwards


def test_outside_a_held_block_work_is_done_at_once():
    done: list[int] = []
    afterwards.later(done.append, 1)
    assert done == [1]
    afterwards.done_sending()  # nothing held: nothing to do
    assert done == [1]


def test_held_work_waits_for_the_send_and_keeps_its_order():
    done: list[str] = []
    with afterwards.held():
        afterwards.later(done.append, "counted")
        afterwards.later(done.append, "logged")
        assert done == []  # the answer is not sent yet
        afterwards.done_sending()
        assert done == ["counted", "logged"]
        afterwards.later(done.append, "next answer")
        afterwards.done_sending()
        afterwards.later(done.append, "never sent")  # a request that ends without an answer: done when the block ends
        assert done == ["counted", "logged", "next answer"]
    assert done == ["counted", "logged", "next answer", "never sent"]
    afterwards.later(done.append, "after")
    assert done[-1] == "after"  # nothing held once the block is over


def test_a_failing_piece_is_logged_and_the_rest_still_done(caplog):
    done: list[int] = []

    def broken() -> None:
        raise RuntimeError("a counter broke")

    with afterwards.held():
        afterwards.later(broken)
        afterwards.later(done.append, 2)
        afterwards.done_sending()
    assert done == [2] and "a counter broke" in caplog.text and caplog.records[-1].levelno == logging.ERROR


def test_an_error_in_the_block_still_does_the_held_work_and_stops_holding():
    done: list[int] = []
    with pytest.raises(ValueError), afterwards.held():
        afterwards.later(done.append, 1)
        raise ValueError("the turn failed")
    assert done == [1]
    afterwards.later(done.append, 2)
    assert done == [1, 2]


def test_only_the_holding_thread_holds():
    done: list[str] = []
    with afterwards.held():
        thread = threading.Thread(target=afterwards.later, args=(done.append, "another thread"))
        thread.start()
        thread.join()
        assert done == ["another thread"]  # a request thread's counters are not the loop's to hold
