"""Source loading and crop geometry against the reference's golden vectors (golden README §5.1, §5.8)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ditto_fast.stages.crop import (
    TRACKING_CROP,
    CropSettings,
    crop_matrices,
    crop_rectangle,
    crop_with,
    eye_lip_centres,
    final_crop_settings,
    to_rgb256,
    warp_affine,
)
from ditto_fast.stages.source import check_resize, load_image, mirror_index, resize_to_limit


@pytest.fixture(scope="module")
def golden(shared_ref):
    return lambda name: np.load(shared_ref / "golden" / name)


def _final_settings(row: np.ndarray, vx_ratio: float | None = None) -> CropSettings:
    scale, vy_ratio, row_vx, rot = row
    return final_crop_settings(scale, row_vx if vx_ratio is None else vx_ratio, vy_ratio, bool(rot))


def _reference_rgb256(u8: np.ndarray) -> np.ndarray:
    return (u8.astype(np.float32) / 255)[None].transpose(0, 3, 1, 2)


def _crop_centre(m_c2o: np.ndarray, dsize: int) -> np.ndarray:
    return m_c2o[:2, :2] @ np.full(2, dsize / 2, np.float32) + m_c2o[:2, 2]


def _assert_matrices(ours: tuple[np.ndarray, np.ndarray], o2c: np.ndarray, c2o: np.ndarray, what: str):
    for name, got, want in (("M_o2c", ours[0], o2c), ("M_c2o", ours[1], c2o)):
        assert got.dtype == np.float32 and got.shape == (3, 3), f"{what} {name}: {got.dtype} {got.shape}"
        np.testing.assert_array_equal(got, want, err_msg=f"{what} {name}")


# ---------------------------------------------------------------------------------- loading


def test_check_resize_matches_reference(golden):
    d = golden("check_resize.npz")
    for (h, w, max_dim), (new_h, new_w, flag) in zip(d["cases_h_w_maxdim"], d["expected_newh_neww_flag"]):
        assert check_resize(int(h), int(w), int(max_dim)) == (new_h, new_w, bool(flag)), (h, w, max_dim)


@pytest.mark.parametrize("case", [0, 1])
def test_load_image_matches_reference(golden, tmp_path, case):
    d = golden("check_resize.npz")
    path = tmp_path / f"load{case}.png"
    assert cv2.imwrite(str(path), d[f"load{case}_rgb_in"][..., ::-1])
    out = load_image(path, int(d[f"load{case}_max_dim"]))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, d[f"load{case}_rgb_out"])


def test_load_image_reads_webp_as_rgb(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    path = tmp_path / "portrait.webp"
    assert cv2.imwrite(str(path), rgb[..., ::-1], [cv2.IMWRITE_WEBP_QUALITY, 101])  # lossless
    np.testing.assert_array_equal(load_image(path), rgb)


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    with pytest.raises(ValueError, match="notes.png: not a readable image"):
        load_image(not_image)
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ValueError, match="tiny.png: a 1x1 frame is too small"):
        load_image(tiny)


def test_resize_to_limit_keeps_frames_that_fit():
    frame = np.zeros((300, 260, 3), np.uint8)
    assert resize_to_limit(frame, 1920) is frame
    assert resize_to_limit(np.zeros((4000, 3000, 3), np.uint8), 1920).shape == (1920, 1440, 3)


def test_mirror_index_matches_reference(golden):
    d = golden("mirror_index.npz")
    got = [[mirror_index(int(i), int(n)) for i in d["i_values"]] for n in d["n_values"]]
    np.testing.assert_array_equal(got, d["table"])


def test_mirror_index_rejects_empty_source():
    with pytest.raises(ValueError, match="no frames"):
        mirror_index(3, 0)


# ---------------------------------------------------------------------------- crop geometry


def test_tracking_crop_matrices_match_reference(golden):
    d = golden("crop_matrices.npz")
    for layout in ("lmk106", "lmk203"):
        for i, pts in enumerate(d[layout]):
            _assert_matrices(
                crop_matrices(pts, TRACKING_CROP),
                d[f"{layout}_track_M_o2c"][i], d[f"{layout}_track_M_c2o"][i], f"{layout}[{i}] tracking",
            )


def test_final_crop_matrices_match_reference_without_vx(golden):
    """The reference ignores crop_vx_ratio, so every golden row is our vx_ratio=0 crop."""
    d = golden("crop_matrices.npz")
    for i, pts in enumerate(d["lmk203"]):
        for j, row in enumerate(d["final_params"]):
            _assert_matrices(
                crop_matrices(pts, _final_settings(row, vx_ratio=0.0)),
                d["lmk203_final_M_o2c"][i, j], d["lmk203_final_M_c2o"][i, j], f"lmk203[{i}] params[{j}]",
            )


def test_vx_ratio_shifts_the_crop_centre_along_the_face_x_axis(golden):
    d = golden("crop_matrices.npz")
    rows = [row for row in d["final_params"] if row[2] != 0]
    assert any(not row[3] for row in rows), "want a shifted row without rotation too"
    for i, pts in enumerate(d["lmk203"]):
        for j, row in enumerate(d["final_params"]):
            if row[2] == 0:
                continue
            settings = _final_settings(row)
            _, ours_c2o = crop_matrices(pts, settings)
            reference_c2o = d["lmk203_final_M_c2o"][i, j]
            rect = crop_rectangle(pts, settings.scale, 0.0, settings.vy_ratio)
            # Scale and rotation are untouched; only the centre moves, by vx·side along ux.
            np.testing.assert_array_equal(ours_c2o[:2, :2], reference_c2o[:2, :2])
            shift = _crop_centre(ours_c2o, 512) - _crop_centre(reference_c2o, 512)
            np.testing.assert_allclose(shift, row[2] * rect.side * rect.ux, atol=2e-3, err_msg=f"{i},{j}")
            assert np.linalg.norm(shift) > 0.05 * rect.side


def test_degenerate_face_axis_gives_an_upright_crop(golden):
    pts = golden("crop_matrices.npz")["lmk203"][-1]
    eye, lip = eye_lip_centres(pts)
    assert np.linalg.norm(lip - eye) <= 1e-3
    rect = crop_rectangle(pts, 2.3)
    np.testing.assert_array_equal(rect.ux, [1, 0])
    assert rect.angle == 0.0


def test_eye_lip_centres_rejects_other_layouts():
    with pytest.raises(ValueError, match="expected 106 or 203 points"):
        eye_lip_centres(np.zeros((68, 2), np.float32))


def test_crop_images_match_reference(golden):
    d = golden("crop_images.npz")
    img = d["img"]
    cases = [("track106", d["lmk106"], TRACKING_CROP), ("track203", d["lmk203"], TRACKING_CROP)]
    cases += [(f"final{j}", d["lmk203"], _final_settings(row)) for j, row in enumerate(d["final_params"])]
    for name, pts, settings in cases:
        crop = crop_with(img, pts, settings)
        _assert_matrices((crop.M_o2c, crop.M_c2o), d[f"{name}_M_o2c"], d[f"{name}_M_c2o"], name)
        assert crop.image.shape == (settings.dsize, settings.dsize, 3)
        np.testing.assert_array_equal(crop.image, d[f"{name}_img_crop"], err_msg=name)


def test_rgb256_matches_reference(golden):
    d = golden("crop_images.npz")
    for j in range(len(d["final_params"])):
        rgb256 = to_rgb256(d[f"final{j}_img_crop"])
        assert rgb256.shape == (1, 3, 256, 256) and rgb256.dtype == np.float32
        np.testing.assert_array_equal(rgb256, _reference_rgb256(d[f"final{j}_rgb256_u8"]))


def test_warp_affine_moves_whole_pixels_and_fills_black():
    img = np.random.default_rng(1).integers(1, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(warp_affine(img, np.eye(3, dtype=np.float32), 20), img[:, :20])
    shifted = warp_affine(img, np.array([[1, 0, 5], [0, 1, -2]], np.float64), 24)  # original → crop
    np.testing.assert_array_equal(shifted[:18, 5:24], img[2:20, :19])
    assert not shifted[:, :5].any() and not shifted[18:].any()
