"""Per-frame LMDM condition rows: audio features plus emotion, eye and source-keypoint context (DITTO_SPEC §5.7).

Each row is ``[audio 1024 | emo 8 | eye_open 2 | eye_ball 6 | sc 63]`` = 1103 float32 values.
"""

from __future__ import annotations

import numpy as np

from ditto_fast.options import EMO_LABELS, Emotion
from ditto_fast.stages.frame_index import mirror_index

NUM_EMOTIONS = len(EMO_LABELS)
AUDIO_FEATURE_DIM = 1024
EYE_OPEN_DIM = 2
EYE_BALL_DIM = 6
KEYPOINT_DIM = 63
CONDITION_DIM = AUDIO_FEATURE_DIM + NUM_EMOTIONS + EYE_OPEN_DIM + EYE_BALL_DIM + KEYPOINT_DIM  # 1103

# The logit given to each selected label before the softmax; one label ends up at 0.997657.
_EMOTION_LOGIT = 8.0


def _label_softmax(labels: tuple[int, ...]) -> np.ndarray:
    """Softmax (float32, max-shifted) of an 8-vector holding 8 at each label and 0 elsewhere."""
    logits = np.zeros(NUM_EMOTIONS, dtype=np.float32)
    logits[list(labels)] = _EMOTION_LOGIT
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


def parse_emo(emo: Emotion) -> np.ndarray:
    """The emotion sequence ``(m, 8)`` float32 that condition rows cycle through, from an `emo`
    in one of the canonical forms `RenderOptions` gives (which is where it is validated)."""
    if isinstance(emo, np.ndarray):
        return emo.astype(np.float32)
    if isinstance(emo, int):
        return _label_softmax((emo,))[None]
    if isinstance(emo[0], int):  # one emotion mixing several labels
        return _label_softmax(emo)[None]
    return np.stack([_label_softmax(labels) for labels in emo])


def _as_rows(name: str, array: np.ndarray, width: int) -> np.ndarray:
    rows = np.asarray(array, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != width or len(rows) == 0:
        raise ValueError(f"ConditionHandler: {name} must have shape (n_src>=1, {width}), got {rows.shape}")
    return rows


class ConditionHandler:
    """Builds LMDM condition rows for a run of audio frames starting at a global frame index.

    The reference keeps pre-tiled 80-frame copies of the constant parts for n == 80; they hold
    exactly the rows the index path below selects (frame 0 when there is one source frame or in
    eye_f0_mode, emotion 0 when there is one emotion), so a single path serves every n.
    """

    def __init__(self, sc: np.ndarray, eye_open: np.ndarray, eye_ball: np.ndarray,
                 emo: Emotion = 4, eye_f0_mode: bool = False) -> None:
        """
        sc: (63,) source keypoints (frame 0, unsmoothed); eye_open (n_src, 2) and eye_ball
        (n_src, 6): per-source-frame eye features; emo: `RenderOptions.emo` (see `parse_emo`);
        eye_f0_mode: use source frame 0's eye features for every frame.
        """
        self.sc = np.asarray(sc, dtype=np.float32).reshape(-1)
        if self.sc.shape != (KEYPOINT_DIM,):
            raise ValueError(f"ConditionHandler: sc must hold {KEYPOINT_DIM} values, got {self.sc.shape}")
        self.eye_open = _as_rows("eye_open", eye_open, EYE_OPEN_DIM)
        self.eye_ball = _as_rows("eye_ball", eye_ball, EYE_BALL_DIM)
        if len(self.eye_open) != len(self.eye_ball):
            raise ValueError(f"ConditionHandler: eye_open has {len(self.eye_open)} source frames but "
                             f"eye_ball has {len(self.eye_ball)}")
        self.emotions = parse_emo(emo)
        self.eye_f0_mode = eye_f0_mode

    def set_emotion(self, emo: Emotion) -> None:
        """Emotion of the condition rows made from now on (live streams change it mid-stream)."""
        self.emotions = parse_emo(emo)

    @property
    def num_source_frames(self) -> int:
        return len(self.eye_open)

    def __call__(self, aud_feat: np.ndarray, idx: int) -> np.ndarray:
        """Condition rows (n, 1103) float32 for audio frames ``idx .. idx+n-1``.

        Negative indices (the online warm-up buffer) use the context of frame 0.
        """
        aud_feat = np.asarray(aud_feat)
        if aud_feat.ndim != 2 or aud_feat.shape[1] != AUDIO_FEATURE_DIM:
            raise ValueError(f"ConditionHandler: aud_feat must have shape (n, {AUDIO_FEATURE_DIM}), "
                             f"got {aud_feat.shape}")
        n = len(aud_feat)
        frames = np.maximum(np.arange(idx, idx + n), 0)
        if self.eye_f0_mode:
            eye_rows = np.zeros(n, dtype=np.int64)
        else:
            eye_rows = np.array([mirror_index(j, self.num_source_frames) for j in frames.tolist()], dtype=np.int64)
        return np.concatenate([
            aud_feat.astype(np.float32, copy=False),
            self.emotions[frames % len(self.emotions)],
            self.eye_open[eye_rows],
            self.eye_ball[eye_rows],
            np.broadcast_to(self.sc, (n, KEYPOINT_DIM)),
        ], axis=1)
