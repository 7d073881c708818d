"""Small helpers for writing ONNX graphs by hand with `onnx.helper` (no torch, no tracing).

Node and constant names come from one counter per graph, so building the same graph twice gives
byte-identical models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 20  # the first opset whose GridSample takes 5-D input
IR_VERSION = 10  # the lowest IR that opset 20 allows, for the widest runtime support
# The producer name the committed tree was written with (before the module moved under tools/):
# kept, so that the generator still writes that tree byte for byte.
PRODUCER = "ditto_fast.synthetic"

Shape = Sequence[int | str]


def _tensor_type(dtype: np.dtype | type) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


class GraphBuilder:
    """Accumulates the nodes, constants and I/O of one graph."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._nodes: list[onnx.NodeProto] = []
        self._initializers: list[onnx.TensorProto] = []
        self._inputs: list[onnx.ValueInfoProto] = []
        self._outputs: list[onnx.ValueInfoProto] = []
        self._counter = 0

    def _fresh(self, stem: str) -> str:
        self._counter += 1
        return f"{stem}_{self._counter}"

    def input(self, name: str, shape: Shape, dtype: type = np.float32) -> str:
        self._inputs.append(helper.make_tensor_value_info(name, _tensor_type(dtype), list(shape)))
        return name

    def output(self, value: str, name: str, shape: Shape, dtype: type = np.float32) -> None:
        """Expose `value` as graph output `name` (outputs keep the order of these calls)."""
        node = helper.make_node("Identity", [value], [name], name=self._fresh("Identity"))
        self._nodes.append(node)
        self._outputs.append(helper.make_tensor_value_info(name, _tensor_type(dtype), list(shape)))

    def const(self, value: np.ndarray | float | Sequence[float], dtype: type = np.float32) -> str:
        name = self._fresh("const")
        self._initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, *values: int) -> str:
        """An int64 vector constant (shapes, axes, pads)."""
        return self.const(np.array(values, dtype=np.int64), np.int64)

    def op(self, op_type: str, *inputs: str, **attrs: object) -> str:
        """Add a single-output node and return its output name."""
        out = self._fresh(op_type)
        self._nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    # Shorthands for the reshaping ops every model needs.
    def reshape(self, x: str, *shape: int) -> str:
        return self.op("Reshape", x, self.ints(*shape))

    def slice(self, x: str, axis: int, start: int, end: int) -> str:
        return self.op("Slice", x, self.ints(start), self.ints(end), self.ints(axis))

    def concat(self, *xs: str, axis: int) -> str:
        return self.op("Concat", *xs, axis=axis)

    def zero_from(self, x: str) -> str:
        """A scalar 0 computed from `x`, so constant outputs still consume (and check) an input."""
        return self.op("Mul", self.op("ReduceMean", x, keepdims=0), self.const(0.0))

    def build(self, doc: str) -> onnx.ModelProto:
        """Finish the model (opset 20) and validate it with the full ONNX checker."""
        graph = helper.make_graph(self._nodes, self.name, self._inputs, self._outputs,
                                  initializer=self._initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name=PRODUCER, ir_version=IR_VERSION, doc_string=doc)
        onnx.checker.check_model(model, full_check=True)
        return model
