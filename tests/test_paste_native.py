"""The native paste-back kernel ``ditto_fast._core.paste_back`` (src/paste_back.cpp): bit-exact to the
reference's golden put-back and to the NumPy reference (tests/paste_reference.py) under arbitrary
matrices, independent of the thread count, and strict about its inputs.

Golden cases: every case{j} of putback.npz (golden README §5.7); compared exactly (README §4):
case{j}_out_cython and case{j}_out_numpy. The warped mask/render are compared in test_stage_paste.py.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from golden_stubs import golden_cases, load_golden
from paste_reference import full_frame_paste

# The native kernel, through the public module that uses it (it imports it from ditto_fast._core).
from ditto_fast.ops.paste_back import paste_back, paste_mask, render_to_hwc

FRAME_SHAPE = (150, 210, 3)


def _affine(scale_x: float, scale_y: float, angle_deg: float, shear: float, tx: float, ty: float) -> np.ndarray:
    """3×3 crop→frame matrix: rotation · shear · anisotropic scale, then a translation."""
    a = np.radians(angle_deg)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    linear = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([scale_x, scale_y])
    return np.vstack([np.hstack([linear, [[tx], [ty]]]), [0, 0, 1]]).astype(np.float32)


def _inputs(seed: int, source_shape: tuple[int, int] = (512, 512), frame_shape: tuple[int, ...] = FRAME_SHAPE
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """frame, render and mask. The render strays past [0, 255] and the mask past [0, 1] so that
    the clamps are exercised; values are not on the grid of the golden render's quarters."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, size=frame_shape, dtype=np.uint8)
    render = rng.uniform(-20, 280, size=(*source_shape, 3)).astype(np.float32)
    mask = rng.uniform(-0.3, 1.3, size=source_shape).astype(np.float32)
    return frame, render, mask


# Around the frame's 150×210: crops inside, over each edge and corner, larger than the frame,
# wholly outside, mirrored, sheared and nearly singular.
MATRICES = {
    "inside": _affine(0.2, 0.2, 0.0, 0.0, 60.5, 20.25),
    "rotated_inside": _affine(0.18, 0.18, 17.0, 0.0, 90.3, 10.7),
    "over_top_left": _affine(0.3, 0.3, -25.0, 0.0, -40.2, -60.9),
    "over_bottom_right": _affine(0.35, 0.35, 140.0, 0.0, 230.4, 180.6),
    "larger_than_frame": _affine(0.9, 0.9, 33.0, 0.0, 20.0, -120.0),
    "enlarged_face": _affine(2.7, 2.7, 95.0, 0.0, 600.0, -300.0),
    "sheared_anisotropic": _affine(0.15, 0.4, 8.0, 0.3, 30.0, -10.0),
    "mirrored": _affine(-0.25, 0.25, 5.0, 0.0, 190.0, 15.0),
    "nearly_singular": _affine(0.3, 0.3, 0.0, 40.0, 10.0, 70.0),
    "right_of_frame": _affine(0.2, 0.2, 10.0, 0.0, 400.0, 30.0),
    "above_frame": _affine(0.2, 0.2, -10.0, 0.0, 50.0, -160.0),
}


@pytest.mark.parametrize(("path", "case"), golden_cases("putback*.npz", "case"))
def test_golden_putback_bit_exact(path: pathlib.Path, case: int) -> None:
    putback = load_golden(path)
    frame, render, m_c2o = np.array(putback["frame"]), putback["render"], putback[f"case{case}_M_c2o"]
    before = frame.copy()
    out = paste_back(frame, render, paste_mask(), m_c2o)
    for kind in ("cython", "numpy"):
        np.testing.assert_array_equal(out, putback[f"case{case}_out_{kind}"], err_msg=kind)
    np.testing.assert_array_equal(frame, before)
    assert (out != frame).any()  # the face did land in the frame
    in_place = frame.copy()
    assert paste_back(in_place, render, paste_mask(), m_c2o, out=in_place) is not None
    np.testing.assert_array_equal(in_place, putback[f"case{case}_out_cython"])


@pytest.mark.parametrize("name", MATRICES)
def test_matches_numpy_reference_bit_exact(name: str) -> None:
    frame, render, mask = _inputs(seed=len(name))
    m_c2o = MATRICES[name]
    expected = full_frame_paste(frame, render, mask, m_c2o)
    np.testing.assert_array_equal(paste_back(frame, render, mask, m_c2o), expected)
    if name in ("right_of_frame", "above_frame"):
        np.testing.assert_array_equal(expected, frame)  # wholly outside: the frame as it was
    else:
        assert (expected != frame).any()


@pytest.mark.parametrize("source_shape", [(37, 53), (1, 1), (2, 9)])
def test_small_rectangular_sources_match_numpy_reference(source_shape: tuple[int, int]) -> None:
    """Tiny sources put nearly every sample on the constant border, on all four sides."""
    frame, render, mask = _inputs(seed=11, source_shape=source_shape)
    for m_c2o in (_affine(2.3, 1.7, 21.0, 0.1, 40.3, 30.8), _affine(30.0, 30.0, -60.0, 0.0, 50.0, 90.0)):
        np.testing.assert_array_equal(paste_back(frame, render, mask, m_c2o),
                                      full_frame_paste(frame, render, mask, m_c2o))


@pytest.mark.parametrize("name", ["inside", "enlarged_face", "over_top_left"])
def test_channel_first_decoder_output_equals_the_converted_render(name: str) -> None:
    """The decoder's (1, 3, S, S) output in [0, 1] (straying outside it, as a float network's
    may) gives the same bytes as the reference's conversion followed by the HWC kernel."""
    frame, _, mask = _inputs(seed=8)
    decoded = np.random.default_rng(8).uniform(-0.2, 1.2, size=(1, 3, 512, 512)).astype(np.float32)
    expected = paste_back(frame, np.ascontiguousarray(render_to_hwc(decoded)), mask, MATRICES[name])
    np.testing.assert_array_equal(paste_back(frame, decoded, mask, MATRICES[name]), expected)


def _opaque_masks(size: int) -> dict[str, np.ndarray]:
    """Masks with regions of exactly 1, where the kernel writes the face without blending: the
    feathered paste mask, the same with holes in its opaque centre and opaque islands in its
    feather, one with no exact 1 at all, one that is all 1, and a random patchwork of quarters."""
    feather = paste_mask(size)
    holes = feather.copy()
    centre = size // 2
    holes[centre - 5:centre + 5, centre - 9:centre + 1] = 0.5
    holes[:, centre + 4] = 0.0  # a transparent column across the opaque centre
    holes[centre + 7, centre - 3] = np.nextafter(np.float32(1), np.float32(0))  # one pixel just below 1
    holes[1, 1:4] = 1.0
    quarters = np.random.default_rng(size).integers(0, 5, size=(size, size)).astype(np.float32) / 4
    return {"feather": feather, "holes": holes, "no_exact_one": feather * np.float32(0.999),
            "all_one": np.ones((size, size), np.float32), "quarters": quarters}


OPAQUE_MASKS = _opaque_masks(512)


@pytest.mark.parametrize("matrix_name", ["rotated_inside", "over_top_left", "larger_than_frame", "enlarged_face",
                                         "mirrored", "sheared_anisotropic"])
@pytest.mark.parametrize("mask_name", OPAQUE_MASKS)
def test_opaque_mask_regions_match_numpy_reference(mask_name: str, matrix_name: str) -> None:
    """Where all four mask taps are exactly 1 the kernel skips the blend and the frame; the bytes
    stay the reference's, with the opaque region inside the frame, over its edges or beyond it."""
    frame, render, _ = _inputs(seed=9)
    mask, m_c2o = OPAQUE_MASKS[mask_name], MATRICES[matrix_name]
    expected = full_frame_paste(frame, render, mask, m_c2o)
    assert (expected != frame).any()
    np.testing.assert_array_equal(paste_back(frame, render, mask, m_c2o), expected)


# A 64² source enlarged 2–5×, so that many frame pixels share each block: turned a quarter and a
# half, mirrored, over the frame's edges, and covering all of it.
ENLARGED = {
    "quarter_turn": _affine(2.5, 2.5, 90.0, 0.0, 180.0, 10.0),
    "half_turn_over_top_left": _affine(3.0, 3.0, 180.0, 0.0, 150.0, 120.0),
    "mirrored_tilted_over_top": _affine(-2.2, 2.2, -30.0, 0.0, 200.0, -20.0),
    "covers_the_frame": _affine(5.0, 5.0, 10.0, 0.0, -40.0, -90.0),
}


@pytest.mark.parametrize("matrix_name", ENLARGED)
@pytest.mark.parametrize("mask_name", ["feather", "holes", "all_one"])
def test_enlarged_opaque_source_matches_numpy_reference(mask_name: str, matrix_name: str) -> None:
    frame, render, _ = _inputs(seed=10, source_shape=(64, 64))
    mask, m_c2o = _opaque_masks(64)[mask_name], ENLARGED[matrix_name]
    expected = full_frame_paste(frame, render, mask, m_c2o)
    assert (expected != frame).any()
    np.testing.assert_array_equal(paste_back(frame, render, mask, m_c2o), expected)


@pytest.mark.parametrize("source_shape", [(1, 1), (2, 9), (3, 3), (9, 2), (37, 53)])
def test_small_opaque_sources_match_numpy_reference(source_shape: tuple[int, int]) -> None:
    """All-1 masks of sources too small to have blocks away from their border."""
    frame, render, _ = _inputs(seed=12, source_shape=source_shape)
    mask = np.ones(source_shape, np.float32)
    for m_c2o in (_affine(2.3, 1.7, 21.0, 0.1, 40.3, 30.8), _affine(30.0, 30.0, -60.0, 0.0, 50.0, 90.0)):
        np.testing.assert_array_equal(paste_back(frame, render, mask, m_c2o),
                                      full_frame_paste(frame, render, mask, m_c2o))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_opaque_mask_with_channel_first_input_at_any_thread_count(threads: int) -> None:
    """The paste mask, the decoder's channel-first output and the engine's out-of-place write,
    on a frame tall enough that every thread gets rows."""
    frame, _, _ = _inputs(seed=13, frame_shape=(701, 503, 3))
    decoded = np.random.default_rng(13).uniform(-0.2, 1.2, size=(1, 3, 512, 512)).astype(np.float32)
    m_c2o = _affine(1.3, 1.3, -4.0, 0.0, 60.0, 20.0)
    expected = full_frame_paste(frame, np.ascontiguousarray(render_to_hwc(decoded)), paste_mask(), m_c2o)
    out = np.zeros_like(frame)
    paste_back(frame, decoded, paste_mask(), m_c2o, out=out, threads=threads)
    np.testing.assert_array_equal(out, expected)


def test_accepts_a_2x3_matrix_of_any_float_dtype() -> None:
    frame, render, mask = _inputs(seed=2)
    m_c2o = MATRICES["rotated_inside"]
    expected = paste_back(frame, render, mask, m_c2o)
    np.testing.assert_array_equal(paste_back(frame, render, mask, m_c2o[:2].astype(np.float64)), expected)


def test_thread_count_does_not_change_the_result() -> None:
    # A frame with many more rows than one thread's share, the crop over its middle.
    frame, render, mask = _inputs(seed=4, frame_shape=(701, 503, 3))
    m_c2o = _affine(1.1, 1.1, -7.0, 0.0, 10.0, 40.0)
    results = [paste_back(frame, render, mask, m_c2o, threads=t) for t in (1, 2, 3, 4, 0, 1000)]
    assert (results[0] != frame).any()
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])


def test_out_buffer_gets_every_pixel_and_in_place_only_the_window() -> None:
    frame, render, mask = _inputs(seed=5)
    m_c2o = MATRICES["rotated_inside"]
    expected = full_frame_paste(frame, render, mask, m_c2o)
    out = np.full_like(frame, 13)
    assert paste_back(frame, render, mask, m_c2o, out=out) is out
    np.testing.assert_array_equal(out, expected)
    in_place = frame.copy()
    assert paste_back(in_place, render, mask, m_c2o, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, expected)
    outside = frame.copy()
    paste_back(outside, render, mask, MATRICES["right_of_frame"], out=outside)
    np.testing.assert_array_equal(outside, frame)


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _bad_input_cases() -> dict[str, tuple[dict[str, object], str]]:
    frame, render, mask = _inputs(seed=6, frame_shape=(40, 50, 3))
    wide = np.zeros((40, 100, 3), np.uint8)
    floats = np.zeros(512 * 512 * 4, np.float32)  # render and a uint8 `out` over the same memory
    return {
        "frame_float": ({"frame": frame.astype(np.float32)}, "frame must be .* uint8"),
        "frame_2d": ({"frame": frame[..., 0].copy()}, r"frame must be .*\(H, W, 3\)"),
        "frame_rgba": ({"frame": np.zeros((40, 50, 4), np.uint8)}, "frame must be"),
        "frame_strided": ({"frame": wide[:, ::2]}, "frame .*not C-contiguous"),
        "render_wrong_size": ({"render": render[:256, :256].copy()}, r"render must be .*\(512, 512, 3\)"),
        "render_float64": ({"render": render.astype(np.float64)}, "render must be .*float32"),
        "render_channel_first_wrong_size": ({"render": np.zeros((1, 3, 256, 512), np.float32)},
                                            r"render must be .*\(1, 3, 512, 512\)"),
        "render_channel_first_batch_2": ({"render": np.zeros((2, 3, 512, 512), np.float32)},
                                         r"render must be .*\(1, 3, 512, 512\)"),
        "mask_3d": ({"mask": mask[..., None].copy()}, "mask must be"),
        "mask_empty": ({"mask": np.zeros((0, 0), np.float32)}, "mask must be .*non-empty"),
        "matrix_2x2": ({"m_c2o": np.eye(2)}, r"m_c2o must be a \(2, 3\) or \(3, 3\)"),
        "matrix_nan": ({"m_c2o": np.array([[1, 0, np.nan], [0, 1, 0]])}, "m_c2o must be finite"),
        "threads_negative": ({"threads": -1}, "threads must be >= 0"),
        "out_wrong_shape": ({"out": np.zeros((40, 51, 3), np.uint8)}, "out must be .*frame's shape"),
        "out_read_only": ({"out": _read_only(np.zeros((40, 50, 3), np.uint8))}, "out is read-only"),
        "out_over_render": ({"render": floats[:512 * 512 * 3].reshape(512, 512, 3),
                             "out": floats.view(np.uint8)[:40 * 50 * 3].reshape(40, 50, 3)},
                            "out must be the frame itself or memory shared with no input"),
    }


BAD_INPUTS = _bad_input_cases()


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_rejects_bad_inputs(name: str) -> None:
    frame, render, mask = _inputs(seed=6, frame_shape=(40, 50, 3))
    args: dict[str, object] = {"frame": frame, "render": render, "mask": mask, "m_c2o": MATRICES["inside"]}
    overrides, message = BAD_INPUTS[name]
    args.update(overrides)
    with pytest.raises(ValueError, match=f"^paste_back: {message}"):
        paste_back(**args)


def test_rejects_out_overlapping_the_frame() -> None:
    frame, render, mask = _inputs(seed=7, frame_shape=(41, 50, 3))
    # One row further on in the same memory: neither the frame itself nor apart from it.
    with pytest.raises(ValueError, match="out must be the frame itself"):
        paste_back(frame[:-1], render, mask, MATRICES["inside"], out=frame[1:])
