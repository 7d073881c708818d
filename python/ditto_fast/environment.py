"""What this installation can use: the native build, the GPUs it sees, the optional packages.

Every probe answers instead of raising, so the report can always be printed, also on a machine
where an optional part is missing or broken.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ditto_fast import __version__
from ditto_fast.errors import one_line

# Import name and the name users know it by, in the order the report lists them.
OPTIONAL_PARTS: tuple[tuple[str, str], ...] = (
    ("onnxruntime", "onnxruntime"),
    ("torch", "torch"),
    ("tensorrt", "tensorrt"),
    ("cupy", "cupy"),
    ("triton", "triton"),
    ("av", "PyAV"),
)


@dataclass(frozen=True)
class PartStatus:
    """Whether one optional package imports, and its version or the reason it does not."""

    label: str
    available: bool
    detail: str  # version when available, else the one-line reason

    def line(self) -> str:
        state = self.detail if self.available else f"not available ({self.detail})"
        return f"{self.label}: {state}"


@dataclass(frozen=True)
class EnvironmentReport:
    version: str
    cuda_compiled: bool
    cuda_detail: str  # runtime version and architectures, or why there is no CUDA
    gpus: tuple[str, ...]
    gpu_reason: str  # why `gpus` is empty
    parts: tuple[PartStatus, ...]

    def lines(self) -> list[str]:
        gpus = "; ".join(self.gpus) if self.gpus else f"none ({self.gpu_reason})"
        return [
            f"ditto_fast: {self.version}",
            f"CUDA compiled in: {'yes' if self.cuda_compiled else 'no'} ({self.cuda_detail})",
            f"GPUs: {gpus}",
            *(part.line() for part in self.parts),
        ]


def probe_part(module: str, label: str) -> PartStatus:
    """Import `module` and report its version; any failure becomes a one-line reason."""
    try:
        imported = importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - a broken optional install must not stop the report
        return PartStatus(label, False, one_line(exc))
    return PartStatus(label, True, str(getattr(imported, "__version__", "version unknown")))


def format_gpu(device: dict) -> str:
    major, minor = device["compute_capability"]
    gib = device["total_memory"] / 2**30
    return f"[{device['ordinal']}] {device['name']} (sm_{major}{minor}, {gib:.1f} GiB)"


def describe_environment() -> EnvironmentReport:
    from ditto_fast import _core

    if _core.cuda_compiled:
        runtime = _core.cuda_runtime_version()
        cuda_detail = (
            f"runtime {runtime // 1000}.{runtime % 1000 // 10}, "
            f"architectures {_core.cuda_architectures}"
        )
    else:
        cuda_detail = "built without nvcc"
    devices, reason = _core.cuda_devices()
    return EnvironmentReport(
        version=__version__,
        cuda_compiled=bool(_core.cuda_compiled),
        cuda_detail=cuda_detail,
        gpus=tuple(format_gpu(d) for d in devices),
        gpu_reason=reason,
        parts=tuple(probe_part(module, label) for module, label in OPTIONAL_PARTS),
    )
