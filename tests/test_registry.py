"""The service registry: one instance per name and configuration, clear errors for unknown names."""

from __future__ import annotations

import threading

import pytest

import smls
from smls import ml_services


class Counter:
    """A tiny service that remembers its configuration."""

    built = 0

    def __init__(self, **config):
        Counter.built += 1
        self.config = config


@pytest.fixture()
def counter():
    Counter.built = 0
    ml_services.register("Counter", Counter)
    yield Counter
    ml_services.unregister("Counter")


def test_same_config_same_object(counter):
    a = ml_services.get("Counter", size=3, tags=["x", "y"])
    b = ml_services.get("Counter", tags=["x", "y"], size=3)
    assert a is b
    assert counter.built == 1


def test_different_config_different_object(counter):
    a = ml_services.get("Counter", size=3)
    b = ml_services.get("Counter", size=4)
    c = ml_services.get("Counter")
    assert len({id(a), id(b), id(c)}) == 3
    assert (a.config, b.config, c.config) == ({"size": 3}, {"size": 4}, {})


def test_concurrent_gets_build_once(counter):
    results = []
    threads = [threading.Thread(target=lambda: results.append(ml_services.get("Counter", n=1))) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.built == 1
    assert all(r is results[0] for r in results)


def test_unknown_name_lists_known_names(counter):
    with pytest.raises(KeyError) as info:
        ml_services.get("SentenceEncodr")
    message = str(info.value)
    assert "'SentenceEncodr'" in message
    assert "Counter" in message and "SentenceEncoder" in message


def test_unregister_forgets_instances(counter):
    first = ml_services.get("Counter")
    ml_services.unregister("Counter")
    assert "Counter" not in ml_services.names()
    ml_services.register("Counter", Counter)
    assert ml_services.get("Counter") is not first


def test_unhashable_config_is_a_type_error(counter):
    with pytest.raises(TypeError):
        ml_services.get("Counter", thing=object.__new__(type("Unhashable", (), {"__hash__": None})))


def test_sentence_encoder_default_and_spelled_out_config_share_an_instance(encoder):
    assert smls.ml_services.get("SentenceEncoder") is encoder
    same = smls.ml_services.get("SentenceEncoder", model=encoder.info()["path"], device="cpu", batch_size=8, backend="onnx")
    assert same is encoder


def test_sentence_encoder_other_config_is_another_instance(encoder):
    other = smls.ml_services.get("SentenceEncoder", batch_size=7)
    assert other is not encoder
    assert other.batch_size == 7
    assert other.run(["hi"]).shape == (1, 384)


def test_sentence_encoder_rejects_unknown_config():
    with pytest.raises(TypeError, match="does not take colour"):
        smls.ml_services.get("SentenceEncoder", colour="blue")
