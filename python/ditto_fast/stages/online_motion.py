"""Streaming audio-to-motion: the reference's online `_audio2motion_worker` (DITTO_SPEC §5.9, "Online driver").

Audio features arrive a few frames at a time. The driver keeps a feature buffer that starts
with O frames of silence (O = overlap) and runs an 80-frame LMDM clip every time V = 80 − O new
frames have arrived. Each clip is cross-faded onto the motion so far (fuse length F = min(O, V))
and the cross-faded region is what gets emitted, so a frame leaves the driver only once the
clip after it has blended into it.

Window arithmetic, in frames of the feature buffer (warm-up rows first):

* clip k reads rows [kV, kV + 80) and its condition rows are indexed from kV − O, so the
  warm-up rows get negative indices (frame-0 context) and real frame i gets index i;
* clip 0 emits nothing; its motion frame 0 becomes `d0` (for MotionStitch's "d0" fade);
* clip k ≥ 1 emits V frames starting where the previous clip's emission ended;
* at end of stream the last, short window is padded by repeating its last row and emits
  everything the motion holds past the last emitted frame: the final cross-fade plus the
  tail predicted from the padding, so the output is longer than the audio.

Frame-count rule (n real features, O ≥ V so F = V)::

    emitted(n) = 0                                               if n < V
               = (n // V − 1)·V + min(O + n % V, F + V)           otherwise

e.g. O = 70: n = 30 → 40 frames, n = 400 → 410; O = 75: 30 → 35, 400 → 405; O = 60: 400 → 420.
"""

from __future__ import annotations

import numpy as np

from ditto_fast.stages.audio import SAMPLES_PER_FRAME
from ditto_fast.stages.audio_features import AudioFeatureExtractor, offline_features
from ditto_fast.stages.condition import AUDIO_FEATURE_DIM, ConditionHandler
from ditto_fast.stages.motion import MOTION_DIM, SEQ_FRAMES, Audio2Motion

# The reference keeps at most this many motion frames between clips; trimming at the same
# points keeps the truncated smoothing windows at the start of the kept motion identical.
_KEPT_MOTION_FRAMES = 2 * SEQ_FRAMES


def silence_warmup_features(extractor: AudioFeatureExtractor, overlap: int) -> np.ndarray:
    """(overlap, dim) features of `overlap` frames of silence: the online driver's warm-up rows.

    These are the offline features of overlap·640 zero samples. For overlap 55 and 56 the
    offline frame count rounds up to overlap + 1 (DITTO_SPEC §5.6 ceil quirk) and the reference
    stops on an assertion; here the extra row, which belongs to no silent frame, is dropped.
    `overlap` is `RenderOptions.overlap_v2`, validated there.
    """
    features = offline_features(extractor, np.zeros(overlap * SAMPLES_PER_FRAME, np.float32))
    return features[:overlap]


class OnlineAudio2Motion:
    """Feeds streamed audio features through the LMDM clip loop and returns motion as it is final.

    Use: `push_motion(features)` for every chunk of features (any number of rows), then
    `end_motion()` once; both return the frames emitted by the clips that became runnable, as
    (n, 265) motion vectors before the optional v_min/v_max clamp (`a2m.clamp`). `d0` holds the
    motion dict of frame 0 of the first clip once that clip has run (hand it to
    `MotionStitch.set_d0`).

    Unlike the reference, which holds features back until V new ones have queued, a clip runs
    as soon as its window is complete. That never changes a window or a result; it only makes
    frames available earlier when features come in pieces that are not multiples of V.

    Requires overlap O ≥ V = 80 − O (O ≥ 40): with O < V the reference never emits the first
    V − O real frames, so construction raises ValueError instead.
    """

    def __init__(self, a2m: Audio2Motion, condition: ConditionHandler, warmup_features: np.ndarray) -> None:
        """
        a2m: an `Audio2Motion` set up with `online_mode=True` (its kp_cond chain is restarted here).
        condition: the condition handler of the same source.
        warmup_features: (O, 1024), see `silence_warmup_features`.
        """
        options = a2m.options
        if not options.online_mode:
            raise ValueError("OnlineAudio2Motion: the Audio2Motion options must have online_mode=True "
                             "(the online cross-fade length is min(O, V))")
        if options.overlap < options.valid_clip_len:
            raise ValueError(f"OnlineAudio2Motion: overlap {options.overlap} < valid clip length "
                             f"{options.valid_clip_len}; the first {options.valid_clip_len - options.overlap} "
                             f"real frames would never be emitted (use overlap ≥ {SEQ_FRAMES // 2})")
        warmup = np.asarray(warmup_features, dtype=np.float32)
        if warmup.shape != (options.overlap, AUDIO_FEATURE_DIM):
            raise ValueError(f"OnlineAudio2Motion: warmup_features must have shape "
                             f"({options.overlap}, {AUDIO_FEATURE_DIM}), got {warmup.shape}")
        self.a2m = a2m
        self.condition = condition
        self._warmup = warmup
        self.reset()

    # -- latency and frame counts ----------------------------------------------------------------

    @property
    def overlap(self) -> int:
        return self.a2m.options.overlap

    @property
    def valid_clip_len(self) -> int:
        return self.a2m.options.valid_clip_len

    @property
    def frames_needed_for_first_output(self) -> int:
        """Real feature frames that must arrive before `push` emits anything: 2V.

        Clip 0 (warm-up + V real frames) emits nothing; clip 1 needs V more. `end()` can emit
        earlier, from V real frames on.
        """
        return 2 * self.valid_clip_len

    def output_frame_count(self, num_features: int) -> int:
        """Frames a whole stream of `num_features` real feature frames emits (push + end); see the module doc."""
        if num_features < 0:
            raise ValueError(f"OnlineAudio2Motion.output_frame_count: num_features must be ≥ 0, got {num_features}")
        valid = self.valid_clip_len
        if num_features < valid:
            return 0
        full_clip_frames = (num_features // valid - 1) * valid
        return full_clip_frames + min(self.overlap + num_features % valid, self.a2m.options.fuse_length + valid)

    # -- streaming ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Drop all queued features and motion and return to the state right after construction.

        Kept: the Audio2Motion object with its DDIM tables and step noise, the condition handler
        and the warm-up rows. Restarted: the feature buffer (warm-up rows only), the motion, the
        clip window position, the kp_cond chain (back to the source motion), `d0` (None until the
        next first clip runs), `frames_emitted` and the end-of-stream flag. The x_T noise stream
        carries on, so a run after reset draws different x_T than a fresh driver would.
        """
        self.a2m.reset()
        self._features = self._warmup.copy()  # rows from the current window start on
        self._window_start = 0  # buffer frame (warm-up rows count) where the next clip's window starts
        self._motion: np.ndarray | None = None
        self._emit_start = 0  # motion row of the next frame to emit
        self._ended = False
        self.d0: dict[str, np.ndarray] | None = None
        self.frames_emitted = 0

    def push_motion(self, features: np.ndarray) -> np.ndarray:
        """Add (k, 1024) real feature frames; returns the frames emitted as a result."""
        self._check_open("push")
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != AUDIO_FEATURE_DIM:
            raise ValueError(f"OnlineAudio2Motion.push: features must have shape (k, {AUDIO_FEATURE_DIM}), "
                             f"got {features.shape}")
        self._features = np.concatenate([self._features, features])
        return self._run_clips(at_end=False)

    def end_motion(self) -> np.ndarray:
        """End of stream: run the padded final clip; returns the remaining frames."""
        self._check_open("end")
        self._ended = True
        return self._run_clips(at_end=True)

    def _check_open(self, caller: str) -> None:
        if self._ended:
            raise RuntimeError(f"OnlineAudio2Motion.{caller}: the stream has ended; call reset() to start a new one")

    def _run_clips(self, at_end: bool) -> np.ndarray:
        """Run every clip whose window is complete (at end: also the short last one); return what they emit."""
        emitted = []
        while len(self._features) > 0 and (at_end or len(self._features) >= SEQ_FRAMES):
            emitted.append(self._run_clip())
        if not emitted:
            return np.zeros((0, MOTION_DIM), np.float32)
        return np.concatenate(emitted)

    def _run_clip(self) -> np.ndarray:
        """Run the clip at the current window start, advance the window, return the frames it emits."""
        window = self._features[:SEQ_FRAMES]
        if len(window) == SEQ_FRAMES:
            advance = self.valid_clip_len
        else:  # the short final window is consumed whole
            advance = len(window)
            window = np.concatenate([window, np.repeat(window[-1:], SEQ_FRAMES - len(window), axis=0)])
        cond = self.condition(window, self._window_start - self.overlap)[None]
        first_clip = self._motion is None
        self._motion = self.a2m.generate_clip(cond, self._motion)
        if first_clip:
            self._emit_start = len(self._motion) - self.a2m.options.fuse_length
            self.d0 = self.a2m.to_frame_dicts(self._motion[:1])[0]
            emitted = self._motion[:0]
        else:
            # The slice stops at the end of the motion, so a long final window emits only what exists.
            emitted = self._motion[self._emit_start:self._emit_start + advance]
            self._emit_start += advance
        self._features = self._features[advance:]
        self._window_start += advance
        excess = len(self._motion) - _KEPT_MOTION_FRAMES
        if excess > 0:
            self._motion = self._motion[excess:]
            self._emit_start -= excess
        self.frames_emitted += len(emitted)
        return emitted.copy()
