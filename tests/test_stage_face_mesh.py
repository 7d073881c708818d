"""478-landmark stage (BlazeFace + FaceMesh) and eye features against the reference goldens.

The networks are the golden README §3.4 fixed-output stubs: they return the stored raw tensors
and record what the stage handed them, so the tests check both the pre-processing (network
inputs) and the post-processing (detections, ROI, landmarks, eye features).

Golden cases: every blaze_mesh_* (README §5.2), blaze_anchors.npz, eye_info.npz (all its rows).
Tolerances: README §4 — detections and ROI 1e-3 (angle 1e-4 rad), lmk478 / eye_open / eye_ball
1e-5, the 128² resize exact, the ROI warp (our own perspective matrix) max 8 / mean 0.25, and exact
where OpenCV 4.10's arithmetic is replayed. Compared: detections, blaze_input_rgb128 (the blob
made from it), roi, mesh_input_rgb256, lmk478, eye_open, eye_ball; anchors; eye_info's eye_open
and eye_ball. Inputs: img, raw_regressors, raw_classificators, mesh_raw_identity, eye_info's lmk478.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from golden_stubs import (
    BLAZE_ATOL,
    IMAGE_MAX_DIFF,
    IMAGE_MEAN_DIFF,
    MESH_ATOL,
    ROI_ANGLE_ATOL,
    FixedOutputNetwork,
    assert_close,
    golden_files,
    load_golden,
)

from ditto_fast.stages.eyes import eye_features
from ditto_fast.stages.face_mesh import (
    NoFaceError,
    blazeface_anchors,
    detect_faces,
    face_roi,
    landmarks478,
    mesh_input,
    project_landmarks,
    weighted_nms,
)

CROP_HW = (512, 512)


def blaze_stub(case) -> FixedOutputNetwork:
    return FixedOutputNetwork((case["raw_regressors"], case["raw_classificators"]), model="blaze_face")


def mesh_stub(case) -> FixedOutputNetwork:
    small = np.zeros((1, 1), np.float32)
    return FixedOutputNetwork((case["mesh_raw_identity"], small, small), model="face_mesh")


@pytest.fixture(scope="module", params=golden_files("blaze_mesh_[0-9]*.npz"))
def case(request):
    return load_golden(request.param)


@pytest.fixture(scope="module")
def eye_info():
    return load_golden("eye_info.npz")


def golden_blaze_input(case) -> np.ndarray:
    return case["blaze_input_rgb128"][None].astype(np.float32) / 127.5 - 1


def golden_mesh_input(case) -> np.ndarray:
    return (case["mesh_input_rgb256"] / 255.0).astype(np.float32)[None]


def assert_warp_close(ours: np.ndarray, golden_u8: np.ndarray) -> None:
    """Network input (1, H, W, 3) in [0, 1] vs the golden uint8 image, README warp tolerance."""
    assert ours.dtype == np.float32 and ours.shape == (1, *golden_u8.shape)
    diff = np.abs(np.rint(ours[0] * 255).astype(int) - golden_u8)
    assert diff.max() <= IMAGE_MAX_DIFF and diff.mean() <= IMAGE_MEAN_DIFF, (diff.max(), diff.mean())


# --- BlazeFace -------------------------------------------------------------------------------


def test_anchors_equal_the_reference(reference_data):
    anchors = blazeface_anchors()
    assert anchors.dtype == np.float64
    np.testing.assert_array_equal(anchors, load_golden("blaze_anchors.npz")["anchors"])
    constants = json.loads((reference_data / "constants.json").read_text())
    np.testing.assert_array_equal(anchors[:, :2], constants["blazeface_anchors_xy_896"])
    assert np.all(anchors[:, 2:] == constants["blazeface_anchor_wh_all"])


def test_detections(case):
    network = blaze_stub(case)
    detections = detect_faces(case["img"], network)
    (call,) = network.calls
    np.testing.assert_array_equal(call["input"], golden_blaze_input(case))
    assert detections.dtype == np.float32 and detections.shape == case["detections"].shape
    assert_close(detections, case["detections"], BLAZE_ATOL, "detections")


def test_roi(case):
    roi = face_roi(case["detections"][0], CROP_HW)
    assert roi.dtype == np.float32 and roi.shape == (5,)
    assert_close(roi[:4], case["roi"][:4], BLAZE_ATOL, "roi")
    assert_close(roi[4], case["roi"][4], ROI_ANGLE_ATOL, "roi angle")


def test_no_face_raises():
    regressors = np.zeros((1, 896, 16), np.float32)
    # sigmoid(-1e-3) < 0.5 everywhere: the threshold is inclusive at exactly 0.5 only.
    classificators = np.full((1, 896, 1), -1e-3, np.float32)
    blaze = FixedOutputNetwork((regressors, classificators), model="blaze_face")
    mesh = FixedOutputNetwork((), model="face_mesh")
    with pytest.raises(NoFaceError, match="no face"):
        landmarks478(np.zeros((512, 512, 3), np.uint8), blaze, mesh)
    assert mesh.calls == []


def test_score_of_exactly_one_half_is_kept():
    classificators = np.full((1, 896, 1), -5.0, np.float32)
    classificators[0, 100, 0] = 0.0
    blaze = FixedOutputNetwork((np.zeros((1, 896, 16), np.float32), classificators), model="blaze_face")
    detections = detect_faces(np.zeros((512, 512, 3), np.uint8), blaze)
    assert detections.shape == (1, 17) and detections[0, 16] == 0.5


def test_overlapping_candidates_blend_and_distant_ones_stay():
    candidates = np.zeros((3, 17), np.float32)
    candidates[0, :4], candidates[0, 16] = [0, 0, 10, 10], 0.75
    candidates[1, :4], candidates[1, 16] = [0, 0, 10, 4], 0.625  # IoU 0.4 with the first: blended
    candidates[2, :4], candidates[2, 16] = [50, 50, 60, 60], 0.875  # disjoint: its own face
    detections = weighted_nms(candidates)
    assert detections.shape == (2, 17)
    np.testing.assert_array_equal(detections[0], candidates[2])
    np.testing.assert_allclose(detections[1, :4], [0, 0, 10, (10 * 0.75 + 4 * 0.625) / 1.375], rtol=1e-6)
    assert detections[1, 16] == np.float32(1.375 / 2)


def test_empty_candidate_boxes_do_not_stall_suppression():
    candidates = np.zeros((2, 17), np.float32)  # zero-area boxes: IoU with themselves is NaN
    candidates[:, 16] = [0.625, 0.75]
    detections = weighted_nms(candidates)
    np.testing.assert_array_equal(detections[:, 16], [0.75, 0.625])


def test_wrong_network_output_shape_is_named():
    blaze = FixedOutputNetwork((np.zeros((1, 896, 12), np.float32), np.zeros((1, 896, 1))), model="blaze_face")
    with pytest.raises(ValueError, match="regressors"):
        detect_faces(np.zeros((512, 512, 3), np.uint8), blaze)


# --- FaceMesh ----------------------------------------------------------------------------------


def opencv410_warp_perspective_linear(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """OpenCV 4.10's warpPerspective (bilinear, constant-0 border) on uint8, in NumPy.

    The golden warps come from OpenCV 4.10, which maps every destination pixel in 64-px row
    blocks, rounds the source position to 1/32 px and blends with 15-bit integer weights;
    newer OpenCV interpolates differently. Replaying that arithmetic checks the warp geometry
    (the ROI quad handed to OpenCV) bit for bit, whatever OpenCV is installed.
    """
    inverse = np.linalg.inv(matrix).ravel()
    ys, xs = np.mgrid[0:size, 0:size]
    block_x = xs // 64 * 64
    step = xs - block_x
    x0 = inverse[0] * block_x + inverse[1] * ys + inverse[2]
    y0 = inverse[3] * block_x + inverse[4] * ys + inverse[5]
    w0 = inverse[6] * block_x + inverse[7] * ys + inverse[8]
    w = w0 + inverse[6] * step
    w = np.where(w != 0, 32.0 / np.where(w != 0, w, 1), 0)
    fixed_x = np.rint((x0 + inverse[0] * step) * w).astype(np.int64)
    fixed_y = np.rint((y0 + inverse[3] * step) * w).astype(np.int64)
    sx, sy, ax, ay = fixed_x >> 5, fixed_y >> 5, fixed_x & 31, fixed_y & 31
    height, width = image.shape[:2]
    total = np.zeros((size, size, image.shape[2]), np.int64)
    for dx, dy, weight in (
        (0, 0, (32 - ax) * (32 - ay)),
        (1, 0, ax * (32 - ay)),
        (0, 1, (32 - ax) * ay),
        (1, 1, ax * ay),
    ):
        px, py = sx + dx, sy + dy
        inside = (px >= 0) & (px < width) & (py >= 0) & (py < height)
        pixel = image[np.clip(py, 0, height - 1), np.clip(px, 0, width - 1)].astype(np.int64)
        total += np.where(inside[..., None], pixel, 0) * (32 * weight)[..., None]
    return ((total + (1 << 14)) >> 15).astype(np.uint8)


def test_mesh_input_geometry_is_exact(case, monkeypatch):
    matrices = []
    warp = cv2.warpPerspective

    def recording_warp(image, matrix, *args, **kwargs):
        matrices.append(matrix)
        return warp(image, matrix, *args, **kwargs)

    monkeypatch.setattr(cv2, "warpPerspective", recording_warp)
    mesh_input(case["img"], case["roi"])
    (matrix,) = matrices
    replayed = opencv410_warp_perspective_linear(case["img"], matrix, 256)
    np.testing.assert_array_equal(replayed, case["mesh_input_rgb256"])


def test_mesh_input_with_installed_opencv(case):
    assert_warp_close(mesh_input(case["img"], case["roi"]), case["mesh_input_rgb256"])


def test_projection(case):
    landmarks = project_landmarks(case["mesh_raw_identity"], case["roi"], CROP_HW)
    assert landmarks.dtype == np.float32 and landmarks.shape == (1, 478, 3)
    assert_close(landmarks, case["lmk478"], MESH_ATOL, "lmk478")


def test_landmarks478_end_to_end(case):
    blaze, mesh = blaze_stub(case), mesh_stub(case)
    landmarks = landmarks478(case["img"], blaze, mesh)
    np.testing.assert_array_equal(blaze.calls[0]["input"], golden_blaze_input(case))
    assert_warp_close(mesh.calls[0]["input"], case["mesh_input_rgb256"])
    assert_close(landmarks, case["lmk478"], MESH_ATOL, "lmk478")

    eye_open, eye_ball = eye_features(landmarks)
    assert_close(eye_open, case["eye_open"], MESH_ATOL, "eye_open")
    assert_close(eye_ball, case["eye_ball"], MESH_ATOL, "eye_ball")


def test_identity_of_wrong_size_is_named(case):
    with pytest.raises(ValueError, match="Identity"):
        project_landmarks(np.zeros((1, 1404), np.float32), case["roi"], CROP_HW)


# --- eye features ------------------------------------------------------------------------------


def test_eye_features_all_rows(eye_info):
    eye_open, eye_ball = eye_features(eye_info["lmk478"])
    assert eye_open.dtype == eye_ball.dtype == np.float32
    assert_close(eye_open, eye_info["eye_open"], MESH_ATOL, "eye_open")
    assert_close(eye_ball, eye_info["eye_ball"], MESH_ATOL, "eye_ball")


def test_eye_features_batch_rows_equal_single_calls(eye_info):
    batch_open, batch_ball = eye_features(eye_info["lmk478"])
    for row, landmarks in enumerate(eye_info["lmk478"]):
        single_open, single_ball = eye_features(landmarks[None])
        assert single_open.shape == (1, 2) and single_ball.shape == (1, 6)
        np.testing.assert_array_equal(single_open[0], batch_open[row])
        np.testing.assert_array_equal(single_ball[0], batch_ball[row])


def test_eye_ball_is_interleaved_left_right():
    landmarks = np.zeros((1, 478, 3), np.float32)
    # Dyadic coordinates keep the float32 arithmetic exact.
    landmarks[0, 133] = [0.25, 0.5, 0.0]  # left eye inner corner
    landmarks[0, 33] = [0.125, 0.5, 0.0]  # left eye outer corner
    landmarks[0, 468] = [0.1875, 0.5, 0.125]  # left iris: straight out of the image
    landmarks[0, 362], landmarks[0, 263] = [0.5, 0.5, 0.0], [0.75, 0.5, 0.0]
    landmarks[0, 473] = [0.625, 0.5, 0.0]  # right iris: centred
    _, eye_ball = eye_features(landmarks)
    # Left move = (unit(0, 0, 1) − unit(−1, 0, 0)) · 0.125 = (0.125, 0, 0.125); right move = 0.
    np.testing.assert_allclose(eye_ball[0], [0.125, 0, 0, 0, 0.125, 0], atol=1e-7)


def test_eye_features_reject_wrong_shape():
    with pytest.raises(ValueError, match="478"):
        eye_features(np.zeros((1, 468, 3), np.float32))
