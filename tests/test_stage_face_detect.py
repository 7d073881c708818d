"""SCRFD, landmark106/203 and source registration steps 1–3 against the golden vectors (README §5.2).

The networks are the golden README §3.4 fixed-output stubs: they return the stored raw tensors
and record what they were given, so the tests check both our pre-processing (the inputs the
stubs receive) and our post-processing (what we make of their outputs).

Golden cases: every det_chain_*, every case of lmk106.npz and lmk203.npz, source_chain_image.npz
(landmarks and crop) and source_chain_video.npz (detect, then track). Every comparison is
bit-exact, as the committed tests required: the network inputs (the blobs of README §5.2's
formulas), detections, landmarks, crop matrices and crops (README §4 would allow 1e-3 px for
detections and landmarks, its crop-matrix rule, and max 8 / mean 0.25 for crops warped with our
own matrix). Compared:
- det_chain_*: det_input_letterbox_rgb (and the detector blob made from it), det, kpss,
  selected_bbox, lmk106_input_rgb, lmk106, lmk203_input_rgb, lmk203, final_M_c2o, final_img_crop
  (stored for some chains only: empty elsewhere). Inputs: raw_*, img, lmk106_raw_fc1, lmk203_raw.
- lmk106: case{i}_M, case{i}_input_rgb, case{i}_lmk106. Inputs: case{i}_img, _bbox, _raw_fc1.
- lmk203: case{i}_lmk203 and the blob made from case{i}_crop_rgb. Inputs: _crop_rgb, _M_c2o, _raw.
- source_chain_image: lmk203, M_c2o (the rest in test_stage_register.py).
- source_chain_video: track_pts_in_f0_lmk106, track_pts_in_later_lmk203, track_M_o2c,
  track_M_c2o, final_pts_in, final_M_o2c, M_c2o. Inputs: frames, det_raw_*, lmk106_raw_fc1,
  lmk203_raw; the rest is compared in test_stage_register.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from golden_stubs import (
    FixedOutputNetwork,
    assert_golden_equal,
    detector_outputs,
    golden_cases,
    golden_files,
    load_golden,
)

from ditto_fast.contract import MODELS
from ditto_fast.options import resolve_options
from ditto_fast.stages.crop import TRACKING_CROP, crop_matrices, final_crop_settings
from ditto_fast.stages.face_detect import (
    NoFaceError,
    detect_face_landmarks,
    detect_faces,
    landmark106_matrix,
    landmarks106,
    landmarks203,
    largest_face,
    letterbox,
    nms,
    track_face_landmarks,
)

DET_CHAINS = golden_files("det_chain_[0-9]*.npz")


def stub(model: str, *outputs: tuple[np.ndarray, ...]) -> FixedOutputNetwork:
    """A contract-checked fixed-output stub returning outputs[i] on call i."""
    return FixedOutputNetwork(outputs, per_call=True, model=model)


def detector_stub(d, prefix: str = "raw_") -> FixedOutputNetwork:
    return stub("insightface_det", detector_outputs(d, prefix))


def default_final_crop():
    """The final crop of the reference's default crop kwargs (the render options' defaults)."""
    o = resolve_options()
    return final_crop_settings(o.crop_scale, o.crop_vx_ratio, o.crop_vy_ratio, o.crop_flag_do_rot)


def nchw(hwc: np.ndarray) -> np.ndarray:
    return hwc.transpose(2, 0, 1)[None]


# Network-input formulas of golden README §5.2.
def detector_input(letterbox_rgb: np.ndarray) -> np.ndarray:
    return nchw((letterbox_rgb[..., ::-1].astype(np.float32) - 127.5) * (1 / 128))


def landmark106_input(crop_rgb: np.ndarray) -> np.ndarray:
    return nchw(crop_rgb[..., ::-1].astype(np.float32))


def landmark203_input(crop_rgb: np.ndarray) -> np.ndarray:
    return nchw(crop_rgb.astype(np.float32) / 255)


@pytest.mark.parametrize("path", DET_CHAINS)
def test_scrfd_matches_reference(path):
    d = load_golden(path)
    detector = detector_stub(d)
    faces = detect_faces(d["img"], detector)
    assert_golden_equal(letterbox(d["img"]).image, d["det_input_letterbox_rgb"], "letterbox")
    assert_golden_equal(detector.only_input(), detector_input(d["det_input_letterbox_rgb"]), "detector input")
    assert_golden_equal(faces.boxes, d["det"], "det")
    assert_golden_equal(faces.keypoints, d["kpss"], "kpss")
    assert_golden_equal(largest_face(faces.boxes), d["selected_bbox"], "selected_bbox")


@pytest.mark.parametrize("path", DET_CHAINS)
def test_detection_chain_matches_reference(path):
    d = load_golden(path)
    lmk106_net = stub("landmark106", (d["lmk106_raw_fc1"],))
    lmk203_net = stub("landmark203", (d["lmk203_raw"],))
    face = detect_face_landmarks(d["img"], detector_stub(d), lmk106_net, lmk203_net, default_final_crop())

    assert_golden_equal(lmk106_net.only_input(), landmark106_input(d["lmk106_input_rgb"]), "lmk106 input")
    assert_golden_equal(lmk203_net.only_input(), landmark203_input(d["lmk203_input_rgb"]), "lmk203 input")
    lmk106 = landmarks106(d["img"], d["selected_bbox"], stub("landmark106", (d["lmk106_raw_fc1"],)))
    assert_golden_equal(lmk106, d["lmk106"], "lmk106")
    assert_golden_equal(face.lmk203, d["lmk203"], "lmk203")
    assert_golden_equal(face.M_c2o, d["final_M_c2o"], "final_M_c2o")
    assert face.img_crop.shape == (512, 512, 3) and face.img_crop.dtype == np.uint8
    if d["final_img_crop"].size:
        assert_golden_equal(face.img_crop, d["final_img_crop"], "final_img_crop")


@pytest.mark.parametrize(("path", "case"), golden_cases("lmk106*.npz", "case"))
def test_landmark106_matches_reference(path, case):
    d = load_golden(path)
    net = stub("landmark106", (d[f"case{case}_raw_fc1"],))
    lmk = landmarks106(d[f"case{case}_img"], d[f"case{case}_bbox"], net)
    assert_golden_equal(landmark106_matrix(d[f"case{case}_bbox"]), d[f"case{case}_M"], "M")
    assert_golden_equal(net.only_input(), landmark106_input(d[f"case{case}_input_rgb"]), "input")
    assert lmk.dtype == np.float32
    assert_golden_equal(lmk, d[f"case{case}_lmk106"], "lmk106")


@pytest.mark.parametrize(("path", "case"), golden_cases("lmk203*.npz", "case"))
def test_landmark203_matches_reference(path, case):
    d = load_golden(path)
    net = stub("landmark203", (d[f"case{case}_raw"],))
    lmk = landmarks203(d[f"case{case}_crop_rgb"], d[f"case{case}_M_c2o"], net)
    assert_golden_equal(net.only_input(), landmark203_input(d[f"case{case}_crop_rgb"]), "input")
    assert lmk.dtype == np.float32
    assert_golden_equal(lmk, d[f"case{case}_lmk203"], "lmk203")


def test_image_chain_landmarks_match_reference():
    d = load_golden("source_chain_image.npz")
    face = detect_face_landmarks(d["img"], detector_stub(d), stub("landmark106", (d["lmk106_raw_fc1"],)),
                                 stub("landmark203", (d["lmk203_raw"],)), default_final_crop())
    assert_golden_equal(face.lmk203, d["lmk203"], "lmk203")
    assert_golden_equal(face.M_c2o, d["M_c2o"], "M_c2o")


def test_video_frames_track_the_previous_landmarks():
    """Frame 0 detects; frames 1.. place the 224 crop from the previous frame's 203 points."""
    d = load_golden("source_chain_video.npz")
    frames = d["frames"]
    final = default_final_crop()
    lmk203_net = stub("landmark203", *[(raw,) for raw in d["lmk203_raw"]])
    lmk106_net = stub("landmark106", (d["lmk106_raw_fc1"],))
    faces = [detect_face_landmarks(frames[0], detector_stub(d, "det_raw_"), lmk106_net, lmk203_net, final)]
    for frame in frames[1:]:
        faces.append(track_face_landmarks(frame, faces[-1].lmk203, lmk203_net, final))
    assert len(lmk203_net.calls) == len(frames)

    first_box = largest_face(detect_faces(frames[0], detector_stub(d, "det_raw_")).boxes)
    lmk106 = landmarks106(frames[0], first_box, stub("landmark106", (d["lmk106_raw_fc1"],)))
    track_pts = [lmk106, *(face.lmk203 for face in faces[:-1])]
    assert_golden_equal(track_pts[0], d["track_pts_in_f0_lmk106"], "frame 0 tracking points")
    assert_golden_equal(track_pts[1:], d["track_pts_in_later_lmk203"], "later tracking points")
    for i, face in enumerate(faces):
        what = f"frame {i}"
        m_o2c, m_c2o = crop_matrices(track_pts[i], TRACKING_CROP)
        assert_golden_equal(m_o2c, d["track_M_o2c"][i], f"{what} track_M_o2c")
        assert_golden_equal(m_c2o, d["track_M_c2o"][i], f"{what} track_M_c2o")
        assert_golden_equal(face.lmk203, d["final_pts_in"][i], f"{what} lmk203")
        assert_golden_equal(face.M_c2o, d["M_c2o"][i], f"{what} M_c2o")
        # The final crop of the reference's own 203 points.
        m_o2c, m_c2o = crop_matrices(d["final_pts_in"][i], final)
        assert_golden_equal(m_o2c, d["final_M_o2c"][i], f"{what} final_M_o2c")
        assert_golden_equal(m_c2o, d["M_c2o"][i], f"{what} final M_c2o")


def _empty_detector_outputs(best_score: float) -> tuple[np.ndarray, ...]:
    specs = MODELS["insightface_det"].outputs
    outputs = tuple(np.zeros(spec.shape, np.float32) for spec in specs)
    outputs[0][100, 0] = best_score  # one anchor just under the threshold
    return outputs


def test_no_face_raises_with_the_source_name():
    img = np.zeros((300, 260, 3), np.uint8)
    detector = stub("insightface_det", _empty_detector_outputs(0.49999))
    unused = stub("landmark106")
    with pytest.raises(NoFaceError, match=r"portrait\.png: no face found") as caught:
        detect_face_landmarks(img, detector, unused, stub("landmark203"), source="portrait.png")
    assert isinstance(caught.value, ValueError)
    assert unused.calls == []


def test_a_score_of_exactly_the_threshold_is_a_face():
    img = np.zeros((300, 260, 3), np.uint8)
    faces = detect_faces(img, stub("insightface_det", _empty_detector_outputs(0.5)))
    assert len(faces.boxes) == 1 and faces.boxes[0, 4] == 0.5


def test_nms_counts_end_pixels_and_keeps_an_iou_of_exactly_the_threshold():
    dets = np.array(
        [
            [0, 0, 9, 9, 0.9],  # area 10·10 with the +1 convention
            [0, 0, 9, 3.5, 0.8],  # IoU 45/100 > 0.4: dropped (81 vs 31.5 px² without the +1: kept)
            [0, 0, 9, 3, 0.7],  # IoU 40/100, exactly the threshold: kept
            [50, 50, 60, 60, 0.6],  # no overlap: kept
        ],
        np.float32,
    )
    np.testing.assert_array_equal(nms(dets), [0, 2, 3])
