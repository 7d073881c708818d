"""SCRFD, landmark106/203 and source registration steps 1–3 against the golden vectors (README §5.2).

The networks are the golden README §3.4 fixed-output stubs: they return the stored raw tensors
and record what they were given, so the tests check both our pre-processing (the inputs the
stubs receive) and our post-processing (what we make of their outputs).
"""

from __future__ import annotations

import numpy as np
import pytest

from ditto_fast.contract import MODELS
from ditto_fast.stages.crop import TRACKING_CROP, crop_matrices
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

STRIDES = (8, 16, 32)


class FixedOutputStub:
    """A network that ignores its input and returns `outputs[i]` on call i, recording inputs."""

    def __init__(self, name: str, *outputs: tuple[np.ndarray, ...]) -> None:
        self.name = name
        self._outputs = outputs
        self.calls: list[dict[str, np.ndarray]] = []

    def __call__(self, **arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        expected = [t.name for t in MODELS[self.name].inputs]
        assert sorted(arrays) == expected, f"{self.name} called with {sorted(arrays)}"
        self.calls.append(arrays)
        return self._outputs[len(self.calls) - 1]

    def only_input(self) -> np.ndarray:
        assert len(self.calls) == 1, f"{self.name} called {len(self.calls)} times"
        (array,) = self.calls[0].values()
        return array


def detector_stub(d, prefix: str = "raw_") -> FixedOutputStub:
    # Contract order: scores1..3, boxes1..3, kps1..3 for strides 8, 16, 32.
    raw = tuple(d[f"{prefix}{kind}_s{s}"] for kind in ("scores", "boxes", "kps") for s in STRIDES)
    return FixedOutputStub("insightface_det", raw)


def nchw(hwc: np.ndarray) -> np.ndarray:
    return hwc.transpose(2, 0, 1)[None]


# Network-input formulas of golden README §5.2.
def detector_input(letterbox_rgb: np.ndarray) -> np.ndarray:
    return nchw((letterbox_rgb[..., ::-1].astype(np.float32) - 127.5) * (1 / 128))


def landmark106_input(crop_rgb: np.ndarray) -> np.ndarray:
    return nchw(crop_rgb[..., ::-1].astype(np.float32))


def landmark203_input(crop_rgb: np.ndarray) -> np.ndarray:
    return nchw(crop_rgb.astype(np.float32) / 255)


@pytest.fixture(scope="module")
def golden(shared_ref):
    return lambda name: np.load(shared_ref / "golden" / name)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_scrfd_matches_reference(golden, k):
    d = golden(f"det_chain_{k}.npz")
    detector = detector_stub(d)
    faces = detect_faces(d["img"], detector)
    np.testing.assert_array_equal(letterbox(d["img"]).image, d["det_input_letterbox_rgb"])
    np.testing.assert_array_equal(detector.only_input(), detector_input(d["det_input_letterbox_rgb"]))
    np.testing.assert_array_equal(faces.boxes, d["det"])
    np.testing.assert_array_equal(faces.keypoints, d["kpss"])
    np.testing.assert_array_equal(largest_face(faces.boxes), d["selected_bbox"])


@pytest.mark.parametrize("k", [0, 1, 2])
def test_detection_chain_matches_reference(golden, k):
    d = golden(f"det_chain_{k}.npz")
    lmk106_net = FixedOutputStub("landmark106", (d["lmk106_raw_fc1"],))
    lmk203_net = FixedOutputStub("landmark203", (d["lmk203_raw"],))
    face = detect_face_landmarks(d["img"], detector_stub(d), lmk106_net, lmk203_net)

    np.testing.assert_array_equal(lmk106_net.only_input(), landmark106_input(d["lmk106_input_rgb"]))
    np.testing.assert_array_equal(lmk203_net.only_input(), landmark203_input(d["lmk203_input_rgb"]))
    lmk106 = landmarks106(d["img"], d["selected_bbox"], FixedOutputStub("landmark106", (d["lmk106_raw_fc1"],)))
    np.testing.assert_array_equal(lmk106, d["lmk106"])
    np.testing.assert_array_equal(face.lmk203, d["lmk203"])
    np.testing.assert_array_equal(face.M_c2o, d["final_M_c2o"])
    assert face.img_crop.shape == (512, 512, 3) and face.img_crop.dtype == np.uint8
    if d["final_img_crop"].size:
        np.testing.assert_array_equal(face.img_crop, d["final_img_crop"])


@pytest.mark.parametrize("case", [0, 1, 2])
def test_landmark106_matches_reference(golden, case):
    d = golden("lmk106.npz")
    net = FixedOutputStub("landmark106", (d[f"case{case}_raw_fc1"],))
    lmk = landmarks106(d[f"case{case}_img"], d[f"case{case}_bbox"], net)
    np.testing.assert_array_equal(landmark106_matrix(d[f"case{case}_bbox"]), d[f"case{case}_M"])
    np.testing.assert_array_equal(net.only_input(), landmark106_input(d[f"case{case}_input_rgb"]))
    assert lmk.dtype == np.float32
    np.testing.assert_array_equal(lmk, d[f"case{case}_lmk106"])


@pytest.mark.parametrize("case", [0, 1, 2])
def test_landmark203_matches_reference(golden, case):
    d = golden("lmk203.npz")
    net = FixedOutputStub("landmark203", (d[f"case{case}_raw"],))
    lmk = landmarks203(d[f"case{case}_crop_rgb"], d[f"case{case}_M_c2o"], net)
    np.testing.assert_array_equal(net.only_input(), landmark203_input(d[f"case{case}_crop_rgb"]))
    assert lmk.dtype == np.float32
    np.testing.assert_array_equal(lmk, d[f"case{case}_lmk203"])


def test_video_frames_track_the_previous_landmarks(golden):
    """Frame 0 detects; frames 1.. place the 224 crop from the previous frame's 203 points."""
    d = golden("source_chain_video.npz")
    frames = d["frames"]
    lmk203_net = FixedOutputStub("landmark203", *[(raw,) for raw in d["lmk203_raw"]])
    lmk106_net = FixedOutputStub("landmark106", (d["lmk106_raw_fc1"],))
    faces = [detect_face_landmarks(frames[0], detector_stub(d, "det_raw_"), lmk106_net, lmk203_net)]
    for frame in frames[1:]:
        faces.append(track_face_landmarks(frame, faces[-1].lmk203, lmk203_net))

    first_box = largest_face(detect_faces(frames[0], detector_stub(d, "det_raw_")).boxes)
    lmk106 = landmarks106(frames[0], first_box, FixedOutputStub("landmark106", (d["lmk106_raw_fc1"],)))
    track_pts = [lmk106, *(face.lmk203 for face in faces[:-1])]
    np.testing.assert_array_equal(track_pts[0], d["track_pts_in_f0_lmk106"])
    np.testing.assert_array_equal(track_pts[1:], d["track_pts_in_later_lmk203"])
    for i, face in enumerate(faces):
        m_o2c, m_c2o = crop_matrices(track_pts[i], TRACKING_CROP)
        np.testing.assert_array_equal(m_o2c, d["track_M_o2c"][i], err_msg=f"frame {i}")
        np.testing.assert_array_equal(m_c2o, d["track_M_c2o"][i], err_msg=f"frame {i}")
        np.testing.assert_array_equal(face.lmk203, d["final_pts_in"][i], err_msg=f"frame {i}")
        np.testing.assert_array_equal(face.M_c2o, d["M_c2o"][i], err_msg=f"frame {i}")


def _empty_detector_outputs(best_score: float) -> tuple[np.ndarray, ...]:
    specs = MODELS["insightface_det"].outputs
    outputs = tuple(np.zeros(spec.shape, np.float32) for spec in specs)
    outputs[0][100, 0] = best_score  # one anchor just under the threshold
    return outputs


def test_no_face_raises_with_the_source_name():
    img = np.zeros((300, 260, 3), np.uint8)
    detector = FixedOutputStub("insightface_det", _empty_detector_outputs(0.49999))
    unused = FixedOutputStub("landmark106")
    with pytest.raises(NoFaceError, match=r"portrait\.png: no face found") as caught:
        detect_face_landmarks(img, detector, unused, FixedOutputStub("landmark203"), source="portrait.png")
    assert isinstance(caught.value, ValueError)
    assert unused.calls == []


def test_a_score_of_exactly_the_threshold_is_a_face():
    img = np.zeros((300, 260, 3), np.uint8)
    faces = detect_faces(img, FixedOutputStub("insightface_det", _empty_detector_outputs(0.5)))
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
