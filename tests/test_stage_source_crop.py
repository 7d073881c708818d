"""Source loading and crop geometry against the reference's golden vectors (golden README §5.1, §5.8).

Golden cases: check_resize.npz (every row, every load{i}), mirror_index.npz, crop_matrices.npz
(every landmark set of every layout, every final_params row), crop_images.npz (every crop it
stores). Every comparison is bit-exact, as the committed tests required: check_resize, mirror
index, loaded images (cv2), INTER_AREA 256 crops, crop matrices, and crops warped with our own
matrix as well as with the golden one (README §4 would allow its crop-matrix rule and max 8 /
mean 0.25 for crops made from our own matrix). The crop_vx_ratio shift, which the reference does
not make, is checked against the float32 formula within 2e-3 px (the committed tolerance).
Compared: expected_newh_neww_flag, load{i}_rgb_out, table, every *_M_o2c / *_M_c2o,
*_img_crop, final{j}_rgb256_u8.
Inputs, not compared: cases_h_w_maxdim, load{i}_rgb_in, load{i}_max_dim, n_values, i_values,
lmk106, lmk203, final_params, img; *_frame_hw (the frames the landmark sets belong to: the
matrices do not depend on the image).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from golden_stubs import assert_golden_equal, golden_cases, load_golden

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
from ditto_fast.stages.frame_index import mirror_index
from ditto_fast.stages.source import check_resize, load_image, resize_to_limit


def _final_settings(row: np.ndarray, vx_ratio: float | None = None) -> CropSettings:
    """A final_params row is [crop_scale, crop_vy_ratio, crop_vx_ratio, crop_flag_do_rot]."""
    scale, vy_ratio, row_vx, rot = row
    return final_crop_settings(scale, row_vx if vx_ratio is None else vx_ratio, vy_ratio, bool(rot))


def _reference_rgb256(u8: np.ndarray) -> np.ndarray:
    return (u8.astype(np.float32) / 255)[None].transpose(0, 3, 1, 2)


def _crop_centre(m_c2o: np.ndarray, dsize: int) -> np.ndarray:
    return m_c2o[:2, :2] @ np.full(2, dsize / 2, np.float32) + m_c2o[:2, 2]


def _assert_matrices(ours: tuple[np.ndarray, np.ndarray], o2c: np.ndarray, c2o: np.ndarray, what: str) -> None:
    for name, got, want in (("M_o2c", ours[0], o2c), ("M_c2o", ours[1], c2o)):
        assert got.dtype == np.float32 and got.shape == (3, 3), f"{what} {name}: {got.dtype} {got.shape}"
        assert_golden_equal(got, want, f"{what} {name}")


# ---------------------------------------------------------------------------------- loading


def test_check_resize_matches_reference():
    d = load_golden("check_resize.npz")
    assert len(d["cases_h_w_maxdim"]) == len(d["expected_newh_neww_flag"])
    for (h, w, max_dim), (new_h, new_w, flag) in zip(d["cases_h_w_maxdim"], d["expected_newh_neww_flag"]):
        assert check_resize(int(h), int(w), int(max_dim)) == (new_h, new_w, bool(flag)), (h, w, max_dim)


@pytest.mark.parametrize(("path", "case"), golden_cases("check_resize*.npz", "load"))
def test_load_image_matches_reference(tmp_path, path, case):
    d = load_golden(path)
    png = tmp_path / f"load{case}.png"
    assert cv2.imwrite(str(png), d[f"load{case}_rgb_in"][..., ::-1])
    out = load_image(png, int(d[f"load{case}_max_dim"]))
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


def test_mirror_index_matches_reference():
    d = load_golden("mirror_index.npz")
    got = [[mirror_index(int(i), int(n)) for i in d["i_values"]] for n in d["n_values"]]
    np.testing.assert_array_equal(got, d["table"])


def test_mirror_index_rejects_empty_source():
    with pytest.raises(ValueError, match="no frames"):
        mirror_index(3, 0)


# ---------------------------------------------------------------------------- crop geometry


def _layouts(d) -> list[str]:
    """The landmark layouts with tracking matrices (lmk106, lmk203)."""
    return [key[:-len("_track_M_o2c")] for key in d if key.endswith("_track_M_o2c")]


def test_tracking_crop_matrices_match_reference():
    d = load_golden("crop_matrices.npz")
    layouts = _layouts(d)
    assert layouts
    for layout in layouts:
        for i, pts in enumerate(d[layout]):
            _assert_matrices(crop_matrices(pts, TRACKING_CROP), d[f"{layout}_track_M_o2c"][i],
                             d[f"{layout}_track_M_c2o"][i], f"{layout}[{i}] tracking")


def test_final_crop_matrices_match_reference_without_vx():
    """The reference ignores crop_vx_ratio (README §6), so every golden row is our vx_ratio=0 crop."""
    d = load_golden("crop_matrices.npz")
    for i, pts in enumerate(d["lmk203"]):
        for j, row in enumerate(d["final_params"]):
            settings = _final_settings(row, vx_ratio=0.0)
            _assert_matrices(crop_matrices(pts, settings), d["lmk203_final_M_o2c"][i, j],
                             d["lmk203_final_M_c2o"][i, j], f"lmk203[{i}] params[{j}]")


def test_vx_ratio_shifts_the_crop_centre_along_the_face_x_axis():
    """ditto_fast does forward crop_vx_ratio: only the crop centre moves, by vx·side along the face x-axis."""
    d = load_golden("crop_matrices.npz")
    rows = [j for j, row in enumerate(d["final_params"]) if row[2] != 0]
    assert rows, "crop_matrices.npz has no final_params row with crop_vx_ratio != 0"
    assert any(not d["final_params"][j][3] for j in rows), "want a shifted row without rotation too"
    for i, pts in enumerate(d["lmk203"]):
        for j in rows:
            row = d["final_params"][j]
            settings = _final_settings(row)
            _, ours_c2o = crop_matrices(pts, settings)
            reference_c2o = d["lmk203_final_M_c2o"][i, j]
            rect = crop_rectangle(pts, settings.scale, 0.0, settings.vy_ratio)
            # Scale and rotation are the reference's, bit for bit; only the centre moves, by vx·side along ux.
            assert_golden_equal(ours_c2o[:2, :2], reference_c2o[:2, :2], f"{i},{j}")
            shift = _crop_centre(ours_c2o, settings.dsize) - _crop_centre(reference_c2o, settings.dsize)
            np.testing.assert_allclose(shift, row[2] * rect.side * rect.ux, atol=2e-3, err_msg=f"{i},{j}")
            assert np.linalg.norm(shift) > 0.05 * rect.side


def test_degenerate_face_axis_gives_an_upright_crop():
    """Where the eye and lip centres coincide (|uy| ≤ 1e-3) the crop is upright (θ = 0)."""
    degenerate = [pts for pts in load_golden("crop_matrices.npz")["lmk203"]
                  if np.linalg.norm(np.subtract(*eye_lip_centres(pts))) <= 1e-3]
    assert degenerate, "crop_matrices.npz has no degenerate 203-point set (README §5.1: the last one is)"
    for pts in degenerate:
        rect = crop_rectangle(pts, 2.3)
        np.testing.assert_array_equal(rect.ux, [1, 0])
        assert rect.angle == 0.0


def test_eye_lip_centres_rejects_other_layouts():
    with pytest.raises(ValueError, match="expected 106 or 203 points"):
        eye_lip_centres(np.zeros((68, 2), np.float32))


def _stored_crops(d) -> list[tuple[str, np.ndarray, CropSettings]]:
    """(name, landmarks, settings) of every crop crop_images.npz stores (README §5.1): track106 /
    track203 from lmk106 / lmk203, final{j} from lmk203 with final_params[j]."""
    crops = []
    for key in d:
        if not key.endswith("_img_crop"):
            continue
        name = key[:-len("_img_crop")]
        if name.startswith("track"):
            crops.append((name, d[f"lmk{name[len('track'):]}"], TRACKING_CROP))
        else:
            crops.append((name, d["lmk203"], _final_settings(d["final_params"][int(name[len("final"):])])))
    return crops


def test_crop_images_match_reference():
    d = load_golden("crop_images.npz")
    crops = _stored_crops(d)
    assert crops
    for name, pts, settings in crops:
        crop = crop_with(d["img"], pts, settings)
        _assert_matrices((crop.M_o2c, crop.M_c2o), d[f"{name}_M_o2c"], d[f"{name}_M_c2o"], name)
        assert crop.image.shape == (settings.dsize, settings.dsize, 3)
        assert_golden_equal(crop.image, d[f"{name}_img_crop"], name)
        # Given the golden matrix, the warp is OpenCV's: exact.
        np.testing.assert_array_equal(warp_affine(d["img"], d[f"{name}_M_o2c"], settings.dsize),
                                      d[f"{name}_img_crop"], err_msg=name)


def test_rgb256_matches_reference():
    d = load_golden("crop_images.npz")
    names = [key[:-len("_rgb256_u8")] for key in d if key.endswith("_rgb256_u8")]
    assert names
    for name in names:
        rgb256 = to_rgb256(d[f"{name}_img_crop"])
        assert rgb256.shape == (1, 3, 256, 256) and rgb256.dtype == np.float32
        np.testing.assert_array_equal(rgb256, _reference_rgb256(d[f"{name}_rgb256_u8"]), err_msg=name)


def test_warp_affine_moves_whole_pixels_and_fills_black():
    img = np.random.default_rng(1).integers(1, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(warp_affine(img, np.eye(3, dtype=np.float32), 20), img[:, :20])
    shifted = warp_affine(img, np.array([[1, 0, 5], [0, 1, -2]], np.float64), 24)  # original → crop
    np.testing.assert_array_equal(shifted[:18, 5:24], img[2:20, :19])
    assert not shifted[:, :5].any() and not shifted[18:].any()
