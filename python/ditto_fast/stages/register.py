"""Source registration: a portrait or video becomes an `Avatar` (DITTO_SPEC §5.3, §5.5).

Per source frame: face landmarks and the final 512 crop (detection on the first frame,
tracking from the previous frame's landmarks after it), eye features from the 478 landmarks,
and the motion and appearance extractors on the 256² crop. A video's motion is then smoothed
over time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ditto_fast.avatar import MOTION_INFO_SHAPES, Avatar
from ditto_fast.backends.base import Network
from ditto_fast.options import RenderOptions
from ditto_fast.stages.crop import CropSettings, final_crop_settings, to_rgb256
from ditto_fast.stages.eyes import eye_features
from ditto_fast.stages.face_detect import detect_face_landmarks, track_face_landmarks
from ditto_fast.stages.face_mesh import landmarks478
from ditto_fast.stages.source import load_source

# The motion extractor's outputs, in contract order, as motion-info keys.
MOTION_OUTPUTS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")


def mean_filter(values: np.ndarray, kernel: int) -> np.ndarray:
    """Centred moving mean over axis 0, the window truncated at both ends (the reference's)."""
    half = kernel // 2
    n = values.shape[0]
    return np.stack([values[max(0, i - half):min(n, i + half + 1)].mean(0) for i in range(n)])


def source_motion(motion_extractor: Network, rgb256: np.ndarray) -> dict[str, np.ndarray]:
    outputs = motion_extractor(image=rgb256)
    return {key: np.asarray(value, np.float32).reshape(1, -1) for key, value in zip(MOTION_OUTPUTS, outputs)}


def register_frames(
    frames: Sequence[np.ndarray],
    is_image: bool,
    networks: Mapping[str, Network],
    options: RenderOptions,
    source: str = "",
) -> Avatar:
    """Register already-loaded RGB frames (the first one must show a face)."""
    final: CropSettings = final_crop_settings(options.crop_scale, options.crop_vx_ratio,
                                              options.crop_vy_ratio, options.crop_flag_do_rot)
    motions, f_s, m_c2o, eye_open, eye_ball = [], [], [], [], []
    previous_lmk203 = None
    for frame in frames:
        if previous_lmk203 is None:
            face = detect_face_landmarks(frame, networks["insightface_det"], networks["landmark106"],
                                         networks["landmark203"], final, source=source or None)
        else:
            face = track_face_landmarks(frame, previous_lmk203, networks["landmark203"], final)
        previous_lmk203 = face.lmk203
        opened, ball = eye_features(landmarks478(face.img_crop, networks["blaze_face"], networks["face_mesh"]))
        rgb256 = to_rgb256(face.img_crop)
        motions.append(source_motion(networks["motion_extractor"], rgb256))
        f_s.append(networks["appearance_extractor"](image=rgb256)[0])
        m_c2o.append(face.M_c2o)
        eye_open.append(opened[0])
        eye_ball.append(ball[0])
    motion = {key: np.stack([m[key] for m in motions]) for key in MOTION_INFO_SHAPES}
    sc = motion["kp"][0].reshape(63).copy()  # frame 0, before smoothing (the condition's sc)
    if len(frames) > 1 and options.smo_k_s > 1:
        motion = {key: mean_filter(value, options.smo_k_s) for key, value in motion.items()}
    return Avatar(
        motion=motion, f_s=np.stack(f_s), m_c2o=np.stack(m_c2o).astype(np.float32),
        eye_open=np.stack(eye_open), eye_ball=np.stack(eye_ball), sc=sc, frames=np.stack(frames),
        is_image=is_image, source=source,
        settings={name: getattr(options, name) for name in
                  ("max_size", "template_n_frames", "crop_scale", "crop_vx_ratio", "crop_vy_ratio",
                   "crop_flag_do_rot", "smo_k_s")},
    )


def register(source: str | Path, networks: Mapping[str, Network], options: RenderOptions) -> Avatar:
    """Load `source` (image or video) and register it. A video is read up to
    `template_n_frames` frames when set, else up to `N_d` when set, else whole."""
    limit = options.template_n_frames if options.template_n_frames > 0 else options.N_d
    frames, is_image = load_source(source, options.max_size, limit)
    return register_frames(frames, is_image, networks, options, source=str(source))
