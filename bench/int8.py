"""The table the int8 quantiser settings are chosen from: quality against fp32 on two corpora, and speed side by side.

    .venv/bin/python -m bench.int8              # every variant (a few minutes)
    .venv/bin/python -m bench.int8 current ffn-out-fp32

Each variant is ONNX Runtime's dynamic quantisation of smls's fp32 export with other
settings (SmoothQuant first for the smooth ones, alpha 0.5 to 1.0), or its static
quantisation (activation ranges calibrated on smls/calibration.txt). Quality: mean and min
cosine to fp32, and top-10 neighbour overlap, on the demo corpus (its sentences are the
calibration text; SmoothQuant's alpha was chosen on its columns) and on 2,000 sentences of
the standard library's docstrings (bench/corpora.py), which nothing was tuned on. Speed:
sentences/s with the server's layout (two streams of one thread), batch 1 and 8, three
rounds interleaved with fp32, as ratios to fp32.
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

VARIANTS = {
    # What smls built until 2026-12-07: SmoothQuant (smls.encoders.smoothing, alpha 0.7) then dynamic int8.
    "current": {"reduce_range": True, "smooth": 0.7},
    # What smls builds since (run one text a pass): MatMuls only, the first feed-forward output projection in fp32.
    "smooth-0.7-matmul-ffn0-fp32": {"reduce_range": False, "smooth": 0.7, "op_types_to_quantize": ["MatMul"], "exclude": "ffn-out:0"},
    "plain": {"reduce_range": True},  # the default before SmoothQuant
    "smooth-0.5": {"reduce_range": True, "smooth": 0.5},
    "smooth-0.6": {"reduce_range": True, "smooth": 0.6},
    "smooth-0.8": {"reduce_range": True, "smooth": 0.8},
    "smooth-0.9": {"reduce_range": True, "smooth": 0.9},
    "smooth-1.0": {"reduce_range": True, "smooth": 1.0},
    "smooth-0.7-ffn-out-fp32-layer-0": {"reduce_range": True, "smooth": 0.7, "op_types_to_quantize": ["MatMul"], "exclude": "ffn-out:0"},
    "no-reduce-range": {"reduce_range": False},
    "u8-weights": {"reduce_range": False, "weight_type": "QUInt8"},
    "matmul-only": {"reduce_range": True, "op_types_to_quantize": ["MatMul"]},
    "ffn-out-fp32": {"reduce_range": True, "op_types_to_quantize": ["MatMul"], "exclude": "ffn-out"},
    "ffn-out-fp32-layers-0-4": {"reduce_range": True, "op_types_to_quantize": ["MatMul"], "exclude": "ffn-out:0,1,2,3,4"},
    "ffn-out-fp32-layers-0-2": {"reduce_range": True, "op_types_to_quantize": ["MatMul"], "exclude": "ffn-out:0,1,2"},
    "ffn-out-fp32-layers-0-1": {"reduce_range": True, "op_types_to_quantize": ["MatMul"], "exclude": "ffn-out:0,1"},
    "ffn-out-fp32-layer-0": {"reduce_range": True, "op_types_to_quantize": ["MatMul"], "exclude": "ffn-out:0"},
    "last-layer-fp32": {"reduce_range": True, "op_types_to_quantize": ["MatMul"], "exclude": "layer:5"},
    # Static: activations' ranges calibrated ahead of time on smls/calibration.txt (neither corpus
    # measured here), QDQ format, the MatMuls only; no per-pass range computation.
    "static-minmax": {"reduce_range": True, "op_types_to_quantize": ["MatMul"], "static": "MinMax"},
    "static-percentile": {"reduce_range": True, "op_types_to_quantize": ["MatMul"], "static": "Percentile"},
    "static-percentile-ffn-out-fp32": {"reduce_range": True, "op_types_to_quantize": ["MatMul"], "static": "Percentile", "exclude": "ffn-out"},
}


def quantize(fp32: Path, target: Path, settings: dict, calibration: list[dict[str, np.ndarray]], sentences: list[dict[str, np.ndarray]]) -> None:
    """One variant of int8 quantisation of the fp32 file.

    Dynamic (after SmoothQuant on `sentences`, one calibration sentence per feed, for the
    smooth variants), or static calibrated on `calibration` (the same, padded to one width).
    """
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    from smls.encoders.smoothing import smooth

    if "smooth" in settings:  # rescaled first (same fp32 outputs), with the feeds smls itself uses
        model = onnx.load(str(fp32))
        smooth(model, sentences, settings["smooth"])
        fp32 = target.with_suffix(".smoothed.onnx")
        onnx.save(model, str(fp32))
    matmuls = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "MatMul"]
    exclude: list[str] = []
    rule = settings.get("exclude", "")
    if rule.startswith("ffn-out"):
        layers = rule.partition(":")[2]
        wanted = [f"layer.{n}/" for n in layers.split(",")] if layers else ["layer."]
        exclude = [m for m in matmuls if "/output/dense" in m and "attention" not in m and any(w in m for w in wanted)]
    elif rule.startswith("layer:"):
        exclude = [m for m in matmuls if f"layer.{rule.partition(':')[2]}/" in m]
    logging.getLogger().disabled = True  # it logs advice to the root logger
    if "static" in settings:

        class Feeds(CalibrationDataReader):
            def __init__(self) -> None:
                self.rest = iter(calibration)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.rest, None)

        quantize_static(str(fp32), str(target), Feeds(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, reduce_range=settings["reduce_range"],
                        op_types_to_quantize=settings.get("op_types_to_quantize"), nodes_to_exclude=exclude,
                        calibrate_method=getattr(CalibrationMethod, settings["static"]))
        return
    quantize_dynamic(str(fp32), str(target), weight_type=getattr(QuantType, settings.get("weight_type", "QInt8")), per_channel=True,
                     reduce_range=settings["reduce_range"], op_types_to_quantize=settings.get("op_types_to_quantize"), nodes_to_exclude=exclude)


def quality(vectors: np.ndarray, reference: np.ndarray) -> tuple[float, float, float]:
    """Mean cosine, min cosine and top-10 neighbour overlap against the reference (both unit rows)."""
    cos = (vectors * reference).sum(axis=1)
    ref_nn = np.argsort(-(reference @ reference.T), axis=1)[:, 1:11]
    nn = np.argsort(-(vectors @ vectors.T), axis=1)[:, 1:11]
    return float(cos.mean()), float(cos.min()), float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ref_nn, nn, strict=True)]))


def rate(enc, texts: list[str], batch: int, seconds: float = 3.0) -> float:
    """Sentences/s of two threads, each running passes of `batch` sentences (two streams of one thread, as a server worker)."""
    enc.set_streams(2)
    counts = [0, 0]
    start = time.perf_counter()

    def work(k: int) -> None:
        i = k * 97
        while time.perf_counter() - start < seconds:
            enc.run([texts[(i + j) % len(texts)] for j in range(batch)])
            i, counts[k] = i + batch, counts[k] + batch

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


def main(names: list[str]) -> None:
    import smls
    from bench.corpora import demo, stdlib_sample
    from smls.encoders.export import sentence_feeds
    from smls.outputs import calibration_texts

    base = smls.build_encoder(model=str(smls.ml_services.get("SentenceEncoder").path), backend="onnx", threads=1)
    corpora = {"demo": demo(), "stdlib": stdlib_sample()}
    reference = {k: base.run(v, normalize=True) for k, v in corpora.items()}
    encoders = {"fp32": base}
    rows = {}
    # One sentence per feed, as the model's inputs, all padded to one width (the percentile
    # calibrator stacks every feed's activations into one array).
    encodings = base.prepare((Path(smls.__file__).parent / "calibration.txt").read_text().splitlines())
    width = max(len(e.ids) for e in encodings)
    calibration = []
    for e in encodings:
        n = len(e.ids)
        feed = {"input_ids": np.array([e.ids + [0] * (width - n)], np.int64), "attention_mask": np.array([[1] * n + [0] * (width - n)], np.int64)}
        if "token_type_ids" in base._input_names:
            feed["token_type_ids"] = np.zeros((1, width), np.int64)
        calibration.append(feed)
    sentences = sentence_feeds(base.path, base._input_names, calibration_texts())
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            target = Path(tmp) / f"{name}.onnx"
            quantize(base.onnx_path, target, VARIANTS[name], calibration, sentences)
            enc = smls.build_encoder(model=str(base.path), backend="onnx", threads=1)
            enc.onnx_path, enc._session, enc._shared = target, None, False
            encoders[name] = enc
            rows[name] = {k: quality(enc.run(v, normalize=True), reference[k]) for k, v in corpora.items()}
        speeds: dict[str, dict[int, list[float]]] = {n: {1: [], 8: []} for n in encoders}
        for batch in (1, 8):
            for _ in range(3):
                fp32 = rate(base, corpora["demo"], batch)
                for name, enc in encoders.items():
                    if name != "fp32":
                        speeds[name][batch].append(rate(enc, corpora["demo"], batch) / fp32)
    print("| variant | demo: mean cos | min cos | top-10 | stdlib: mean cos | min cos | top-10 | speed vs fp32, batch 1 | batch 8 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        d, s = rows[name]["demo"], rows[name]["stdlib"]
        sp = speeds[name]
        print(f"| {name} | {d[0]:.4f} | {d[1]:.4f} | {d[2]:.3f} | {s[0]:.4f} | {s[1]:.4f} | {s[2]:.3f} | "
              f"{statistics.median(sp[1]):.2f}x | {statistics.median(sp[8]):.2f}x |")


if __name__ == "__main__":
    main(sys.argv[1:] or list(VARIANTS))
