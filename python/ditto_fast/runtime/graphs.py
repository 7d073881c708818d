"""CUDA graphs for fixed-shape device work: capture once per input signature, replay after.

A graph replays the kernels it recorded on the memory it recorded them on, so each captured
signature (shapes, dtypes, device of the inputs) owns static input buffers that a call copies its
inputs into, and static outputs that a replay overwrites. Capture is preceded by warm-up runs on a
side stream (lazy initialisation and cuDNN's algorithm choice must not happen inside a capture).

Graphs live as long as their `GraphedFunction` keeps them: `release()` (or leaving its `with`
block, or switching `enabled` off) frees them and their memory pools; the next call captures again.
Off CUDA there is nothing to capture and calls run eagerly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

Outputs = torch.Tensor | tuple[torch.Tensor, ...]
Signature = tuple[tuple[tuple[int, ...], torch.dtype, torch.device], ...]


class CaptureBackend(Protocol):
    def capture(self, fn: Callable[..., Outputs],
                static_inputs: tuple[torch.Tensor, ...]) -> tuple[Callable[[], None], Outputs]:
        """Record `fn(*static_inputs)`; return (replay, static outputs). A replay re-runs the
        recorded work on what the static inputs hold then and writes the static outputs."""


class CudaGraphCapture:
    """Capture with `torch.cuda.CUDAGraph` after `warmup` eager runs on a side stream."""

    def __init__(self, warmup: int = 2) -> None:
        if warmup < 1:
            raise ValueError(f"CudaGraphCapture: warmup must be at least 1 (lazy CUDA setup cannot be captured), "
                             f"got {warmup}")
        self.warmup = warmup

    def capture(self, fn: Callable[..., Outputs],
                static_inputs: tuple[torch.Tensor, ...]) -> tuple[Callable[[], None], Outputs]:
        device = static_inputs[0].device
        with torch.cuda.device(device):
            current = torch.cuda.current_stream()
            side = torch.cuda.Stream()
            side.wait_stream(current)
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    fn(*static_inputs)
            current.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: other threads may use CUDA while this one captures.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                outputs = fn(*static_inputs)
        return graph.replay, outputs  # the bound method keeps the graph (and its pool) alive


def default_capture(device: torch.device | str, warmup: int = 2) -> CaptureBackend | None:
    """CUDA-graph capture on CUDA devices; None (eager calls) elsewhere."""
    return CudaGraphCapture(warmup) if torch.device(device).type == "cuda" else None


@dataclass(frozen=True)
class _CapturedGraph:
    static_inputs: tuple[torch.Tensor, ...]
    replay: Callable[[], None]
    outputs: Outputs


def signature(inputs: tuple[torch.Tensor, ...]) -> Signature:
    """What a captured graph is specific to: each input's shape, dtype and device."""
    for position, tensor in enumerate(inputs):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"GraphedFunction: input {position} is a {type(tensor).__name__}; graphs take tensors only")
    return tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)


class GraphedFunction:
    """`fn(*tensors)` replayed from one CUDA graph per input signature.

    `fn` must depend on its tensor inputs only (anything else is frozen at capture) and must not
    synchronise with the host. A replayed call returns the graph's static outputs, overwritten by
    the next call of the same signature: consume them on the same stream, or copy them. With
    `enabled` off, or without a capture backend (devices other than CUDA), calls run `fn` eagerly.
    """

    def __init__(self, fn: Callable[..., Outputs], capture: CaptureBackend | None, enabled: bool = True) -> None:
        self.fn = fn
        self.capture = capture
        self._enabled = enabled
        self._graphs: dict[Signature, _CapturedGraph] = {}

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        """Switching graphs off releases the captured ones; switching on captures again as needed."""
        self._enabled = value
        if not value:
            self.release()

    @property
    def graphed(self) -> bool:
        """Whether calls go through graphs (enabled, with a capture backend)."""
        return self._enabled and self.capture is not None

    @property
    def captured(self) -> tuple[Signature, ...]:
        return tuple(self._graphs)

    def __call__(self, *inputs: torch.Tensor) -> Outputs:
        if not self.graphed:
            return self.fn(*inputs)
        key = signature(inputs)
        graph = self._graphs.get(key)
        if graph is None:
            static_inputs = tuple(t.detach().clone() for t in inputs)
            replay, outputs = self.capture.capture(self.fn, static_inputs)
            graph = self._graphs[key] = _CapturedGraph(static_inputs, replay, outputs)
        for static, tensor in zip(graph.static_inputs, inputs):
            static.copy_(tensor)
        graph.replay()
        return graph.outputs

    def release(self) -> None:
        """Free every captured graph (their memory pools go once nothing else holds them)."""
        self._graphs.clear()

    def __enter__(self) -> GraphedFunction:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
