"""Face detection and landmarks for source registration (DITTO_SPEC §4.8–4.10, §5.3 steps 1–3).

SCRFD finds the faces, the largest one gets 106 landmarks, a 224² crop around those gets 203
landmarks, and the 203 landmarks place the final 512² crop. Later video frames skip detection
and place the 224² crop from the previous frame's 203 landmarks ("tracking").

Pre- and post-processing follow the reference's float32 arithmetic, so with the same network
outputs the landmarks and matrices match the reference bit for bit.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import cv2
import numpy as np

from ditto_fast.backends.base import Network
from ditto_fast.stages.crop import (
    DEFAULT_FINAL_CROP,
    TRACKING_CROP,
    CropSettings,
    crop_with,
    transform_points,
    warp_affine,
)

_F32 = np.float32

DETECTOR_SIZE = 512
_STRIDES = (8, 16, 32)
_ANCHORS_PER_CELL = 2
SCORE_THRESHOLD = 0.5
NMS_IOU_THRESHOLD = 0.4
_DETECTOR_MEAN, _DETECTOR_STD = 127.5, 128.0

LANDMARK106_SIZE = 192
# The 106-point net sees the detection box enlarged by this factor.
_LANDMARK106_BOX_SCALE = 1.5


class NoFaceError(ValueError):
    """The detector found no face (no score ≥ SCORE_THRESHOLD) in a source frame."""

    def __init__(self, source: str | None = None) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}no face found (no detection scored >= {SCORE_THRESHOLD})")
        self.source = source


class FaceDetections(NamedTuple):
    boxes: np.ndarray  # (n, 5) float32 [x1, y1, x2, y2, score], frame pixels, best score first
    keypoints: np.ndarray  # (n, 5, 2) float32


class Letterbox(NamedTuple):
    image: np.ndarray  # (512, 512, 3) uint8: the resized frame at the top-left, black elsewhere
    scale: float  # letterbox pixels per frame pixel


class FaceCrop(NamedTuple):
    lmk203: np.ndarray  # (203, 2) float32, frame pixels
    img_crop: np.ndarray  # (512, 512, 3) uint8, the final crop
    M_c2o: np.ndarray  # (3, 3) float32, final crop → frame


def _nchw(hwc: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(hwc.transpose(2, 0, 1)[None])


def _as_bgr_float(rgb: np.ndarray) -> np.ndarray:
    # The reference hands RGB frames to nets that were trained on BGR with a channel swap,
    # so they do see BGR.
    return rgb[..., ::-1].astype(_F32)


# ---------------------------------------------------------------------------------- SCRFD


def letterbox(img: np.ndarray) -> Letterbox:
    """The frame scaled (cv2 bilinear) so its long side is 512, on a black 512² canvas."""
    h, w = img.shape[:2]
    ratio = h / w
    if ratio > 1:
        new_h, new_w = DETECTOR_SIZE, int(DETECTOR_SIZE / ratio)
    else:
        new_h, new_w = int(DETECTOR_SIZE * ratio), DETECTOR_SIZE
    if new_h == 0 or new_w == 0:
        raise ValueError(f"a {h}x{w} frame is too narrow for face detection")
    canvas = np.zeros((DETECTOR_SIZE, DETECTOR_SIZE, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return Letterbox(canvas, new_h / h)


def detector_blob(canvas: np.ndarray) -> np.ndarray:
    """The SCRFD input (1, 3, 512, 512) float32 of a letterbox canvas."""
    return _nchw((_as_bgr_float(canvas) - _F32(_DETECTOR_MEAN)) * _F32(1 / _DETECTOR_STD))


@functools.cache
def _anchor_centres(stride: int) -> np.ndarray:
    """(cells·2, 2) float32 anchor centres: row-major cells, each cell's anchors consecutive."""
    cells = DETECTOR_SIZE // stride
    ys, xs = np.mgrid[:cells, :cells]
    centres = (np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride).astype(_F32)
    return np.repeat(centres, _ANCHORS_PER_CELL, axis=0)


def _decode_level(
    scores: np.ndarray, distances: np.ndarray, kps: np.ndarray, stride: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores (k,), boxes (k, 4), keypoints (k, 5, 2) of one stride's anchors scoring ≥ 0.5."""
    keep = scores[:, 0] >= SCORE_THRESHOLD
    centres = _anchor_centres(stride)[keep]
    distances = distances[keep] * _F32(stride)
    boxes = np.concatenate([centres - distances[:, :2], centres + distances[:, 2:]], axis=1)
    points = centres[:, None, :] + (kps[keep] * _F32(stride)).reshape(-1, 5, 2)
    return scores[keep, 0], boxes, points


def nms(dets: np.ndarray, iou_threshold: float = NMS_IOU_THRESHOLD) -> np.ndarray:
    """Indices greedy NMS keeps from `dets` (n, ≥4) float32 boxes sorted best first.

    Box sides count both end pixels (x2 − x1 + 1), as the reference's areas do."""
    x1, y1, x2, y2 = dets[:, :4].T
    one = _F32(1)
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    order = np.arange(len(dets))
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        overlap_w = np.maximum(_F32(0), np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + one)
        overlap_h = np.maximum(_F32(0), np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + one)
        inter = overlap_w * overlap_h
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[iou <= _F32(iou_threshold)]
    return np.array(keep, dtype=np.int64)


def detect_faces(img: np.ndarray, detector: Network) -> FaceDetections:
    """Every face SCRFD finds in an RGB uint8 frame, after NMS, in frame pixels."""
    box = letterbox(img)
    outputs = detector(image=detector_blob(box.image))
    levels = len(_STRIDES)
    decoded = [
        _decode_level(outputs[i], outputs[i + levels], outputs[i + 2 * levels], stride)
        for i, stride in enumerate(_STRIDES)
    ]
    scores, boxes, points = (np.concatenate(parts) for parts in zip(*decoded))
    # Division by the float32-rounded scale, as the reference's float32 arrays do.
    scale = _F32(box.scale)
    order = np.argsort(-scores, kind="stable")
    dets = np.concatenate([boxes / scale, scores[:, None]], axis=1)[order]
    keep = nms(dets)
    return FaceDetections(dets[keep], (points / scale)[order][keep])


def largest_face(boxes: np.ndarray) -> np.ndarray:
    """The box (row of `FaceDetections.boxes`) with the largest area; the first on ties."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return boxes[int(np.argmax(areas))]


# ------------------------------------------------------------------------- landmark nets


def landmark106_matrix(bbox: np.ndarray) -> np.ndarray:
    """The 2×3 float64 frame → 192² input similarity for a box [x1, y1, x2, y2, ...]."""
    x1, y1, x2, y2 = np.asarray(bbox[:4], dtype=_F32)
    half = LANDMARK106_SIZE / 2
    # float32 throughout, then float64 for the matrix: the reference's mix.
    scale = _F32(LANDMARK106_SIZE) / (max(x2 - x1, y2 - y1) * _F32(_LANDMARK106_BOX_SCALE))
    cx, cy = (x2 + x1) / _F32(2), (y2 + y1) / _F32(2)
    return np.array(
        [[scale, 0, half - float(cx * scale)], [0, scale, half - float(cy * scale)]],
        dtype=np.float64,
    )


def landmarks106(img: np.ndarray, bbox: np.ndarray, landmark106: Network) -> np.ndarray:
    """(106, 2) float32 landmarks in frame pixels for the face in `bbox`."""
    m = landmark106_matrix(bbox)
    crop = warp_affine(img, m, LANDMARK106_SIZE)
    (raw,) = landmark106(data=_nchw(_as_bgr_float(crop)))
    half = _F32(LANDMARK106_SIZE // 2)
    in_crop = (raw[0].reshape(-1, 2) + _F32(1)) * half
    # Mapped back in float64 (the reference's per-point float64 dot), stored as float32.
    homogeneous = np.concatenate([in_crop, np.ones((len(in_crop), 1), _F32)], axis=1)
    return (homogeneous @ cv2.invertAffineTransform(m).T).astype(_F32)


def landmarks203(crop: np.ndarray, m_c2o: np.ndarray, landmark203: Network) -> np.ndarray:
    """(203, 2) float32 landmarks in frame pixels from the 224² tracking crop and its M_c2o."""
    (raw,) = landmark203(input=_nchw(crop.astype(_F32) / _F32(255)))
    in_crop = raw[0].reshape(-1, 2) * _F32(crop.shape[0])
    return transform_points(in_crop, m_c2o)


# --------------------------------------------------------------------------- registration


def track_face_landmarks(
    img: np.ndarray,
    track_pts: np.ndarray,
    landmark203: Network,
    final_crop: CropSettings = DEFAULT_FINAL_CROP,
) -> FaceCrop:
    """§5.3 steps 2–3: the 224² crop around `track_pts` (106 detected points, or the previous
    video frame's 203 points), 203 landmarks from it, and the final crop they place."""
    tracking = crop_with(img, track_pts, TRACKING_CROP)
    lmk203 = landmarks203(tracking.image, tracking.M_c2o, landmark203)
    final = crop_with(img, lmk203, final_crop)
    return FaceCrop(lmk203, final.image, final.M_c2o)


def detect_face_landmarks(
    img: np.ndarray,
    detector: Network,
    landmark106: Network,
    landmark203: Network,
    final_crop: CropSettings = DEFAULT_FINAL_CROP,
    source: str | None = None,
) -> FaceCrop:
    """§5.3 steps 1–3 for an image or a video's first frame (RGB uint8).

    Raises `NoFaceError` (naming `source` when given) if the detector finds no face."""
    faces = detect_faces(img, detector)
    if len(faces.boxes) == 0:
        raise NoFaceError(source)
    lmk106 = landmarks106(img, largest_face(faces.boxes), landmark106)
    return track_face_landmarks(img, lmk106, landmark203, final_crop)
