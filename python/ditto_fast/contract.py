"""The tensor contract of every Ditto network: names, shapes, dtypes and output order.

Every backend checks a model against this table when it loads it, so a wrong or corrupted
checkpoint fails at load time with an error that names the file and the tensor, instead of
failing mid-render with a shape error deep inside a stage.

Shapes use ints for fixed sizes and strings for dimensions that vary per call (hubert's
waveform length ``N`` and its frame count ``T``). ONNX outputs are consumed by position, so
the output order is part of the contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...] | None  # None: the shape is not fixed by the reference
    dtype: str = "float32"
    # For tensors whose layout is unknown but whose size matters (face_mesh's landmarks).
    elements: int | None = None

    def describe(self) -> str:
        if self.shape is not None:
            return f"{list(self.shape)} {self.dtype}"
        if self.elements is not None:
            return f"{self.elements} elements {self.dtype}"
        return f"any shape {self.dtype}"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as a runtime reports it; dimensions it does not know are strings or None."""

    name: str
    shape: tuple[int | str | None, ...] | None
    dtype: str


class ContractError(ValueError):
    """A model file does not match the tensor contract of its network."""


def _t(name: str, *shape: Dim, dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name, tuple(shape), dtype)


def _kp(name: str) -> TensorSpec:
    return _t(name, 1, 21, 3)


_IMAGE_256 = _t("image", 1, 3, 256, 256)
_DETECTOR_OUTPUTS = tuple(
    _t(f"{kind}{level}", anchors, width)
    for kind, width in (("scores", 1), ("boxes", 4), ("kps", 10))
    for level, anchors in ((1, 8192), (2, 2048), (3, 512))
)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("appearance_extractor", (_IMAGE_256,), (_t("pred", 1, 32, 16, 64, 64),)),
        ModelSpec(
            "motion_extractor",
            (_IMAGE_256,),
            (
                _t("pitch", 1, 66), _t("yaw", 1, 66), _t("roll", 1, 66), _t("t", 1, 3),
                _t("exp", 1, 63), _t("scale", 1, 1), _t("kp", 1, 63),
            ),
        ),
        ModelSpec(
            "warp_network",
            (_t("feature_3d", 1, 32, 16, 64, 64), _kp("kp_source"), _kp("kp_driving")),
            (_t("out", 1, 256, 64, 64),),
        ),
        ModelSpec("decoder", (_t("feature", 1, 256, 64, 64),), (_t("output", 1, 3, 512, 512),)),
        ModelSpec("stitch_network", (_kp("kp_source"), _kp("kp_driving")), (_kp("out"),)),
        ModelSpec(
            "lmdm",
            (
                _t("x", 1, 80, 265), _t("cond_frame", 1, 265), _t("cond", 1, 80, 1103),
                _t("time_cond", 1, dtype="int64"),
            ),
            (_t("pred_noise", 1, 80, 265), _t("x_start", 1, 80, 265)),
        ),
        ModelSpec("hubert", (_t("input_values", 1, "N"),), (_t("encoding_out", "T", 1024),)),
        ModelSpec("insightface_det", (_t("image", 1, 3, 512, 512),), _DETECTOR_OUTPUTS),
        ModelSpec("landmark106", (_t("data", 1, 3, 192, 192),), (_t("fc1", 1, 212),)),
        ModelSpec("landmark203", (_t("input", 1, 3, 224, 224),), (_t("landmarks", 1, 406),)),
        ModelSpec(
            "blaze_face",
            (_t("input", 1, 128, 128, 3),),
            (_t("regressors", 1, 896, 16), _t("classificators", 1, 896, 1)),
        ),
        ModelSpec(
            "face_mesh",
            (_t("input", 1, 256, 256, 3),),
            (
                TensorSpec("Identity", None, elements=1434),
                TensorSpec("Identity_1", None),
                TensorSpec("Identity_2", None),
            ),
        ),
    )
}

# HuBERT's waveform length range: the reference's TensorRT profile (min, opt, max samples).
HUBERT_LENGTHS = (3240, 6480, 12960)


def hubert_frames(samples: int) -> int:
    """HuBERT output frames for a waveform of `samples` (receptive field 400, hop 320)."""
    return (samples - 400) // 320 + 1


def _dims_match(expected: Sequence[Dim], found: Sequence[int | str | None]) -> bool:
    if len(expected) != len(found):
        return False
    # A symbolic expected dim accepts anything; a fixed one accepts itself or an unknown dim
    # (a runtime that leaves a dimension symbolic has not contradicted the contract).
    return all(
        isinstance(e, str) or f is None or isinstance(f, str) or e == f
        for e, f in zip(expected, found)
    )


def _mismatch(spec: TensorSpec, found: TensorInfo) -> bool:
    if spec.dtype != found.dtype:
        return True
    if spec.shape is not None:
        return found.shape is None or not _dims_match(spec.shape, found.shape)
    if spec.elements is not None and found.shape is not None:
        if all(isinstance(d, int) for d in found.shape):
            return prod(found.shape) != spec.elements  # type: ignore[arg-type]
    return False


def _describe_found(info: TensorInfo) -> str:
    shape = "unknown shape" if info.shape is None else str(list(info.shape))
    return f"{shape} {info.dtype}"


def check_model(
    network: str,
    path: str,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
) -> None:
    """Raise ContractError unless `inputs` and `outputs` satisfy the contract of `network`.

    Inputs are matched by name (runtimes bind them by name); outputs by name and position,
    because the reference consumes ONNX outputs positionally.
    """
    if network not in MODELS:
        raise ContractError(f"{path}: unknown network {network!r}; expected one of {sorted(MODELS)}")
    spec = MODELS[network]
    found_inputs = {t.name: t for t in inputs}
    for expected in spec.inputs:
        actual = found_inputs.get(expected.name)
        if actual is None:
            raise ContractError(
                f"{path}: {network} has no input {expected.name!r} (expected "
                f"{expected.describe()}; found inputs {sorted(found_inputs)})"
            )
        if _mismatch(expected, actual):
            raise ContractError(
                f"{path}: {network} input {expected.name!r} is {_describe_found(actual)}, "
                f"expected {expected.describe()}"
            )
    extra = sorted(set(found_inputs) - {t.name for t in spec.inputs})
    if extra:
        raise ContractError(f"{path}: {network} has unexpected inputs {extra}")
    if len(outputs) < len(spec.outputs):
        raise ContractError(
            f"{path}: {network} has {len(outputs)} outputs, expected {len(spec.outputs)} "
            f"({[t.name for t in spec.outputs]})"
        )
    for position, (expected, actual) in enumerate(zip(spec.outputs, outputs)):
        if actual.name != expected.name:
            raise ContractError(
                f"{path}: {network} output {position} is {actual.name!r}, expected "
                f"{expected.name!r} (outputs are read by position)"
            )
        if _mismatch(expected, actual):
            raise ContractError(
                f"{path}: {network} output {expected.name!r} is {_describe_found(actual)}, "
                f"expected {expected.describe()}"
            )
