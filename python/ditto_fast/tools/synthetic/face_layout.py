"""The one canonical face that every synthetic tiny model agrees on.

All geometry starts in *box units*: the detector's square face box spans [-0.5, 0.5]², x to the
right and y down (image convention), z toward the viewer negative (MediaPipe convention). The
feature positions were read off a centred head-and-shoulders portrait (the project's demo image):
eyes 0.4 box apart just above the box centre, mouth at +0.16, chin at +0.39, so the constant
landmark outputs land on the real features of such a portrait.

Each model's constant output is this face pushed through the reference's own crop rules
(DITTO_SPEC §4.9–§4.11, §5.2) for an upright face, so the registration chain lands on itself:
the 106 points fix the 224 tracking crop, the 203 points placed in that crop fix the final 512 crop,
and the BlazeFace box, the 478 FaceMesh points and the 21 motion keypoints live in that final crop.
The final-crop constants assume the default crop_scale 2.3 / crop_vy_ratio −0.125.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# -- Detector ---------------------------------------------------------------------------------
# Box side as a fraction of the shorter side of the letterboxed image: a head-and-shoulders
# portrait's face (brow to chin) fills a bit under half of the frame.
DETECTOR_BOX_FRACTION = 0.45

# -- Facial features in box units (image-right half; the left half is mirrored) ---------------
EYE_CENTRE = (0.20, -0.19)
EYE_HALF_WIDTH = 0.075
# Lid separation over eye width summed over three lid pairs (DITTO_SPEC §5.4) comes out at
# about 0.9 with this height: an ordinary open eye.
EYE_HALF_HEIGHT = 0.025
IRIS_RADIUS = 0.022
BROW_Y = -0.29
BROW_INNER_X, BROW_OUTER_X = 0.08, 0.36
NOSE_BRIDGE_TOP = -0.17
NOSE_TIP = (0.0, 0.01)
NOSE_BASE_CENTRE, NOSE_BASE_RADII = (0.0, 0.04), (0.07, 0.025)  # nostrils and columella
EAR = (0.42, -0.05)  # tragion
MOUTH_Y = 0.16
MOUTH_HALF_WIDTH = 0.13
LIP_HALF_HEIGHT = 0.03
INNER_LIP_HALF_WIDTH, INNER_LIP_HALF_HEIGHT = 0.10, 0.008
FACE_OVAL_CENTRE = (0.0, -0.05)
FACE_OVAL_RADII = (0.39, 0.44)  # forehead at -0.49, chin at +0.39, cheeks at ±0.39
CHIN = (0.0, FACE_OVAL_CENTRE[1] + FACE_OVAL_RADII[1])
FACE_DEPTH = 0.25  # how far the middle of the face bulges toward the viewer
NOSE_DEPTH = 0.10  # extra bulge of the nose tip

# -- Crops of the reference chain (defaults) --------------------------------------------------
LANDMARK106_BOX_SCALE = 1.5  # the 192 crop spans 1.5 detector boxes
TRACK_CROP_SCALE, TRACK_CROP_VY = 1.5, -0.1
FINAL_CROP_SCALE, FINAL_CROP_VY = 2.3, -0.125
FINAL_CROP_PIXELS = 512
BLAZE_BOX_CENTRE = (0.0, 0.0)  # BlazeFace's square box covers the brows to the chin
BLAZE_BOX_SIDE = 0.8
MESH_ROI_SCALE = 1.5  # FaceMesh ROI side / BlazeFace box side (DITTO_SPEC §4.11)
MESH_ROI_PIXELS = 256

# -- Motion keypoints -------------------------------------------------------------------------
KEYPOINT_SCALE = 1.5  # LivePortrait-like source scale; x = scale·kp for a frontal, neutral face
EYE_KEYPOINTS = (11, 13, 15, 16, 18)  # the reference's eye mask (DITTO_SPEC §5.11)
LIP_KEYPOINTS = (6, 12, 14, 17, 19, 20)  # the reference's lip mask
UPPER_LIP_KEYPOINT = 6
MOUTH_CORNER_KEYPOINTS = (12, 14)
LOWER_LIP_KEYPOINTS = (17, 19, 20)

# MediaPipe-style index groups of the 478-point mesh (left = image-left = subject's right).
# Eye contours run outer corner → inner corner; the eye features of §5.4 read the corners
# (33/133, 263/362) and the lid pairs at the middle and ±1/8 of the width.
MESH_LEFT_EYE = {"corners": (33, 133), "upper": (246, 161, 160, 159, 158, 157, 173),
                 "lower": (7, 163, 144, 145, 153, 154, 155), "iris": (468, 469, 470, 471, 472)}
MESH_RIGHT_EYE = {"corners": (263, 362), "upper": (466, 388, 387, 386, 385, 384, 398),
                  "lower": (249, 390, 373, 374, 380, 381, 382), "iris": (473, 474, 475, 476, 477)}
MESH_FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
                  400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21,
                  54, 103, 67, 109)  # clockwise on screen from the top of the forehead
MESH_LIPS = {"outer_corners": (61, 291), "outer_upper": (185, 40, 39, 37, 0, 267, 269, 270, 409),
             "outer_lower": (146, 91, 181, 84, 17, 314, 405, 321, 375),
             "inner_corners": (78, 308), "inner_upper": (191, 80, 81, 82, 13, 312, 311, 310, 415),
             "inner_lower": (95, 88, 178, 87, 14, 317, 402, 318, 324)}  # left → right
MESH_BROWS = {"left": ((70, 63, 105, 66, 107), (46, 53, 52, 65, 55)),
              "right": ((300, 293, 334, 296, 336), (276, 283, 282, 295, 285))}  # outer → inner
MESH_NOSE_LINE = (168, 6, 197, 195, 5, 4, 1, 2)  # between the eyes → tip → under the tip
MESH_NOSTRILS = (98, 327)
MESH_POINTS = 478


@dataclass(frozen=True)
class SquareCrop:
    """A square, unrotated crop in box units."""

    centre: tuple[float, float]
    side: float

    def to_unit(self, points: np.ndarray) -> np.ndarray:
        """Box-unit (x, y) → fractions of the crop in [0, 1] (z, when present, scales like x)."""
        out = np.array(points, dtype=np.float64)
        out[..., :2] -= self.centre
        out /= self.side
        out[..., :2] += 0.5
        return out


def square_crop(points: np.ndarray, scale: float, vy_ratio: float) -> SquareCrop:
    """The reference crop rule (DITTO_SPEC §5.2) for an upright face.

    Every layout here is mirror-symmetric with its lips straight below its eyes, so the crop's
    rotation is exactly 0 and the rule reduces to the landmarks' bounding box, squared, scaled
    and shifted by vy_ratio·side along y.
    """
    lo, hi = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    side = float((hi - lo).max() * scale)
    centre = (lo + hi) / 2
    return SquareCrop((float(centre[0]), float(centre[1] + vy_ratio * side)), side)


# -- Small shape primitives -------------------------------------------------------------------
def _ellipse(centre: tuple[float, float], radii: tuple[float, float], degrees) -> np.ndarray:
    """Points on an ellipse; with y down, increasing angles run clockwise on screen."""
    angle = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([centre[0] + radii[0] * np.cos(angle),
                     centre[1] + radii[1] * np.sin(angle)], -1)


def _ring(centre: tuple[float, float], radii: tuple[float, float], count: int,
          start_degrees: float = 180.0) -> np.ndarray:
    return _ellipse(centre, radii, start_degrees + 360.0 * np.arange(count) / count)


def _mirror(points: np.ndarray) -> np.ndarray:
    out = np.array(points, dtype=np.float64)
    out[..., 0] *= -1
    return out


def _left(point: tuple[float, float]) -> tuple[float, float]:
    return (-point[0], point[1])


def _face_contour(count: int) -> np.ndarray:
    """Temple → chin → temple along the lower face oval (the 106/203 layouts' jaw line)."""
    return _ellipse(FACE_OVAL_CENTRE, FACE_OVAL_RADII, np.linspace(190.0, -10.0, count))


def _brow(count: int) -> np.ndarray:
    """Image-right brow, inner → outer, arched 0.03 above BROW_Y in its middle."""
    x = np.linspace(BROW_INNER_X, BROW_OUTER_X, count)
    mid, half = (BROW_INNER_X + BROW_OUTER_X) / 2, (BROW_OUTER_X - BROW_INNER_X) / 2
    return np.stack([x, BROW_Y - 0.03 * (1 - ((x - mid) / half) ** 2)], -1)


def _lip_points(upper: bool, inner: bool, count: int) -> np.ndarray:
    """`count` points strictly between the mouth corners, left → right, on one lip edge."""
    radii = ((INNER_LIP_HALF_WIDTH, INNER_LIP_HALF_HEIGHT) if inner
             else (MOUTH_HALF_WIDTH, LIP_HALF_HEIGHT))
    step = 180.0 / (count + 1)
    offsets = step * np.arange(1, count + 1)
    degrees = 180.0 + offsets if upper else 180.0 - offsets
    return _ellipse((0.0, MOUTH_Y), radii, degrees)


def _eye_lid(outer_sign: float, upper: bool, count: int) -> np.ndarray:
    """`count` lid points from the outer towards the inner corner at fractions (k+1)/(count+1)."""
    t = np.arange(1, count + 1) / (count + 1)
    u = 1 - 2 * t  # +1 at the outer corner, -1 at the inner one
    x = outer_sign * (EYE_CENTRE[0] + EYE_HALF_WIDTH * u)
    y = EYE_CENTRE[1] + (-1 if upper else 1) * EYE_HALF_HEIGHT * np.sqrt(1 - u**2)
    return np.stack([x, y], -1)


def surface_depth(points: np.ndarray) -> np.ndarray:
    """z of the face surface under box-unit (x, y): an ellipsoid over the face oval, nose raised."""
    rx, ry = FACE_OVAL_RADII
    x, y = points[:, 0], points[:, 1]
    inside = 1 - ((x - FACE_OVAL_CENTRE[0]) / rx) ** 2 - ((y - FACE_OVAL_CENTRE[1]) / ry) ** 2
    nose = np.exp(-((x - NOSE_TIP[0]) ** 2 + (y - NOSE_TIP[1]) ** 2) / (2 * 0.05**2))
    return -FACE_DEPTH * np.sqrt(np.clip(inside, 0, None)) - NOSE_DEPTH * nose


# -- Layouts in box units ---------------------------------------------------------------------
def landmarks106() -> np.ndarray:
    """(106, 2) insightface-2d106-like layout: 0–32 jaw, 33–42 left eye, 43–51 left brow,
    52–71 mouth (52, 61 = corners), 72–86 nose, 87–96 right eye, 97–105 right brow.
    The eye blocks put points 0, 2, 6, 7 of the block at opposite ends of the eye so the means
    the cropper takes ({33,35,40,39}, {87,89,94,93}) are the eye centres."""
    eye_block_degrees = (0.0, 225.0, 180.0, 315.0, 45.0, 135.0, 90.0, 270.0)
    right_eye = np.concatenate([
        _ellipse(EYE_CENTRE, (EYE_HALF_WIDTH, EYE_HALF_HEIGHT), eye_block_degrees),
        [EYE_CENTRE, (EYE_CENTRE[0], EYE_CENTRE[1] - IRIS_RADIUS)],
    ])
    nose_bridge = np.stack([np.zeros(6), np.linspace(NOSE_BRIDGE_TOP, -0.03, 6)], -1)
    mouth = np.concatenate([
        [(-MOUTH_HALF_WIDTH, MOUTH_Y)], _lip_points(True, False, 4), _lip_points(False, False, 4),
        [(MOUTH_HALF_WIDTH, MOUTH_Y)], _lip_points(True, True, 5), _lip_points(False, True, 5),
    ])
    points = np.concatenate([
        _face_contour(33), _mirror(right_eye), _mirror(_brow(9)), mouth,
        nose_bridge, [NOSE_TIP], _ring(NOSE_BASE_CENTRE, NOSE_BASE_RADII, 8),
        right_eye, _brow(9),
    ])
    assert points.shape == (106, 2)
    return points


def landmarks203() -> np.ndarray:
    """(203, 2) LivePortrait-203-like layout: 0–23 left eye, 24–47 right eye (rings starting at
    the outer corner, so {0,6,12,18} and {24,30,36,42} average to the eye centres), 48–83 outer
    lips (48 = left corner, 66 = right corner), 84–101 inner lips, 102–118 left brow, 119–135
    right brow, 136–168 jaw, 169–200 nose, 201–202 pupils."""
    eye_radii = (EYE_HALF_WIDTH, EYE_HALF_HEIGHT)
    points = np.concatenate([
        _ring(_left(EYE_CENTRE), eye_radii, 24, 180.0),
        _ring(EYE_CENTRE, eye_radii, 24, 0.0),
        _ring((0.0, MOUTH_Y), (MOUTH_HALF_WIDTH, LIP_HALF_HEIGHT), 36, 180.0),
        _ring((0.0, MOUTH_Y), (INNER_LIP_HALF_WIDTH, INNER_LIP_HALF_HEIGHT), 18, 180.0),
        _mirror(_brow(17)), _brow(17), _face_contour(33),
        np.stack([np.zeros(16), np.linspace(NOSE_BRIDGE_TOP, NOSE_TIP[1], 16)], -1),
        _ring(NOSE_BASE_CENTRE, NOSE_BASE_RADII, 16),
        [_left(EYE_CENTRE), EYE_CENTRE],
    ])
    assert points.shape == (203, 2)
    return points


def _fibonacci_fill(count: int) -> np.ndarray:
    """`count` evenly spread points inside the face oval (a sunflower pattern)."""
    i = np.arange(count) + 0.5
    radius = 0.92 * np.sqrt(i / count)
    angle = i * np.pi * (3 - np.sqrt(5))
    return np.stack([FACE_OVAL_CENTRE[0] + FACE_OVAL_RADII[0] * radius * np.cos(angle),
                     FACE_OVAL_CENTRE[1] + FACE_OVAL_RADII[1] * radius * np.sin(angle)], -1)


def mesh478() -> np.ndarray:
    """(478, 3) FaceMesh-like layout in box units with the named MediaPipe groups in place
    (eyes, irises at the eye centres looking straight ahead, lips, brows, nose, face oval);
    the remaining indices fill the face oval evenly. z follows the face surface."""
    xy = np.full((MESH_POINTS, 2), np.nan)
    for eye, sign in ((MESH_LEFT_EYE, -1.0), (MESH_RIGHT_EYE, 1.0)):
        centre = (sign * EYE_CENTRE[0], EYE_CENTRE[1])
        xy[list(eye["corners"])] = [(centre[0] + sign * EYE_HALF_WIDTH, centre[1]),
                                    (centre[0] - sign * EYE_HALF_WIDTH, centre[1])]
        xy[list(eye["upper"])] = _eye_lid(sign, True, 7)
        xy[list(eye["lower"])] = _eye_lid(sign, False, 7)
        iris_rim = _ring(centre, (IRIS_RADIUS, IRIS_RADIUS), 4, 0.0)
        xy[list(eye["iris"])] = np.concatenate([[centre], iris_rim])
    xy[list(MESH_FACE_OVAL)] = _ring(FACE_OVAL_CENTRE, FACE_OVAL_RADII, len(MESH_FACE_OVAL), 270.0)
    for name, half_width in (("outer_corners", MOUTH_HALF_WIDTH),
                             ("inner_corners", INNER_LIP_HALF_WIDTH)):
        xy[list(MESH_LIPS[name])] = [(-half_width, MOUTH_Y), (half_width, MOUTH_Y)]
    for name, upper, inner in (("outer_upper", True, False), ("outer_lower", False, False),
                               ("inner_upper", True, True), ("inner_lower", False, True)):
        xy[list(MESH_LIPS[name])] = _lip_points(upper, inner, len(MESH_LIPS[name]))
    for side, mirror in (("left", True), ("right", False)):
        upper_edge, lower_edge = MESH_BROWS[side]
        outer_to_inner = _brow(5)[::-1]
        upper_pts = np.stack([outer_to_inner[:, 0], outer_to_inner[:, 1] - 0.015], -1)
        lower_pts = np.stack([outer_to_inner[:, 0], outer_to_inner[:, 1] + 0.015], -1)
        xy[list(upper_edge)] = _mirror(upper_pts) if mirror else upper_pts
        xy[list(lower_edge)] = _mirror(lower_pts) if mirror else lower_pts
    nose_y = np.linspace(-0.19, NOSE_TIP[1] + 0.03, len(MESH_NOSE_LINE))
    xy[list(MESH_NOSE_LINE)] = np.stack([np.zeros_like(nose_y), nose_y], -1)
    xy[list(MESH_NOSTRILS)] = [(-0.05, 0.04), (0.05, 0.04)]
    unnamed = np.isnan(xy[:, 0])
    xy[unnamed] = _fibonacci_fill(int(unnamed.sum()))
    return np.concatenate([xy, surface_depth(xy)[:, None]], -1)


def motion_keypoints() -> np.ndarray:
    """(21, 3) box-unit positions of the motion keypoints: face parts where the warp should act,
    with the reference's eye and lip masks (EYE_KEYPOINTS, LIP_KEYPOINTS) on eye and lip parts."""
    ex, ey = EYE_CENTRE
    xy = np.array([
        (0.0, -0.70),                      # 0 top of the head
        (-0.22, BROW_Y), (0.22, BROW_Y),   # 1, 2 brows
        NOSE_TIP,                          # 3 nose tip
        CHIN,                              # 4 chin
        _left(EAR),                        # 5 left ear
        (0.0, MOUTH_Y - 0.02),             # 6 upper lip (lip)
        EAR,                               # 7 right ear
        (-0.25, 0.55), (0.25, 0.55),       # 8, 9 sides of the neck
        (0.0, 0.62),                       # 10 throat
        (-ex, ey),                         # 11 left eye (eye)
        (-MOUTH_HALF_WIDTH, MOUTH_Y),      # 12 left mouth corner (lip)
        (-ex, ey - EYE_HALF_HEIGHT),       # 13 left upper lid (eye)
        (MOUTH_HALF_WIDTH, MOUTH_Y),       # 14 right mouth corner (lip)
        (ex, ey),                          # 15 right eye (eye)
        (ex, ey - EYE_HALF_HEIGHT),        # 16 right upper lid (eye)
        (0.0, MOUTH_Y + 0.035),            # 17 lower lip (lip)
        (0.0, ey),                         # 18 between the eyes (eye)
        (-0.07, MOUTH_Y + 0.03),           # 19 lower lip, left (lip)
        (0.07, MOUTH_Y + 0.03),            # 20 lower lip, right (lip)
    ])
    return np.concatenate([xy, surface_depth(xy)[:, None]], -1)


# -- The layouts in each model's own coordinates ----------------------------------------------
def track_crop() -> SquareCrop:
    """The 224 tracking crop the reference builds from the 106 points."""
    return square_crop(landmarks106(), TRACK_CROP_SCALE, TRACK_CROP_VY)


def final_crop() -> SquareCrop:
    """The 512 crop the reference builds from the 203 points (default crop parameters)."""
    return square_crop(landmarks203(), FINAL_CROP_SCALE, FINAL_CROP_VY)


def detector_keypoints() -> np.ndarray:
    """(5, 2) SCRFD keypoints in box units: left eye, right eye, nose tip, mouth corners."""
    return np.array([_left(EYE_CENTRE), EYE_CENTRE, NOSE_TIP,
                     (-MOUTH_HALF_WIDTH, MOUTH_Y), (MOUTH_HALF_WIDTH, MOUTH_Y)])


def landmark106_fc1() -> np.ndarray:
    """(1, 212) float32: the 106 points in the 192 crop's [-1, 1] convention (pixel = (v+1)·96)."""
    pixels = 96 + landmarks106() * (192 / LANDMARK106_BOX_SCALE)
    return (pixels / 96 - 1).reshape(1, 212).astype(np.float32)


def landmark203_output() -> np.ndarray:
    """(1, 406) float32: the 203 points as [0, 1] fractions of the 224 tracking crop."""
    return track_crop().to_unit(landmarks203()).reshape(1, 406).astype(np.float32)


@dataclass(frozen=True)
class BlazeFaceDetection:
    """BlazeFace's face in [0, 1] fractions of the 512 crop (equally, of its 128 input)."""

    centre: np.ndarray  # (2,)
    size: np.ndarray  # (2,) width, height
    keypoints: np.ndarray  # (6, 2): left eye, right eye, nose tip, mouth, left ear, right ear


def blazeface_detection() -> BlazeFaceDetection:
    """The face BlazeFace reports in the final crop: its box and six keypoints."""
    crop = final_crop()
    keypoints = np.array([_left(EYE_CENTRE), EYE_CENTRE, NOSE_TIP, (0.0, MOUTH_Y), _left(EAR), EAR])
    return BlazeFaceDetection(crop.to_unit(np.array([BLAZE_BOX_CENTRE]))[0],
                              np.full(2, BLAZE_BOX_SIDE / crop.side), crop.to_unit(keypoints))


def face_mesh_landmarks() -> np.ndarray:
    """(478, 3) FaceMesh output in 256-pixel units of the ROI that BlazeFace's box gives
    (side 1.5 × box, same centre, no rotation because the two eye keypoints are level)."""
    face = blazeface_detection()
    roi_side = MESH_ROI_SCALE * float(face.size.max())
    in_crop = final_crop().to_unit(mesh478())
    in_crop[:, :2] -= face.centre - roi_side / 2
    return in_crop * (MESH_ROI_PIXELS / roi_side)


def canonical_keypoints() -> np.ndarray:
    """(21, 3) canonical keypoints such that KEYPOINT_SCALE·kp is the keypoint's position in the
    warp's normalised coordinates of the final crop: x → width, y → height, align_corners=0, so
    crop pixel u (pixel centres at integers, as cv2 warps) sits at (u + 0.5)/256 − 1."""
    unit = final_crop().to_unit(motion_keypoints())
    half_pixel = 1 / FINAL_CROP_PIXELS
    return (2 * unit - np.array([1 - half_pixel, 1 - half_pixel, 0.0])) / KEYPOINT_SCALE
