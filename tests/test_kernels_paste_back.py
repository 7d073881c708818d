"""Triton fused paste-back (kernels/paste_back.py via ops/paste_triton.py) against the NumPy re-creation of the
cv2 warps and blend (tests/paste_reference.py); on the GPU when there is one, else in Triton's
interpreter on the CPU. Golden: every case{j} of putback.npz — case{j}_out_cython and
case{j}_out_numpy compared (the rest of the file in test_stage_paste.py)."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
from golden_stubs import assert_golden_equal, golden_cases, load_golden
from paste_reference import full_frame_paste

from ditto_fast.ops.paste_back import paste_mask, render_to_hwc
from ditto_fast.ops.paste_geometry import crop_footprint

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # read when the kernel is decorated, i.e. at its module's import
pytest.importorskip("triton")

from ditto_fast.ops.paste_triton import triton_paste_back as paste_back  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FRAME_SHAPE = (21, 70, 3)  # 3×2 partly filled 8×64 tiles of the kernel
SOURCE_SHAPE = (16, 24)  # small: the interpreter is slow
# The interpreter runs NumPy float32 operations, the reference's own: byte-identical. On the GPU
# every operation is IEEE float32 in the same order (no FMAs) and should be too; allowed there:
# ±1 where a blend lands within an ulp of an integer.
MAX_DIFFERING_FRACTION = 0.0 if DEVICE == "cpu" else 1e-3


def _similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    """2×3 crop→frame matrix: rotation by angle and uniform scale, then a translation."""
    a = np.radians(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


# Crops inside the frame, over each side, larger than it, mirrored and sheared, and wholly outside.
MATRICES = {
    "inside": _similarity(0.5, 0.0, 20.3, 5.7),
    "rotated_inside": _similarity(0.6, 12.0, 40.6, 3.2),
    "over_top_left": _similarity(1.0, 30.0, -6.4, -8.9),
    "over_bottom_right": _similarity(1.1, -20.0, 55.2, 10.5),
    "larger_than_frame": _similarity(4.0, 10.0, -20.0, -30.0),
    "mirrored_sheared": np.array([[-0.9, 0.3, 40.5], [0.1, 0.8, 3.25]]),
    "right_of_frame": _similarity(0.5, 5.0, 200.0, 0.0),
    "above_frame": _similarity(0.5, -5.0, 10.0, -100.0),
}
OUTSIDE = ("right_of_frame", "above_frame")


def _inputs(seed: int, source_shape: tuple[int, int] = SOURCE_SHAPE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """frame (H, W, 3) uint8, render (1, 3, S, S') float32 and mask (S, S') float32. The render strays
    past [0, 1] and the mask past [0, 1] so that both clamps are exercised."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, size=FRAME_SHAPE, dtype=np.uint8)
    render = rng.uniform(-0.1, 1.1, size=(1, 3, *source_shape)).astype(np.float32)
    mask = rng.uniform(-0.3, 1.3, size=source_shape).astype(np.float32)
    return frame, render, mask


def _device(array: np.ndarray) -> torch.Tensor:
    """A fresh tensor on the test device (never the NumPy array's memory, which in-place pastes would change)."""
    return torch.from_numpy(np.array(array)).to(DEVICE)


def _reference(frame: np.ndarray, render: np.ndarray, mask: np.ndarray, m_c2o: np.ndarray) -> np.ndarray:
    return full_frame_paste(frame, render_to_hwc(render), mask, m_c2o)


def _assert_close_to_reference(out: np.ndarray, expected: np.ndarray) -> None:
    difference = np.abs(out.astype(np.int16) - expected)
    assert difference.max() <= 1
    assert (difference > 0).mean() <= MAX_DIFFERING_FRACTION


VARIANTS = {"fp32": (torch.float32, False), "fp16": (torch.float16, False), "fp32_in_place": (torch.float32, True)}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", MATRICES)
def test_matches_numpy_reference(name: str, variant: str) -> None:
    render_dtype, in_place = VARIANTS[variant]
    frame, render, mask = _inputs(seed=len(name))
    m_c2o = MATRICES[name]
    # An fp16 render is what the reference would see after rounding the decoder output to fp16.
    rounded = torch.from_numpy(render).to(render_dtype).float().numpy()
    expected = _reference(frame, rounded, mask, m_c2o)
    frame_tensor = _device(frame)
    out = paste_back(frame_tensor, _device(render).to(render_dtype), _device(mask), m_c2o,
                     out=frame_tensor if in_place else None)
    assert (out is frame_tensor) == in_place
    _assert_close_to_reference(out.cpu().numpy(), expected)
    if name in OUTSIDE:
        np.testing.assert_array_equal(expected, frame)  # nothing lands: the frame as it was
    else:
        assert (expected != frame).any()


def test_full_size_render_and_real_mask_in_place() -> None:
    """The pipeline's shapes: a 512² render under the feathered mask, pasted small and turned."""
    frame, render, _ = _inputs(seed=3, source_shape=(512, 512))
    mask = paste_mask()
    m_c2o = np.vstack([_similarity(0.07, 7.0, 20.3, 9.7), [0, 0, 1]]).astype(np.float32)  # (3, 3), float32
    expected = _reference(frame, render, mask, m_c2o)
    in_place = _device(frame)
    returned = paste_back(in_place, _device(render), _device(mask), m_c2o, out=in_place)
    assert returned is in_place
    _assert_close_to_reference(in_place.cpu().numpy(), expected)
    assert (expected != frame).any()


@pytest.mark.parametrize(("path", "case"), golden_cases("putback*.npz", "case"))
def test_golden_putback(path: pathlib.Path, case: int) -> None:
    """The reference's own put-back (golden README §5.7, every case; ~10 s each in the interpreter):
    bit-exact in the interpreter (OpenCV's arithmetic); on the GPU within the committed test's
    tolerance (max 1, at most 0.1 % of the bytes differing), stricter than README §4's max 6 / mean 0.25."""
    golden = load_golden(path)
    frame, render, m_c2o = golden["frame"], golden["render"], golden[f"case{case}_M_c2o"]
    # README §5.7: the render is in [0, 255] with quarter fractions, so /255 then the kernel's ·255
    # gives those values back exactly and the kernel sees the reference's face.
    decoder_output = (np.transpose(render, (2, 0, 1))[None] / np.float32(255)).astype(np.float32)
    assert np.array_equal(render_to_hwc(decoder_output), render)
    out = paste_back(_device(frame), _device(decoder_output), _device(paste_mask()), m_c2o).cpu().numpy()
    for kind in ("cython", "numpy"):
        expected = golden[f"case{case}_out_{kind}"]
        if DEVICE == "cpu":
            assert_golden_equal(out, expected, kind)
        else:
            _assert_close_to_reference(out, expected)
        assert (expected != frame).any()  # the face did land in the frame


def test_out_buffer_gets_every_pixel_and_every_change_lies_in_the_footprint() -> None:
    frame, render, mask = _inputs(seed=5)
    m_c2o = MATRICES["rotated_inside"]
    expected = _reference(frame, render, mask, m_c2o)
    out = torch.full(FRAME_SHAPE, 13, dtype=torch.uint8, device=DEVICE)
    returned = paste_back(_device(frame), _device(render), _device(mask), m_c2o, out=out)
    assert returned is out
    _assert_close_to_reference(out.cpu().numpy(), expected)
    # In place the kernel runs over the footprint window only, so everything that changes must lie in it.
    window = crop_footprint(m_c2o, SOURCE_SHAPE, FRAME_SHAPE[:2])
    assert 0 < window.x1 - window.x0 < FRAME_SHAPE[1] and 0 < window.y1 - window.y0 < FRAME_SHAPE[0]
    changed = np.argwhere((expected != frame).any(axis=2))
    assert (changed.min(axis=0) >= (window.y0, window.x0)).all()
    assert (changed.max(axis=0) < (window.y1, window.x1)).all()


def test_frame_is_left_untouched_out_of_place() -> None:
    frame, render, mask = _inputs(seed=6)
    frame_tensor = _device(frame)
    paste_back(frame_tensor, _device(render), _device(mask), MATRICES["inside"])
    np.testing.assert_array_equal(frame_tensor.cpu().numpy(), frame)


def _bad_input_cases() -> dict[str, tuple[dict[str, object], type[Exception], str]]:
    frame, render, mask = (_device(a) for a in _inputs(seed=7))
    wide = torch.zeros((21, 140, 3), dtype=torch.uint8, device=DEVICE)
    one_row_apart = torch.zeros(22 * 70 * 3, dtype=torch.uint8, device=DEVICE)  # frame and out one row apart
    return {
        "frame_float": ({"frame": frame.float()}, ValueError, r"frame must be \(H, W, 3\) uint8"),
        "frame_rgba": ({"frame": torch.zeros((21, 70, 4), dtype=torch.uint8, device=DEVICE)}, ValueError,
                       "frame must be"),
        "render_hwc": ({"render": render[0].permute(1, 2, 0)}, ValueError, r"render must be \(1, 3, S, S'\)"),
        "render_float64": ({"render": render.double()}, TypeError, "render must be float16 or float32"),
        "mask_other_size": ({"mask": mask[:-1]}, ValueError, r"mask must be float32 of the render's size \(16, 24\)"),
        "mask_float16": ({"mask": mask.half()}, ValueError, "mask must be float32"),
        "matrix_2x2": ({"m_c2o": np.eye(2)}, ValueError, r"m_c2o must be a \(2, 3\) or \(3, 3\) matrix"),
        "matrix_nan": ({"m_c2o": np.array([[1, 0, np.nan], [0, 1, 0]])}, ValueError, "m_c2o must be finite"),
        "out_wrong_shape": ({"out": wide[:, :69]}, ValueError, "out must be uint8 of the frame's shape"),
        "out_strided": ({"out": wide[:, ::2]}, ValueError, "out must be C-contiguous"),
        "out_overlapping_frame": ({"frame": one_row_apart[:-70 * 3].view(FRAME_SHAPE),
                                   "out": one_row_apart[70 * 3:].view(FRAME_SHAPE)}, ValueError,
                                  "out must be the frame itself or memory apart from it"),
        "in_place_strided": ({"frame": wide[:, ::2], "out": IN_PLACE}, ValueError,
                             "a frame pasted in place must be C-contiguous"),
        "mask_elsewhere": ({"mask": mask.to("meta")}, ValueError, "mask is on meta but frame is on"),
    }


IN_PLACE = object()  # stands for out=frame in the cases below
BAD_INPUTS = _bad_input_cases()


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_rejects_bad_inputs(name: str) -> None:
    frame, render, mask = (_device(a) for a in _inputs(seed=7))
    args: dict[str, object] = {"frame": frame, "render": render, "mask": mask, "m_c2o": MATRICES["inside"]}
    overrides, error, message = BAD_INPUTS[name]
    args.update(overrides)
    if args.get("out") is IN_PLACE:
        args["out"] = args["frame"]
    with pytest.raises(error, match=f"^paste-back: {message}"):
        paste_back(**args)
