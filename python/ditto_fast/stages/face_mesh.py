"""478 face landmarks on the 512² source crop: BlazeFace (short range) finds the face,
FaceMesh places the landmarks inside a rotated square around it.

The arithmetic follows the reference wrappers step for step, dtypes included (float32
detections and ROI, float64 where the reference promoted), so the results match its goldens
to the last bit or within a few float32 ulps.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ditto_fast.backends.base import Network
from ditto_fast.stages.face_detect import NoFaceError

BLAZE_SIZE = 128  # BlazeFace input side; also its coordinate scale
MESH_SIZE = 256  # FaceMesh input side; its landmarks come in pixels of this square
NUM_LANDMARKS = 478

# Anchor grids of the short-range model: (cells per side, anchors per cell). Strides
# [8, 16, 16, 16] on 128 px; the three stride-16 layers share one grid, two anchors each.
_ANCHOR_GRIDS = ((16, 2), (8, 6))
_NUM_ANCHORS = 896
_NUM_COORDS = 16  # box (4) + 6 keypoints (x, y)
_SCORE_COLUMN = _NUM_COORDS
_MIN_SCORE = 0.5
_MIN_SUPPRESSION_IOU = 0.3
_LOGIT_RANGE = (-50, 100)  # clipped before the sigmoid so exp() cannot overflow
_ROI_SCALE = 1.5


def blazeface_anchors() -> np.ndarray:
    """The 896 anchors as (896, 4) float64 rows [x_centre, y_centre, w, h], w = h = 1.

    Row-major over (y, x) per grid; the anchors of one cell are consecutive.
    """
    rows = []
    for cells, per_cell in _ANCHOR_GRIDS:
        centres = (np.arange(cells, dtype=np.float64) + 0.5) / cells
        ys, xs = np.meshgrid(centres, centres, indexing="ij")
        xy = np.repeat(np.stack([xs.ravel(), ys.ravel()], axis=1), per_cell, axis=0)
        rows.append(np.concatenate([xy, np.ones_like(xy)], axis=1))
    anchors = np.concatenate(rows)
    assert anchors.shape == (_NUM_ANCHORS, 4)
    return anchors


def blazeface_input(crop: np.ndarray) -> np.ndarray:
    """The (1, 128, 128, 3) float32 NHWC BlazeFace input of an RGB uint8 image, in [-1, 1]."""
    small = cv2.resize(crop, (BLAZE_SIZE, BLAZE_SIZE), interpolation=cv2.INTER_LINEAR)
    return small[None].astype(np.float32) / 127.5 - 1.0


def decode_candidates(regressors: np.ndarray, classificators: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Decode the raw BlazeFace outputs into (n, 17) float32 candidates with score ≥ 0.5.

    Columns: box (xmin, ymin, xmax, ymax) in pixels of the 128 input, six keypoints (x, y)
    normalised to [0, 1], score. The reference decodes in float64 (the anchors are float64)
    and stores float32.
    """
    _check_shape("blaze_face output regressors", regressors, (1, _NUM_ANCHORS, _NUM_COORDS))
    _check_shape("blaze_face output classificators", classificators, (1, _NUM_ANCHORS, 1))
    raw = regressors[0].astype(np.float32) / np.float32(BLAZE_SIZE)
    anchor_xy, anchor_wh = anchors[:, 0:2], anchors[:, 2:4]

    centre = raw[:, 0:2] * anchor_wh + anchor_xy
    half_size = raw[:, 2:4] * anchor_wh / 2.0
    decoded = np.empty((_NUM_ANCHORS, _NUM_COORDS + 1), dtype=np.float32)
    decoded[:, 0:2] = BLAZE_SIZE * (centre - half_size)
    decoded[:, 2:4] = BLAZE_SIZE * (centre + half_size)
    keypoints = raw[:, 4:].reshape(_NUM_ANCHORS, -1, 2)
    decoded[:, 4:_NUM_COORDS] = (keypoints * anchor_wh[:, None] + anchor_xy[:, None]).reshape(_NUM_ANCHORS, -1)

    logits = np.clip(classificators[0, :, 0].astype(np.float32), *_LOGIT_RANGE)
    decoded[:, _SCORE_COLUMN] = 1 / (1 + np.exp(-logits))
    return decoded[decoded[:, _SCORE_COLUMN] >= _MIN_SCORE]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (xmin, ymin, xmax, ymax) box with each of `boxes`, in float32, areas w·h."""
    low = np.maximum(box[:2], boxes[:, :2])
    high = np.minimum(box[2:], boxes[:, 2:])
    sides = np.clip(high - low, 0, None)
    intersection = sides[:, 0] * sides[:, 1]
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return intersection / (area + areas - intersection)


def weighted_nms(candidates: np.ndarray) -> np.ndarray:
    """BlazeFace's blending suppression over (n, 17) candidates → (m, 17) float32 detections.

    The best remaining candidate and every remaining one overlapping it with IoU > 0.3 form a
    group; a group of several becomes their score-weighted mean with the mean score.
    """
    scores = candidates[:, _SCORE_COLUMN]
    # Descending by score; ties go to the higher index, as the reference's reversed
    # ascending argsort orders them (it is stable for the few candidates a face yields).
    remaining = np.argsort(scores, kind="stable")[::-1]
    detections = []
    while remaining.size:
        best = candidates[remaining[0]]
        in_group = _iou(best[:4], candidates[remaining, :4]) > _MIN_SUPPRESSION_IOU
        # A degenerate (empty) best box has IoU NaN with itself; it still forms its own
        # group, where the reference would loop forever.
        in_group[0] = True
        group, remaining = remaining[in_group], remaining[~in_group]
        detection = best.copy()
        if group.size > 1:
            weights = candidates[group, _SCORE_COLUMN]
            total = weights.sum()
            weighted = (candidates[group, :_NUM_COORDS] * weights[:, None]).sum(axis=0)
            detection[:_NUM_COORDS] = weighted / total
            detection[_SCORE_COLUMN] = total / group.size
        detections.append(detection)
    return np.array(detections, dtype=np.float32).reshape(-1, _NUM_COORDS + 1)


def detect_faces(crop: np.ndarray, blaze_face: Network) -> np.ndarray:
    """Run BlazeFace on an RGB uint8 image → (n, 17) float32 detections, best first; n may be 0."""
    regressors, classificators = blaze_face(input=blazeface_input(crop))[:2]
    return weighted_nms(decode_candidates(regressors, classificators, blazeface_anchors()))


def face_roi(detection: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """The square FaceMesh ROI of a detection: (5,) float32 [cx, cy, w, h, rotation].

    The box is scaled from the 128 input to the image, enlarged 1.5× around its centre on its
    longer side, and turned so the eye keypoints (0, 1) lie level; the angle is wrapped into
    [-π, π). Everything is float32, as in the reference, whose detection row is float32.
    (The reference scales index 0 by H/128 and index 1 by W/128; for the square crops it is
    given the two orders agree, and this uses the geometric one.)
    """
    height, width = image_hw
    to_image = np.array([width, height, width, height], dtype=np.float32) / np.float32(BLAZE_SIZE)
    xmin, ymin, xmax, ymax = detection[:4].astype(np.float32) * to_image
    size = max(xmax - xmin, ymax - ymin) * np.float32(_ROI_SCALE)
    centre_x, centre_y = (xmin + xmax) / np.float32(2), (ymin + ymax) / np.float32(2)
    x0, y0, x1, y1 = detection[4:8].astype(np.float32)
    angle = -np.arctan2(y0 - y1, x1 - x0)
    two_pi = np.float32(2 * math.pi)
    rotation = angle - two_pi * np.floor((angle + np.float32(math.pi)) / two_pi)
    return np.array([centre_x, centre_y, size, size, rotation], dtype=np.float32)


def mesh_input(crop: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """The (1, 256, 256, 3) float32 NHWC FaceMesh input: the rotated ROI warped to 256², /255."""
    centre_x, centre_y, width, height, rotation = roi.astype(np.float32)
    centre = np.array([centre_x, centre_y], dtype=np.float32)
    half = np.array([width, height], dtype=np.float32) / np.float32(2)
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float32)
    # The reference forms the corners first and then subtracts the centre again, in float32;
    # that rounding moves the warp by a float32 ulp, so it is kept.
    offsets = (centre + signs * half) - centre
    # Row vectors times [[c, s], [-s, c]]: the corners turn by +rotation in image axes.
    sin, cos = np.sin(rotation), np.cos(rotation)
    turn = np.array([[cos, sin], [-sin, cos]], dtype=np.float32)
    source = offsets @ turn + centre
    target = np.array([[0, 0], [MESH_SIZE, 0], [MESH_SIZE, MESH_SIZE], [0, MESH_SIZE]], np.float32)
    matrix = cv2.getPerspectiveTransform(source, target)
    warped = cv2.warpPerspective(
        crop,
        matrix,
        (MESH_SIZE, MESH_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return (warped / 255.0).astype(np.float32)[None]


def project_landmarks(identity: np.ndarray, roi: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """Map FaceMesh's 1434 outputs (256-px units in the ROI) to (1, 478, 3) float32 landmarks
    normalised by the image size (x / W, y / H, z / W).

    Each step rounds to float32 where the reference stores float32 and computes in float64
    where it promotes (tuple operands, float64 rotation matrix).
    """
    if identity.size != NUM_LANDMARKS * 3:
        raise ValueError(
            f"face_mesh output Identity: expected {NUM_LANDMARKS * 3} elements, got shape {identity.shape}"
        )
    centre_x, centre_y, width, height, rotation = roi.astype(np.float32)
    points = identity.reshape(NUM_LANDMARKS, 3).astype(np.float64) / MESH_SIZE
    points = (points - (0.5, 0.5, 0.0)).astype(np.float32)

    sin, cos = float(np.sin(rotation)), float(np.cos(rotation))
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    turned = np.stack([x * cos - y * sin, x * sin + y * cos, points[:, 2]], axis=1).astype(np.float32)

    sized = turned * np.array([width, height, width], dtype=np.float32)
    placed = (sized + (float(centre_x), float(centre_y), 0.0)).astype(np.float32)
    image_height, image_width = image_hw
    return (placed / (image_width, image_height, image_width)).astype(np.float32)[None]


def landmarks478(crop512: np.ndarray, blaze_face: Network, face_mesh: Network) -> np.ndarray:
    """The (1, 478, 3) float32 normalised face landmarks of an RGB uint8 crop.

    Raises NoFaceError when BlazeFace finds no face (the reference crashes there).
    """
    if crop512.ndim != 3 or crop512.shape[2] != 3 or crop512.dtype != np.uint8:
        raise ValueError(f"landmarks478: expected an RGB uint8 image (H, W, 3), got {crop512.dtype} {crop512.shape}")
    detections = detect_faces(crop512, blaze_face)
    if not len(detections):
        raise NoFaceError("BlazeFace on the 512 source crop")
    image_hw = crop512.shape[:2]
    roi = face_roi(detections[0], image_hw)
    identity = face_mesh(input=mesh_input(crop512, roi))[0]
    return project_landmarks(identity, roi, image_hw)


def _check_shape(what: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise ValueError(f"{what}: expected shape {list(shape)}, got {list(array.shape)}")
