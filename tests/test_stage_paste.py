"""Paste-back (DITTO_SPEC §5.13–§5.14): the generated mask against the reference mask, and the
warps and blend against the reference's golden put-back (golden README §5.7), byte for byte. The NumPy
warps of tests/paste_reference.py are checked here, so the native kernel can be tested against them.

Golden cases: every case{j} of putback.npz. Compared (exact: README §4, OpenCV's warp arithmetic and
either blend): case{j}_mask_warped, case{j}_render_warped, case{j}_out_cython, case{j}_out_numpy.
Inputs: frame, render, case{j}_M_c2o. Not comparable: case{j}_n_diff_cython_vs_numpy counts the
bytes where the reference's two blends differ from each other; ours is compared with both.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np
import pytest
from golden_stubs import golden_cases, load_golden
from paste_reference import blend, full_frame_paste, warp_affine

from ditto_fast.ops.paste_back import PasteBack, paste_mask, render_to_hwc

PUTBACK_CASES = golden_cases("putback*.npz", "case")


def test_mask_is_the_reference_mask(reference_data: pathlib.Path) -> None:
    mask = paste_mask()
    expected = np.load(reference_data / "putback_mask_512.npy")
    assert mask.dtype == np.float32 and mask.shape == (512, 512)
    np.testing.assert_array_equal(mask, expected)
    constants = json.loads((reference_data / "constants.json").read_text())["putback_mask_512"]
    assert hashlib.sha256(mask.tobytes()).hexdigest() == constants["sha256_of_raw_bytes"]
    np.testing.assert_array_equal(mask[256, :30], np.asarray(constants["row256_first30"], np.float32))


def test_mask_shape_without_reference_data() -> None:
    mask = paste_mask()
    np.testing.assert_array_equal(mask, mask.T)
    np.testing.assert_array_equal(mask, mask[::-1])
    np.testing.assert_array_equal(mask, mask[:, ::-1])
    assert (mask[26:486, 26:486] == 1).all()
    assert (mask[0] == 0).all() and mask.min() == 0 and mask.max() == 1
    np.testing.assert_allclose(mask[256, :26], np.linspace(0, 1, 26), atol=1e-7)
    assert mask[0, 0] == 0 and mask[25, 25] == 1  # corner: 1 − distance from the inner corner


@pytest.mark.parametrize(("path", "case"), PUTBACK_CASES)
def test_warps_match_golden(path: pathlib.Path, case: int) -> None:
    golden = load_golden(path)
    height, width = golden["frame"].shape[:2]
    m_c2o = golden[f"case{case}_M_c2o"]
    mask_warped = np.clip(warp_affine(paste_mask(), m_c2o, (width, height)), 0, 1)
    np.testing.assert_array_equal(mask_warped, golden[f"case{case}_mask_warped"])
    np.testing.assert_array_equal(warp_affine(golden["render"], m_c2o, (width, height)),
                                  golden[f"case{case}_render_warped"])


@pytest.mark.parametrize(("path", "case"), PUTBACK_CASES)
def test_paste_back_matches_golden(path: pathlib.Path, case: int) -> None:
    golden = load_golden(path)
    frame, render, m_c2o = golden["frame"], golden["render"], golden[f"case{case}_M_c2o"]
    before = frame.copy()
    out = PasteBack(paste_mask())(frame, render, m_c2o)
    assert out.dtype == np.uint8 and out.shape == frame.shape
    np.testing.assert_array_equal(out, golden[f"case{case}_out_cython"])
    np.testing.assert_array_equal(out, golden[f"case{case}_out_numpy"])
    np.testing.assert_array_equal(frame, before)
    # The blend alone, from the reference's own warped arrays.
    np.testing.assert_array_equal(
        blend(frame, golden[f"case{case}_render_warped"], golden[f"case{case}_mask_warped"]),
        golden[f"case{case}_out_cython"])


def test_warp_is_bilinear_with_black_border_on_the_sampling_grid() -> None:
    """Where every source position is a multiple of 1/32 px the 1/32-px rounding is exact, so the warp
    must equal plain bilinear interpolation with zeros outside, edges included."""
    rng = np.random.default_rng(5)
    src = rng.uniform(1, 2, size=(20, 30, 3)).astype(np.float32)
    m = np.array([[2.0, 0.0, 5.5], [0.0, 2.0, -3.25]])  # back-projection: dst/2 − (2.75, −1.625)
    got = warp_affine(src, m, (70, 45))
    padded = np.pad(src.astype(np.float64), ((1, 2), (1, 2), (0, 0)))
    expected = np.zeros((45, 70, 3))
    for y in range(45):
        for x in range(70):
            sx, sy = (x - 5.5) / 2, (y + 3.25) / 2
            x0, y0 = int(np.floor(sx)), int(np.floor(sy))
            if not (-1 <= x0 < 30 and -1 <= y0 < 20):
                continue
            fx, fy = sx - x0, sy - y0
            block = padded[y0 + 1:y0 + 3, x0 + 1:x0 + 3]
            expected[y, x] = ((1 - fy) * ((1 - fx) * block[0, 0] + fx * block[0, 1])
                              + fy * ((1 - fx) * block[1, 0] + fx * block[1, 1]))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert (got[:, :4] == 0).all() and (got[37:] == 0).all() and (got[4:37, 4] != 0).all()  # black outside


def _similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.radians(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx],
                     [scale * np.sin(a), scale * np.cos(a), ty], [0, 0, 1]], np.float32)


@pytest.mark.parametrize("m_c2o", [
    _similarity(0.37, 12.0, 40.3, -20.7),  # crop partly above the frame
    _similarity(0.9, -33.0, 150.2, 90.9),  # crop over the bottom-right corner
    _similarity(0.2, 0.0, 10.5, 10.25),  # crop wholly inside
    _similarity(2.5, 95.0, 700.0, -300.0),  # large face, crop mostly outside
], ids=["top", "corner", "inside", "large"])
def test_window_paste_equals_full_frame_paste(m_c2o: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, size=(240, 320, 3), dtype=np.uint8)
    render = (rng.integers(0, 1021, size=(512, 512, 3)) / 4).astype(np.float32)
    np.testing.assert_array_equal(PasteBack()(frame, render, m_c2o),
                                  full_frame_paste(frame, render, paste_mask(), m_c2o))


def test_crop_outside_the_frame_leaves_it_unchanged() -> None:
    frame = np.full((60, 80, 3), 77, np.uint8)
    render = np.full((512, 512, 3), 200, np.float32)
    out = PasteBack()(frame, render, _similarity(0.1, 0.0, 500.0, 500.0))
    np.testing.assert_array_equal(out, frame)
    assert out is not frame


def test_opaque_centre_takes_the_render_truncated() -> None:
    frame = np.zeros((512, 512, 3), np.uint8)
    render = np.full((512, 512, 3), 99.75, np.float32)
    out = PasteBack()(frame, render, np.eye(3, dtype=np.float32))
    assert (out[100:400, 100:400] == 99).all()  # truncation, not rounding
    assert (out[0] == 0).all()


def test_render_to_hwc() -> None:
    decoded = np.stack([np.full((4, 5), v, np.float32) for v in (-0.5, 0.5, 1.5)])[None]
    hwc = render_to_hwc(decoded)
    assert hwc.shape == (4, 5, 3) and hwc.dtype == np.float32
    np.testing.assert_array_equal(hwc[0, 0], np.array([0, 127.5, 255], np.float32))
    with pytest.raises(ValueError, match="decoder output"):
        render_to_hwc(np.zeros((3, 4, 5), np.float32))


def test_rejects_mismatched_inputs() -> None:
    paste = PasteBack()
    with pytest.raises(ValueError, match="render"):
        paste(np.zeros((10, 10, 3), np.uint8), np.zeros((256, 256, 3), np.float32), np.eye(3))
    with pytest.raises(ValueError, match="frame"):
        paste(np.zeros((10, 10), np.uint8), np.zeros((512, 512, 3), np.float32), np.eye(3))
    with pytest.raises(ValueError, match="mask"):
        PasteBack(np.zeros((4, 5), np.float32))
