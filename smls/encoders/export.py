"""Export a sentence-transformers model's transformer to ONNX (and int8), once, into a cache folder.

Only Transformer + Pooling (+ Normalize) pipelines are exported; pooling and
normalisation then run in numpy exactly as sentence-transformers does them. The
export needs torch; loading an exported file later does not.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import subprocess
import sys
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smls.errors import StartupError
from smls.vectors import unit_rows

log = logging.getLogger("smls")

_SUPPORTED = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class ModelSpec:
    """What the numpy side needs: output size, sequence limit, pooling, normalisation."""

    dimension: int
    max_seq_length: int
    pooling: str  # "mean", "cls" or "max"
    normalize: bool

    def pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Token embeddings (batch, seq, dim) to sentence embeddings (batch, dim), as sentence-transformers does."""
        m = mask[..., None].astype(np.float32)
        if self.pooling == "cls":
            out = hidden[:, 0]
        elif self.pooling == "max":
            out = np.where(m > 0, hidden, -1e9).max(axis=1)
        else:
            out = (hidden * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)
        out = out.astype(np.float32, copy=False)
        return unit_rows(out) if self.normalize else out


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def read_spec(path: Path) -> ModelSpec:
    """Read modules.json, the pooling config and the sequence limit; refuse pipelines we cannot export."""
    modules = _json(path / "modules.json") or [
        {"type": "sentence_transformers.models.Transformer", "path": ""},
        {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"},
    ]
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    unsupported = [k for k in kinds if k not in _SUPPORTED]
    if unsupported or "Transformer" not in kinds:
        raise StartupError(
            f"the onnx backends support Transformer + Pooling (+ Normalize) models; {str(path)!r} has "
            f"{', '.join(kinds)}: use SMLS_BACKEND=torch"
        )
    pooling_dir = next((m["path"] for m in modules if m["type"].endswith("Pooling")), "1_Pooling")
    pooling = _json(path / pooling_dir / "config.json") or {"pooling_mode_mean_tokens": True}
    mode = pooling.get("pooling_mode") or (
        "cls" if pooling.get("pooling_mode_cls_token") else "max" if pooling.get("pooling_mode_max_tokens") else
        "mean" if pooling.get("pooling_mode_mean_tokens", True) else "other"
    )
    if mode not in ("mean", "cls", "max"):
        raise StartupError(f"the onnx backends support mean, cls and max pooling; {str(path)!r} uses {mode}: use SMLS_BACKEND=torch")
    config = _json(path / "config.json") or {}
    dimension = int(pooling.get("word_embedding_dimension") or pooling.get("embedding_dimension") or config.get("hidden_size") or 0)
    st_config = _json(path / "sentence_bert_config.json") or {}
    # sentence-transformers 6 keeps the limit in the tokenizer's config instead of sentence_bert_config.json.
    tokenizer_limit = (_json(path / "tokenizer_config.json") or {}).get("model_max_length")
    if not isinstance(tokenizer_limit, int) or tokenizer_limit > 100_000:  # transformers writes a huge number for "none"
        tokenizer_limit = None
    max_len = int(st_config.get("max_seq_length") or tokenizer_limit or min(config.get("max_position_embeddings", 512), 512))
    if not dimension:
        raise StartupError(f"cannot tell the embedding size of {str(path)!r}: use SMLS_BACKEND=torch")
    return ModelSpec(dimension, max_len, mode, "Normalize" in kinds)


def load_tokenizer(path: Path, max_len: int) -> tuple[Any, int]:
    """The model's fast tokenizer, truncating at max_len and not padding, and its pad token id."""
    from tokenizers import Tokenizer

    file = path / "tokenizer.json"
    if not file.is_file():
        raise StartupError(f"the onnx backends need a fast tokenizer (tokenizer.json) in {str(path)!r}: use SMLS_BACKEND=torch")
    tokenizer = Tokenizer.from_file(str(file))
    tokenizer.enable_truncation(max_length=max_len)
    config = _json(path / "tokenizer_config.json") or {}
    pad = config.get("pad_token") or "[PAD]"
    pad = pad.get("content") if isinstance(pad, dict) else pad
    pad_id = tokenizer.token_to_id(str(pad))
    # Padding happens when a batch is assembled: texts are tokenised one request at a time,
    # in the request's own thread, and batched with other requests' later.
    tokenizer.no_padding()
    return tokenizer, pad_id if pad_id is not None else 0


def model_feeds(encodings: Sequence[Any], pad_id: int, model_inputs: Collection[str]) -> dict[str, np.ndarray]:
    """The ONNX model's inputs for one pass over tokenised texts, padded to the longest (attention_mask marks real tokens)."""
    width = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), width), pad_id, dtype=np.int64)
    types = np.zeros((len(encodings), width), dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    for row, e in enumerate(encodings):
        n = len(e.ids)
        ids[row, :n], types[row, :n], mask[row, :n] = e.ids, e.type_ids, 1
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in model_inputs:
        feeds["token_type_ids"] = types
    return feeds


def quantization_config() -> str:
    """The int8 flavour that suits this CPU: avx512_vnni, avx2 (7-bit weights, no VNNI) or arm64."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


def ensure_exported(path: Path, fingerprint: str, cache_dir: Path, backend: str) -> Path:
    """Path of the file `backend` runs for this model, exporting (and quantising) it first if needed.

    onnx and openvino run the fp32 ONNX file; onnx-int8 ONNX Runtime's dynamic int8 of it;
    openvino-int8 NNCF's static int8 of it, in OpenVINO's own format (an .xml beside its .bin).
    """
    folder = cache_dir / "onnx" / fingerprint
    fp32 = folder / "model.onnx"
    # The recipe is in the name, so a file quantised another way is never reused: "smooth",
    # SmoothQuant first (smls.encoders.smoothing); "ffn0fp32", the first feed-forward output
    # projection left in fp32 and only MatMuls quantised (_quantize).
    targets = {
        "onnx-int8": folder / f"model_int8_smooth_ffn0fp32_{quantization_config()}.onnx",
        "openvino-int8": folder / "openvino_int8_ffn0.xml",
    }
    target = targets.get(backend, fp32)
    if target.is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / ".lock", "w")
    except OSError as exc:  # a read-only export folder (an image's) that lacks this model or backend
        raise StartupError(
            f"no {backend} export of the model at {str(path)!r} in {str(cache_dir)!r}, and it cannot be made there "
            f"({exc.strerror}): run `python -m smls prepare --backend {backend}` where it can be written"
        ) from None
    with lock:  # one exporter at a time across processes
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not fp32.is_file():
            log.info("exporting %s to ONNX in %s (once)", path, folder)
            _in_a_child("fp32", path, fp32)
        if not target.is_file():
            log.info("quantising %s for %s in %s (once)", path, backend, folder)
            _in_a_child(backend, path, fp32, target)
    return target


def _in_a_child(step: str, path: Path, *files: Path) -> None:
    """Run an export step in a fresh Python process, so that this one never runs a torch operation or a model.

    The gunicorn master loads the models and then forks the workers. Torch's OpenMP
    thread pool does not survive a fork: once the export's parallel ops have started it
    in the master, a worker's first torch operation (a torch-backend model or a
    cross-encoder served beside an ONNX one) waits forever for threads that are not there.
    The int8 step runs the fp32 model on the calibration text: inference, which the
    master does not do either.
    """
    target = files[-1]
    done = subprocess.run([sys.executable, "-m", "smls.encoders.export", step, str(path), *map(str, files)], capture_output=True, text=True)
    if done.returncode != 0 or not target.is_file():
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        # The same words as a load that fails in this process (smls.serving.loading.build_encoder).
        raise StartupError(f"could not load the model at {str(path)!r}: {lines[-1] if lines else f'its ONNX export exited with {done.returncode}'}")


def _export_fp32(path: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    example = tokenizer(["an example sentence", "and a second, longer example sentence"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in example]

    class LastHidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, inputs, strict=False))).last_hidden_state

    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow in transformers' masks
        torch.onnx.export(
            LastHidden(model), tuple(example[n] for n in names), str(tmp), input_names=names,
            output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False,
        )
    os.replace(tmp, target)  # atomic: a reader never sees half a file


def sentence_feeds(path: Path, model_inputs: Collection[str], texts: Sequence[str]) -> list[dict[str, np.ndarray]]:
    """The ONNX model's inputs for each text, one text per feed (so no padding)."""
    tokenizer, pad_id = load_tokenizer(path, read_spec(path).max_seq_length)
    return [model_feeds([encoding], pad_id, model_inputs) for encoding in tokenizer.encode_batch(list(texts))]


def first_down_projection(model: Any) -> list[str]:
    """The first weight MatMul that narrows its input (a feed-forward output projection, K > N), by name; [] if none.

    Found by shape, not by name, so it holds for any exported transformer: attention
    projections are square, the feed-forward's first matrix widens, its second narrows.
    """
    weights = {init.name: tuple(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2:
            shape = weights.get(node.input[1])
            if shape is not None and len(shape) == 2 and shape[0] > shape[1]:
                return [node.name]
    return []


def _quantize(path: Path, source: Path, target: Path) -> None:
    """SmoothQuant the fp32 file with the model's calibration feeds, then quantise it to int8 (dynamic) into target."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from smls.encoders.smoothing import smooth
    from smls.outputs import calibration_texts

    model = onnx.load(str(source))
    keep = first_down_projection(model)
    smooth(model, sentence_feeds(path, [i.name for i in model.graph.input], calibration_texts()), keep=keep)
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    smoothed = target.with_suffix(f".smoothed{os.getpid()}")
    onnx.save(model, str(smoothed))
    logging.getLogger().disabled = True  # it logs advice to the root logger
    # Per-channel int8 weights: per-tensor ones lost far more (mean cosine 0.954 to fp32
    # without smoothing, against 0.991 per channel). Without VNNI, 7-bit weights
    # (reduce_range) avoid saturating the u8 x s8 products. The first feed-forward output
    # projection stays fp32: its input (after GELU) has this model's widest outlier
    # channels, and keeping it lifted the minimum cosine on text nothing was tuned on from
    # 0.990 to 0.995 for about 5% of int8's speed (docs/benchmarks.org).
    try:
        quantize_dynamic(str(smoothed), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=quantization_config() in ("avx2", "avx512"), op_types_to_quantize=["MatMul"],
                         nodes_to_exclude=keep)
    finally:
        smoothed.unlink()
    os.replace(tmp, target)


def _quantize_openvino(path: Path, source: Path, target: Path) -> None:
    """NNCF's static int8 of the fp32 file, its activation ranges calibrated once on the calibration text, into target (.xml and .bin).

    Static scales are fixed at export, so a text's vector never depends on its batch mates.
    The same first feed-forward output projection as _quantize's stays in fp32.
    """
    import nncf
    import onnx
    import openvino as ov

    from smls.outputs import calibration_texts

    model = ov.Core().read_model(str(source))
    feeds = sentence_feeds(path, {i.get_any_name() for i in model.inputs}, calibration_texts())
    quantized = nncf.quantize(
        model, nncf.Dataset(feeds), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds),
        ignored_scope=nncf.IgnoredScope(names=first_down_projection(onnx.load(str(source))), validate=False),
    )
    tmp = target.with_name(f"{target.stem}.tmp{os.getpid()}.xml")
    ov.save_model(quantized, str(tmp), compress_to_fp16=False)
    os.replace(tmp.with_suffix(".bin"), target.with_suffix(".bin"))
    os.replace(tmp, target)  # the .xml last: a reader that finds it finds its weights


if __name__ == "__main__":  # python -m smls.encoders.export fp32|onnx-int8|openvino-int8 MODEL_FOLDER FILE... (see _in_a_child)
    # (smls/__init__.py, imported first as this module's package, has set the offline settings.)
    step, folder, *files = sys.argv[1:]
    if step == "fp32":
        _export_fp32(Path(folder), Path(files[0]))
    elif step == "openvino-int8":
        _quantize_openvino(Path(folder), Path(files[0]), Path(files[1]))
    else:
        _quantize(Path(folder), Path(files[0]), Path(files[1]))
