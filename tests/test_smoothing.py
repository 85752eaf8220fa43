"""SmoothQuant before int8 (smls.encoders.smoothing) on the real embedded model's ONNX export."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import smls
from smls.encoders.export import sentence_feeds
from smls.encoders.smoothing import Smoothed, activation_peaks, smooth, weight_matmuls
from smls.outputs import calibration_texts
from tests.helpers import ROOT

DEMO = [s["text"] for s in json.loads((ROOT / "data" / "texts_demo.json").read_text())]
# Not the calibration text (which is the demo's): sentences of other kinds, short ones included.
OTHERS = [
    "Oh dear!", "ok", "Return the number of items in a container.", "The cat sat on the mat while it rained outside.",
    "Raises ValueError if the string is not a valid identifier.", "x" * 40, "SELECT * FROM users WHERE id = 42;",
    "Le chat est sur la table.", "A long sentence " * 20,
]


@pytest.fixture(scope="module")
def fp32(tmp_path_factory, encoder):
    """The embedded model's fp32 ONNX export (into a private cache) and the model's folder."""
    enc = smls.build_encoder(model=str(encoder.path), backend="onnx", cache_dir=str(tmp_path_factory.mktemp("onnx")), threads=1)
    return onnx.load(str(enc.onnx_path)), enc.path


def feeds(fp32, texts):
    model, folder = fp32
    return sentence_feeds(folder, [i.name for i in model.graph.input], texts)


def sentence_vectors(model: onnx.ModelProto | str, feeds) -> np.ndarray:
    """Mean-pooled unit vectors, one feed (one unpadded sentence) at a time."""
    source = model if isinstance(model, str) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    rows = np.stack([session.run(None, feed)[0][0].mean(axis=0) for feed in feeds])
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def smoothed_copy(fp32, texts) -> tuple[onnx.ModelProto, Smoothed]:
    model = onnx.ModelProto()
    model.CopyFrom(fp32[0])
    return model, smooth(model, feeds(fp32, texts))


def test_smoothing_keeps_the_model_s_fp32_outputs(fp32):
    model, done = smoothed_copy(fp32, calibration_texts())
    # Six layers: the queries/keys/values' input and the feed-forward's two inputs by a Mul
    # each, the attention output's folded into the value projection.
    assert (done.multiplied, done.folded) == (18, 6)
    onnx.checker.check_model(model)
    before, after = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (fp32[0], model))
    for feed in feeds(fp32, OTHERS):
        a, b = before.run(None, feed)[0], after.run(None, feed)[0]
        assert np.abs(a - b).max() <= 1e-3 * np.abs(a).max()


def test_smoothing_evens_out_each_matmul_s_input_channels(fp32):
    calibration = feeds(fp32, calibration_texts()[:40])
    spread_before = [p.max() / np.median(p) for p in activation_peaks(fp32[0], list(weight_matmuls(fp32[0].graph)), calibration).values()]
    model, _ = smoothed_copy(fp32, calibration_texts()[:40])
    # The same 24 MatMuls, now reading a Mul's output or the rescaled attention output.
    spread_after = [p.max() / np.median(p) for p in activation_peaks(model, list(weight_matmuls(model.graph)), calibration).values()]
    assert len(spread_before) == len(spread_after) == 24
    # Measured on the whole calibration text: the largest channel peak over the median one
    # went from 1.8-15.8 (median 5) to 1.2-7.5 (median 2).
    assert max(spread_after) < 0.75 * max(spread_before)
    assert np.median(spread_after) < 0.75 * np.median(spread_before)


def test_int8_with_smoothing_is_closer_to_fp32_than_without(fp32, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    onnx.save(fp32[0], str(tmp_path / "fp32.onnx"))
    onnx.save(smoothed_copy(fp32, calibration_texts())[0], str(tmp_path / "smoothed.onnx"))
    logging.getLogger().disabled = True  # the quantiser logs advice to the root logger
    try:
        for name in ("fp32", "smoothed"):
            quantize_dynamic(str(tmp_path / f"{name}.onnx"), str(tmp_path / f"{name}-int8.onnx"), weight_type=QuantType.QInt8,
                             per_channel=True, reduce_range=True)
    finally:
        logging.getLogger().disabled = False
    texts = feeds(fp32, DEMO + OTHERS)
    reference = sentence_vectors(fp32[0], texts)
    plain = (sentence_vectors(str(tmp_path / "fp32-int8.onnx"), texts) * reference).sum(axis=1)
    smoothed = (sentence_vectors(str(tmp_path / "smoothed-int8.onnx"), texts) * reference).sum(axis=1)
    assert smoothed.mean() > plain.mean() and smoothed.min() > plain.min()
    assert smoothed.min() >= 0.97
