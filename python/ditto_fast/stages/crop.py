"""Face crop geometry: landmarks → rotated square → crop matrices and crop images (DITTO_SPEC §5.2).

The reference evaluates this in float32 with a particular operation order (the angle is
acos of the float32 x-axis, products with Python floats are rounded to float32 first). The
code below keeps that order and casts explicitly, so the matrices are bit-identical to the
reference whatever NumPy's scalar-promotion rules are.

One deliberate deviation: the reference never forwards ``vx_ratio`` to its crop; here it is
applied (a shift of the crop centre along the face's x-axis). With ``vx_ratio=0`` every result
equals the reference bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

_F32 = np.float32


class _PointGroups(NamedTuple):
    # Index order matters: the reference sums the points in exactly this order.
    left_eye: tuple[int, ...]
    right_eye: tuple[int, ...]
    lip: tuple[int, int]


# The landmarks that define the eye and lip centres, per landmark layout (point count).
_POINT_GROUPS = {
    106: _PointGroups(left_eye=(33, 35, 40, 39), right_eye=(87, 89, 94, 93), lip=(52, 61)),
    203: _PointGroups(left_eye=(0, 6, 12, 18), right_eye=(24, 30, 36, 42), lip=(48, 66)),
}
# Below this eye-to-lip distance the face direction is undefined and the crop stays upright.
_DEGENERATE_AXIS_NORM = 1e-3

RGB256_SIZE = 256


@dataclass(frozen=True)
class CropSettings:
    """How a square crop is placed around a set of landmarks."""

    dsize: int  # output side in pixels
    scale: float  # crop side / landmark extent
    vx_ratio: float = 0.0  # centre shift along the face's x-axis, in crop sides
    vy_ratio: float = 0.0  # centre shift along the face's y-axis, in crop sides
    flag_do_rot: bool = True  # rotate the crop upright, or keep it axis-aligned


# The crop landmark203 sees; fixed in the reference.
TRACKING_CROP = CropSettings(dsize=224, scale=1.5, vy_ratio=-0.1)
FINAL_CROP_SIZE = 512


def final_crop_settings(
    crop_scale: float = 2.3,
    crop_vx_ratio: float = 0.0,
    crop_vy_ratio: float = -0.125,
    crop_flag_do_rot: bool = True,
) -> CropSettings:
    """The 512² crop the renderer animates, from the render options' ``crop_*`` values."""
    return CropSettings(FINAL_CROP_SIZE, crop_scale, crop_vx_ratio, crop_vy_ratio, crop_flag_do_rot)


DEFAULT_FINAL_CROP = final_crop_settings()


class CropRect(NamedTuple):
    """A rotated square in original-frame pixels (all float32 but ``angle``)."""

    centre: np.ndarray  # (2,)
    side: np.float32
    ux: np.ndarray  # (2,) the face's unit x-axis
    uy: np.ndarray  # (2,) the face's unit y-axis (eyes → lip)
    angle: float  # radians, the rotation of ux from the image x-axis


class Crop(NamedTuple):
    image: np.ndarray  # (dsize, dsize, 3) uint8
    M_o2c: np.ndarray  # (3, 3) float32, original → crop
    M_c2o: np.ndarray  # (3, 3) float32, crop → original


def eye_lip_centres(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eye centre and the lip centre (float32 (2,) each) of 106 or 203 landmarks."""
    groups = _POINT_GROUPS.get(len(pts))
    if groups is None:
        raise ValueError(
            f"crop landmarks: expected 106 or 203 points, got array of shape {pts.shape}"
        )
    left_eye = pts[list(groups.left_eye)].mean(axis=0)
    right_eye = pts[list(groups.right_eye)].mean(axis=0)
    lip_a, lip_b = groups.lip
    return (left_eye + right_eye) / _F32(2), (pts[lip_a] + pts[lip_b]) / _F32(2)


def _face_axes(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    eye, lip = eye_lip_centres(pts)
    uy = lip - eye
    norm = np.linalg.norm(uy)
    uy = np.array([0, 1], dtype=_F32) if norm <= _DEGENERATE_AXIS_NORM else uy / norm
    ux = np.array([uy[1], -uy[0]], dtype=_F32)
    # acos of the float32 component rather than atan2: the reference's choice, and the two
    # differ by up to a few 1e-4 rad for near-upright faces.
    angle = math.acos(float(ux[0]))
    return ux, uy, (-angle if ux[1] < 0 else angle)


def crop_rectangle(
    pts: np.ndarray, scale: float, vx_ratio: float = 0.0, vy_ratio: float = 0.0
) -> CropRect:
    """The rotated square around `pts` (106 or 203 float32 landmarks, original pixels)."""
    pts = np.ascontiguousarray(pts, dtype=_F32)
    ux, uy, angle = _face_axes(pts)
    centre0 = pts.mean(axis=0)
    rotated = (pts - centre0) @ np.array([ux, uy]).T
    low, high = rotated.min(axis=0), rotated.max(axis=0)
    mid = (low + high) / _F32(2)
    extent = high - low
    side = max(extent[0], extent[1]) * _F32(scale)
    centre = centre0 + ux * mid[0] + uy * mid[1]
    centre = centre + ux * (_F32(vx_ratio) * side) + uy * (_F32(vy_ratio) * side)
    return CropRect(centre, side, ux, uy, angle)


def crop_matrices(pts: np.ndarray, settings: CropSettings) -> tuple[np.ndarray, np.ndarray]:
    """(M_o2c, M_c2o), 3×3 float32, of the crop `settings` places around `pts`."""
    rect = crop_rectangle(pts, settings.scale, settings.vx_ratio, settings.vy_ratio)
    s = _F32(settings.dsize) / rect.side
    half = _F32(settings.dsize / 2)
    cx, cy = rect.centre
    if settings.flag_do_rot:
        cos_t, sin_t = _F32(math.cos(rect.angle)), _F32(math.sin(rect.angle))
        rows = [
            [s * cos_t, s * sin_t, half - s * (cos_t * cx + sin_t * cy)],
            [-s * sin_t, s * cos_t, half - s * (-sin_t * cx + cos_t * cy)],
        ]
    else:
        rows = [[s, 0, half - s * cx], [0, s, half - s * cy]]
    m_o2c = np.array([*rows, [0, 0, 1]], dtype=_F32)
    return m_o2c, np.linalg.inv(m_o2c)


def warp_affine(img: np.ndarray, m: np.ndarray, dsize: int) -> np.ndarray:
    """The dsize² image that the forward affine `m` (2×3 or 3×3) maps `img` onto: bilinear,
    black outside, as the reference's ``cv2.warpAffine`` call. Byte-identical needs OpenCV 4.x
    (pinned): OpenCV 5 stopped quantising sample positions to 1/32 px."""
    return cv2.warpAffine(img, np.asarray(m)[:2], (dsize, dsize), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_image(
    img: np.ndarray,
    pts: np.ndarray,
    dsize: int,
    scale: float,
    vx_ratio: float = 0.0,
    vy_ratio: float = 0.0,
    flag_do_rot: bool = True,
) -> Crop:
    """The square crop of `img` (RGB uint8) around the landmarks `pts`, and its matrices."""
    m_o2c, m_c2o = crop_matrices(
        pts, CropSettings(dsize, scale, vx_ratio, vy_ratio, flag_do_rot)
    )
    return Crop(warp_affine(img, m_o2c, dsize), m_o2c, m_c2o)


def crop_with(img: np.ndarray, pts: np.ndarray, settings: CropSettings) -> Crop:
    """`crop_image` with its placement given as one `CropSettings`."""
    return crop_image(img, pts, **dataclasses.asdict(settings))


def transform_points(pts: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply the affine part of a 3×3 (or 2×3) matrix to (n, 2) points."""
    return pts @ m[:2, :2].T + m[:2, 2]


def to_rgb256(crop: np.ndarray) -> np.ndarray:
    """The appearance/motion extractors' input: (1, 3, 256, 256) float32 in [0, 1]."""
    small = cv2.resize(crop, (RGB256_SIZE, RGB256_SIZE), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray((small.astype(_F32) / _F32(255))[None].transpose(0, 3, 1, 2))
