"""SmoothQuant before ONNX Runtime's dynamic int8: even out each weight MatMul's input channels.

Dynamic quantisation gives a MatMul's whole input one int8 scale per pass. A transformer's
activations carry a few channels far larger than the rest, so those few set the scale and
the others keep a handful of levels: that, not the weights, is most of int8's error here.
Dividing input channel j by s_j and multiplying row j of the weight by s_j computes the same
product in fp32 and moves part of the spread into the weights, which are quantised per
channel and take it better (Xiao et al., "SmoothQuant", ICML 2023). s_j = a_j^alpha /
w_j^(1 - alpha), with a_j the channel's largest |activation| over a calibration text and
w_j the largest |weight| in row j.

The division is folded into the value projection where the input is an attention's output
(exact: the attention mixes tokens, never channels) and is a Mul node elsewhere (a LayerNorm's
output also feeds the residual sum, so it cannot be folded there).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

Feed = dict[str, np.ndarray]

# Chosen on the calibration text (the demo corpus) among 0.5 to 1.0; bench/int8.py prints
# the table, with the standard library's docstrings as the corpus nothing was tuned on.
ALPHA = 0.7

_PASS_THROUGH = ("Reshape", "Transpose")  # move channels between axes, never mix them


@dataclass(frozen=True)
class Smoothed:
    """What smooth() changed: inputs rescaled by a Mul node and inputs folded into a value projection."""

    multiplied: int
    folded: int


class _Graph:
    """Look-ups over one ONNX graph: weights by name, each tensor's producer and consumers."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.weights = {i.name: i for i in graph.initializer}
        self.producer = {out: n for n in graph.node for out in n.output}
        self.uses: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for name in n.input:
                self.uses.setdefault(name, []).append(n)

    def weight(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.weights[name])

    def set_weight(self, name: str, value: np.ndarray) -> None:
        self.weights[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    def only_use(self, tensor: str) -> onnx.NodeProto | None:
        """The one node that reads `tensor` for its values (Shape nodes read only its shape), or None."""
        readers = [n for n in self.uses.get(tensor, []) if n.op_type != "Shape"]
        return readers[0] if len(readers) == 1 else None

    def behind_pass_through(self, tensor: str) -> onnx.NodeProto | None:
        """The node that computed `tensor`'s values behind Reshapes and Transposes that nothing else reads."""
        node = self.producer.get(tensor)
        while node is not None and node.op_type in _PASS_THROUGH:
            upstream = node.input[0]
            if self.only_use(upstream) is not node:
                return None
            node = self.producer.get(upstream)
        return node

    def value_projection(self, tensor: str, matmuls: Sequence[onnx.NodeProto]) -> tuple[str, str] | None:
        """(weight, bias) names of the value projection whose channels `tensor` carries, if `matmuls` alone read it; else None.

        The pattern: tensor <- Reshape/Transpose <- MatMul(probabilities, V) with V <-
        Reshape/Transpose <- Add(MatMul(x, W), bias), every step read by the next only, and
        W's columns and the bias as many as the channels `matmuls` take.
        """
        if any(all(n is not m for m in matmuls) for n in self.uses[tensor] if n.op_type != "Shape"):
            return None
        attention = self.behind_pass_through(tensor)
        if attention is None or attention.op_type != "MatMul" or attention.input[1] in self.weights:
            return None
        if self.only_use(attention.input[1]) is not attention:
            return None
        add = self.behind_pass_through(attention.input[1])
        if add is None or add.op_type != "Add":
            return None
        biases = [i for i in add.input if i in self.weights]
        others = [i for i in add.input if i not in self.weights]
        if len(biases) != 1 or len(others) != 1:
            return None
        project = self.producer.get(others[0])
        if project is None or project.op_type != "MatMul" or project.input[1] not in self.weights or self.only_use(others[0]) is not add:
            return None
        width = self.weights[matmuls[0].input[1]].dims[0]
        if list(self.weights[project.input[1]].dims)[1:] != [width] or list(self.weights[biases[0]].dims) != [width]:
            return None
        return project.input[1], biases[0]


def weight_matmuls(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """MatMuls whose right side is a 2-D weight used nowhere else, grouped by their input tensor."""
    g = _Graph(graph)
    groups: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        if n.op_type != "MatMul":
            continue
        w = n.input[1]
        if n.input[0] in g.producer and w in g.weights and len(g.weights[w].dims) == 2 and len(g.uses[w]) == 1:
            groups.setdefault(n.input[0], []).append(n)
    return groups


def activation_peaks(model: onnx.ModelProto, tensors: Sequence[str], feeds: Sequence[Feed]) -> dict[str, np.ndarray]:
    """Each tensor's largest |value| per channel (its last axis) over running `model` on `feeds`."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in tensors:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    peaks: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(tensors, session.run(list(tensors), feed), strict=True):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            peaks[name] = np.maximum(peaks[name], peak) if name in peaks else peak
    return peaks


def smooth(model: onnx.ModelProto, feeds: Sequence[Feed], alpha: float = ALPHA, keep: Collection[str] = ()) -> Smoothed:
    """Rescale `model` in place (same fp32 outputs) so that dynamic int8 loses less; `feeds` are calibration inputs.

    MatMuls named in `keep` stay as they are: they will not be quantised, and a scale in
    front of them would only cost a product over their input.
    """
    groups = {x: kept for x, ms in weight_matmuls(model.graph).items() if (kept := [n for n in ms if n.name not in keep])}
    peaks = activation_peaks(model, list(groups), feeds)
    g = _Graph(model.graph)
    # All scales from the weights as they were: the value projection's weight is also in a
    # group of its own (its input's), and both rescalings of it compose.
    scales = {}
    for x, matmuls in groups.items():
        rows = np.max([np.abs(g.weight(n.input[1])).max(axis=1) for n in matmuls], axis=0)
        s = np.maximum(peaks[x], 1e-5) ** alpha / np.maximum(rows, 1e-5) ** (1 - alpha)
        scales[x] = np.maximum(s, 1e-5).astype(np.float32)
    multiplied = folded = 0
    for x, matmuls in groups.items():
        s = scales[x]
        for n in matmuls:
            g.set_weight(n.input[1], g.weight(n.input[1]) * s[:, None])
        value = g.value_projection(x, matmuls)
        if value is not None:
            weight, bias = value
            g.set_weight(weight, g.weight(weight) / s[None, :])
            g.set_weight(bias, g.weight(bias) / s)
            folded += 1
            continue
        scale_name, scaled = f"{x}/smooth_scale", f"{x}/smoothed"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), scale_name))
        nodes = list(model.graph.node)
        first = min(nodes.index(n) for n in matmuls)  # before its first reader: the graph stays in order
        model.graph.node.insert(first, helper.make_node("Mul", [x, scale_name], [scaled], name=f"{x}/smooth"))
        for n in matmuls:
            n.input[0] = scaled
        multiplied += 1
    return Smoothed(multiplied, folded)
