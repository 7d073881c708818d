"""torch backend: our own module definitions loaded from the official `.pth` files.

The reference constructs every module with its default (official) sizes. ditto_fast also
loads the synthetic-tiny checkpoints, so it recognises a checkpoint's layout by comparing
the file's state-dict shapes with the known layouts, and refuses any other layout with the
first differing key. BatchNorm and spectral norm are folded at load.

Precision follows the reference's runtime rules on CUDA (`ditto_fast.runtime.precision`, the one
policy for every torch path): fp16 autocast where the reference's engines run fp16, fp32 for
the motion extractor, HuBERT and LMDM. On the CPU everything runs in fp32.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ditto_fast.backends.base import MissingBackendError
from ditto_fast.contract import MODELS, TensorInfo, check_model
from ditto_fast.errors import one_line
from ditto_fast.safe_pickle import UnsafePickleError

try:
    import torch
    from torch import nn
except ImportError as exc:
    raise MissingBackendError("the torch backend needs PyTorch: pip install torch") from exc

from ditto_fast.models import NETWORK_CLASSES, TINY_KWARGS  # noqa: E402 - needs torch first
from ditto_fast.models.checkpoint_format import load_state, unwrap_state_dict  # noqa: E402
from ditto_fast.models.lmdm import GuidedLMDM  # noqa: E402
from ditto_fast.models.lmdm_hoisted import ClipCache, HoistedLMDM, ScheduleCache  # noqa: E402
from ditto_fast.runtime.precision import precision_for, prepare_module, run_under  # noqa: E402


@dataclass(frozen=True)
class TorchNetworkKind:
    """How to build one network, find its state dict in a checkpoint, and load it."""

    build: Callable[..., nn.Module]
    # (network name, loaded checkpoint) -> the state dict whose shapes identify the layout
    state_of: Callable[[str, Mapping[str, Any]], Mapping[str, Any]]
    # (network name, module, loaded checkpoint) -> the module, loaded and ready for inference
    load: Callable[[str, nn.Module, Mapping[str, Any]], nn.Module]
    # the module whose state dict the checkpoint holds (a wrapper may hold it inside)
    state_owner: Callable[[nn.Module], nn.Module] = lambda module: module
    layouts: dict[str, dict[str, Any]] = field(default_factory=dict)


def _load_guided_lmdm(name: str, module: nn.Module, checkpoint: Mapping[str, Any]) -> nn.Module:
    load_state(name, module.model, checkpoint)
    return module.eval()


def _kind(name: str) -> TorchNetworkKind:
    layouts = {"official": {}, "synthetic-tiny": TINY_KWARGS[name]}
    if name == "lmdm":  # the checkpoint holds the MotionDecoder inside the guided module
        return TorchNetworkKind(NETWORK_CLASSES[name], unwrap_state_dict, _load_guided_lmdm,
                                state_owner=lambda module: module.model, layouts=layouts)
    return TorchNetworkKind(NETWORK_CLASSES[name], unwrap_state_dict, load_state, layouts=layouts)


KINDS: dict[str, TorchNetworkKind] = {name: _kind(name) for name in NETWORK_CLASSES}


def read_checkpoint(path: Path) -> Mapping[str, Any]:
    """Load a `.pth` with torch's tensors-only unpickler: code in the file is never run."""
    try:
        with warnings.catch_warnings():  # e.g. its protocol notice before refusing a file: the error says it
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafePickleError(
            f"{path}: refusing to load: it holds objects other than tensors and plain data; "
            f"the file may be unsafe ({one_line(exc)})"
        ) from None
    except Exception as exc:  # torch.load fails on corrupt files with many error types
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({one_line(exc)})") from None
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{path}: checkpoint holds a {type(checkpoint).__name__}, expected a dict")
    return checkpoint


def _shapes(state: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def identify_layout(name: str, path: Path, state: Mapping[str, Any]) -> tuple[str, dict]:
    """The known layout whose state-dict shapes equal the checkpoint's, as (label, kwargs)."""
    kind = KINDS[name]
    found = _shapes(state)
    closest = None
    for label, kwargs in kind.layouts.items():
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            expected = _shapes(kind.state_owner(kind.build(**kwargs)).state_dict())
        if expected == found:
            return label, kwargs
        if label == "official":
            closest = expected
    key = next((k for k in closest if closest[k] != found.get(k)), None) or next(
        k for k in found if k not in closest
    )
    raise ValueError(
        f"{path}: {name} checkpoint matches no known layout ({', '.join(kind.layouts)}); first "
        f"difference from the official one: key {key!r} is "
        f"{list(found[key]) if key in found else 'missing'}, expected "
        f"{list(closest[key]) if key in closest else 'nothing'}"
    )


def contract_outputs(name: str, module_kwargs: dict, kind: TorchNetworkKind) -> tuple[TensorInfo, ...]:
    """Output tensors of the module, from a dry run on the meta device with contract inputs."""
    spec = MODELS[name]
    with torch.device("meta"):
        # .to(): buffers made from NumPy arrays (LMDM's schedule) start on the CPU regardless
        module = kind.build(**module_kwargs).to("meta")
        inputs = [torch.empty(t.shape, dtype=getattr(torch, t.dtype)) for t in spec.inputs]
        with torch.no_grad():
            result = module(*inputs)
    result = result if isinstance(result, tuple) else (result,)
    return tuple(
        TensorInfo(t.name, tuple(out.shape), str(out.dtype).removeprefix("torch."))
        for t, out in zip(spec.outputs, result)
    )


class HoistedClipSampling:
    """Clip sampling (backends/clip_sampling.py) for LMDM through `HoistedLMDM`.

    The schedule's precomputation depends only on the time table and the weights, which a
    loaded network never changes, so it is kept for as long as clips use the same table.
    """

    def __init__(self, guided: GuidedLMDM, device: str) -> None:
        self._hoisted = HoistedLMDM(guided)
        self._device = torch.device(device)
        self._schedule: tuple[np.ndarray, ScheduleCache] | None = None

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self._device)

    def _schedule_for(self, time_table: np.ndarray) -> ScheduleCache:
        cached = self._schedule  # read once: a clip on another thread may replace it meanwhile
        if cached is None or not np.array_equal(cached[0], time_table):
            cached = (np.array(time_table, copy=True), self._hoisted.prepare_schedule(self._tensor(time_table)))
            self._schedule = cached
        return cached[1]

    def prepare_clip(self, kp_cond: np.ndarray, cond: np.ndarray, time_table: np.ndarray) -> ClipCache:
        with torch.inference_mode():
            return self._hoisted.prepare_clip(self._tensor(kp_cond), self._tensor(cond),
                                              self._schedule_for(time_table))

    def guided_step(self, x: np.ndarray, clip: ClipCache, step: int) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            pred_noise, x_start = self._hoisted(self._tensor(x), clip, step)
        return pred_noise.cpu().numpy(), x_start.cpu().numpy()


class TorchNetwork:
    """One network as a torch module, prepared once under the precision policy on its device,
    called with NumPy arrays (Network protocol) or with device tensors (`executor()`). LMDM also
    offers hoisted clip sampling (`clip_sampling`)."""

    def __init__(self, name: str, path: str | Path, device: str = "cpu") -> None:
        if name not in KINDS:
            raise ValueError(f"the torch backend has no module for {name!r}; it runs {sorted(KINDS)}")
        self.name = name
        self.path = Path(path)
        self.device = device
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: model file of {name} is missing")
        kind = KINDS[name]
        checkpoint = read_checkpoint(self.path)
        self.layout, kwargs = identify_layout(name, self.path, kind.state_of(name, checkpoint))
        spec = MODELS[name]
        self.inputs = tuple(TensorInfo(t.name, t.shape, t.dtype) for t in spec.inputs)
        self.outputs = contract_outputs(name, kwargs, kind)
        check_model(name, str(self.path), self.inputs, self.outputs)
        self.max_batch = None  # modules take any batch
        self.precision = precision_for(name, device)
        self.module = prepare_module(kind.load(name, kind.build(**kwargs), checkpoint), device, self.precision)
        self.clip_sampling = HoistedClipSampling(self.module, device) if name == "lmdm" else None

    def run_on_device(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Run on tensors already on this network's device, in contract input order."""
        return run_under(self.precision, self.module, *tensors)

    def executor(self) -> TorchExecutor:
        return TorchExecutor(self)

    def __call__(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        device = torch.device(self.device)
        tensors = [torch.from_numpy(np.ascontiguousarray(arrays[t.name])).to(device)
                   for t in self.inputs]
        return tuple(r.cpu().numpy() for r in self.run_on_device(*tensors))

    def __repr__(self) -> str:
        return f"TorchNetwork({self.name!r}, {str(self.path)!r}, layout={self.layout!r})"


class TorchExecutor:
    """A torch network on device tensors by input name. Its module is shared and stateless at
    inference, so an executor holds nothing of its own beyond the network."""

    array_kind = "torch"

    def __init__(self, network: TorchNetwork) -> None:
        self.network = network
        self.device = network.device

    def __call__(self, **tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.network.run_on_device(*(tensors[t.name] for t in self.network.inputs))
