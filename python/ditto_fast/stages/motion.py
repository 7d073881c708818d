"""Audio-to-motion: the 265-d motion layout, the LMDM DDIM sampler and the clip loop (DITTO_SPEC §5.8–§5.10).

The arithmetic follows the reference's float32 NumPy path operation for operation (DDIM update,
clip cross-fade, smoothing), so with the same network outputs and noise the motion is bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from ditto_fast.backends.base import Network
from ditto_fast.backends.clip_sampling import clip_sampling_of
from ditto_fast.diffusion_schedule import DdimTables, ddim_tables
from ditto_fast.options import MOTION_DIM, SEQ_FRAMES

POSE_DIM = 202  # scale, pitch, yaw, roll and t: the dims the temporal smoothing touches
NUM_BINS = 66
CLIP_SHAPE = (1, SEQ_FRAMES, MOTION_DIM)

# (key, per-frame shape in a motion dict); concatenated in this order they make the 265-d vector.
MOTION_LAYOUT: tuple[tuple[str, tuple[int, int]], ...] = (
    ("scale", (1, 1)),
    ("pitch", (1, NUM_BINS)),
    ("yaw", (1, NUM_BINS)),
    ("roll", (1, NUM_BINS)),
    ("t", (1, 3)),
    ("exp", (1, 63)),
)
_SCALE_OFFSET = np.float32(1.0)  # vectors store scale − 1 so a neutral scale sits at 0


# -- 265-d motion vectors ----------------------------------------------------------------------------

def motion_dict_to_vector(motion: Mapping[str, np.ndarray]) -> np.ndarray:
    """Motion dict (scale, pitch, yaw, roll, t, exp; any leading singleton axes) → (265,) float32.

    Other keys (such as kp) are not part of the vector and are ignored.
    """
    parts = []
    for key, shape in MOTION_LAYOUT:
        if key not in motion:
            raise KeyError(f"motion dict: missing key {key!r}")
        values = np.asarray(motion[key], dtype=np.float32).reshape(-1)
        if values.size != shape[1]:
            raise ValueError(f"motion dict: {key!r} holds {values.size} values, expected {shape[1]}")
        parts.append(values - _SCALE_OFFSET if key == "scale" else values)
    return np.concatenate(parts)


def motion_vector_to_dict(vector: np.ndarray) -> dict[str, np.ndarray]:
    """(265,) motion vector → dict of per-frame arrays {scale (1,1), pitch/yaw/roll (1,66), t (1,3), exp (1,63)}."""
    vector = np.asarray(vector)
    if vector.shape != (MOTION_DIM,):
        raise ValueError(f"motion vector: expected shape ({MOTION_DIM},), got {vector.shape}")
    motion = {}
    start = 0
    for key, shape in MOTION_LAYOUT:
        values = vector[start:start + shape[1]].reshape(shape)
        motion[key] = values + _SCALE_OFFSET if key == "scale" else values.copy()
        start += shape[1]
    return motion


def bins_to_degrees(logits: np.ndarray) -> np.ndarray:
    """Head angle in degrees from (B, 66) bin logits: 3·E[bin] − 97.5 under the softmax.

    Any other shape is returned unchanged: the reference treats it as already being degrees.
    """
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] != NUM_BINS:
        return logits
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    bins = np.arange(NUM_BINS, dtype=logits.dtype)
    return (probs * bins).sum(axis=1) * 3 - 97.5


def smooth_pose(motion: np.ndarray, start: int, stop: int, kernel: int) -> np.ndarray:
    """Centred moving mean over frames [start, stop) of the pose dims (0..201) of (n, 265) motion.

    The window holds kernel//2 frames on each side, truncated at the ends of the sequence, and
    reads the unmodified input (no cascade). kernel ≤ 1 disables it. Returns a new array.
    """
    smoothed = motion.copy()
    if kernel <= 1 or stop <= start:
        return smoothed
    half = kernel // 2
    n = len(motion)
    padded = np.zeros((n + 2 * half, POSE_DIM), dtype=motion.dtype)
    padded[half:half + n] = motion[:, :POSE_DIM]
    rows = np.arange(start, stop)
    # Summing the window in ascending frame order in float32 (the zero padding adds exactly
    # nothing) reproduces the reference's per-frame np.mean bit for bit.
    total = np.zeros((len(rows), POSE_DIM), dtype=motion.dtype)
    for offset in range(2 * half + 1):
        total += padded[rows + offset]
    counts = np.minimum(rows + half + 1, n) - np.maximum(rows - half, 0)
    smoothed[start:stop, :POSE_DIM] = total / counts[:, None]
    return smoothed


# -- noise ---------------------------------------------------------------------------------------------

class GaussianNoise:
    """Standard-normal (1, 80, 265) float32 tensors handed out in draw order.

    Drawn like the reference (`randn(1, 80, 265).astype(float32)` on numpy's legacy MT19937
    generator), so `GaussianNoise(seed)` yields what `np.random.seed(seed)` gave the reference.
    seed=None seeds from OS entropy (the reference does not seed). With `bank` (M, 1, 80, 265)
    the tensors are bank[0], bank[1], ... instead.
    """

    def __init__(self, seed: int | None = None, *, bank: np.ndarray | None = None) -> None:
        self._rng = np.random.RandomState(seed)
        self._bank = None if bank is None else np.asarray(bank, dtype=np.float32)
        if self._bank is not None and self._bank.shape[1:] != CLIP_SHAPE:
            raise ValueError(f"GaussianNoise: bank must have shape (M, {', '.join(map(str, CLIP_SHAPE))}), "
                             f"got {self._bank.shape}")
        self._drawn = 0

    def draw(self) -> np.ndarray:
        if self._bank is None:
            tensor = self._rng.randn(*CLIP_SHAPE).astype(np.float32)
        elif self._drawn < len(self._bank):
            tensor = self._bank[self._drawn].copy()
        else:
            raise IndexError(f"GaussianNoise: the injected bank of {len(self._bank)} tensors is used up")
        self._drawn += 1
        return tensor


# -- DDIM sampler --------------------------------------------------------------------------------------

GuidedStep = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class DDIMSampler:
    """The reference's DDIM loop for one clip, with the per-update noise fixed at setup.

    Update i: x = x0·√ᾱ_next[i] + c[i]·ε + σ[i]·noise[i] in float32; the last step returns x0.
    The same step noise is reused for every clip (as in the reference).
    """

    def __init__(self, num_steps: int, step_noise: np.ndarray) -> None:
        """step_noise: (num_steps−1, 1, 80, 265), entry i for update i."""
        self.tables: DdimTables = ddim_tables(num_steps)
        self.step_noise = np.asarray(step_noise, dtype=np.float32)
        expected = (num_steps - 1, *CLIP_SHAPE)
        if self.step_noise.shape != expected:
            raise ValueError(f"DDIMSampler: step_noise must have shape {expected}, got {self.step_noise.shape}")

    @classmethod
    def drawn_from(cls, num_steps: int, noise: GaussianNoise) -> DDIMSampler:
        """A sampler whose num_steps−1 step noises are the next draws of `noise` (the reference's setup)."""
        step_noise = np.stack([noise.draw() for _ in range(num_steps - 1)]) if num_steps > 1 \
            else np.zeros((0, *CLIP_SHAPE), dtype=np.float32)
        return cls(num_steps, step_noise)

    def sample(self, lmdm: Network, kp_cond: np.ndarray, cond: np.ndarray, x_T: np.ndarray) -> np.ndarray:
        """Denoise x_T (1,80,265) given kp_cond (1,265) and the clip condition (1,80,1103) → (1,80,265)."""
        _check_shape("x_T", x_T, CLIP_SHAPE)
        _check_shape("kp_cond", kp_cond, (1, MOTION_DIM))
        if cond.ndim != 3 or cond.shape[:2] != (1, SEQ_FRAMES):
            raise ValueError(f"DDIMSampler: cond must have shape (1, {SEQ_FRAMES}, C), got {cond.shape}")
        t = self.tables
        guided_step = self._guided_step(lmdm, kp_cond, cond)
        x = x_T
        for i, time_next in enumerate(t.time_pairs[:, 1]):
            pred_noise, x_start = guided_step(x, i)
            if time_next < 0:
                x = x_start
            else:
                x = x_start * t.alpha_next_sqrt[i] + t.c[i] * pred_noise + t.sigma[i] * self.step_noise[i]
        return x

    def _guided_step(self, lmdm: Network, kp_cond: np.ndarray, cond: np.ndarray) -> GuidedStep:
        """The clip's guided LMDM step (x, step index) → (pred_noise, x_start): hoisted when the network
        offers clip sampling, else one plain network call per step."""
        sampling = clip_sampling_of(lmdm)
        time_cond = self.tables.time_cond
        if sampling is not None:
            clip = sampling.prepare_clip(kp_cond, cond, time_cond)
            return lambda x, i: sampling.guided_step(x, clip, i)
        return lambda x, i: lmdm(x=x, cond_frame=kp_cond, cond=cond,
                                 time_cond=np.array([time_cond[i]], dtype=np.int64))


def _check_shape(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if np.shape(array) != shape:
        raise ValueError(f"DDIMSampler: {name} must have shape {shape}, got {np.shape(array)}")


# -- clip loop -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Audio2MotionOptions:
    """Setup kwargs of the clip loop (reference names in brackets; DITTO_SPEC §2.4), taken as
    `RenderOptions` validated them."""

    overlap: int = 10  # [overlap_v2] frames shared by consecutive clips
    smo_k_d: int = 3  # pose smoothing window; 1 disables
    fix_kp_cond: int = 0  # every N-th clip restarts from the source motion; 0 never
    fix_kp_cond_dim: tuple[int, int] | None = None  # dims [ds, de) kept from the generated frame on restart
    sampling_timesteps: int = 50
    online_mode: bool = False  # only changes the cross-fade length here
    v_min_max_for_clip: np.ndarray | None = None  # (2, 265) per-dim clamp of the output motion

    @property
    def valid_clip_len(self) -> int:
        """New frames each clip adds (V = 80 − O)."""
        return SEQ_FRAMES - self.overlap

    @property
    def fuse_length(self) -> int:
        """Frames cross-faded between consecutive clips: O offline, min(O, V) online."""
        return min(self.overlap, self.valid_clip_len) if self.online_mode else self.overlap


class Audio2Motion:
    """Generates (n, 265) motion from condition clips, chaining clips through kp_cond.

    Construction is the reference's setup: it draws the sampler's step noise from `noise` first;
    every clip then draws its x_T from the same stream.
    """

    def __init__(self, lmdm: Network, source_motion: Mapping[str, np.ndarray],
                 options: Audio2MotionOptions | None = None, noise: GaussianNoise | None = None) -> None:
        """
        source_motion: the source's frame-0 motion dict (for a video source, after its smoothing).
        noise: `GaussianNoise(seed)` for reproducible runs; default unseeded, as in the reference.
        """
        self.lmdm = lmdm
        self.options = options or Audio2MotionOptions()
        self.noise = noise or GaussianNoise()
        self.sampler = DDIMSampler.drawn_from(self.options.sampling_timesteps, self.noise)
        self.source_kp_cond = motion_dict_to_vector(source_motion)[None]  # (1, 265)
        fuse = self.options.fuse_length
        self._fuse_alpha = (np.arange(fuse, dtype=np.float32) / max(fuse, 1))[:, None]  # α_j = j / F
        self.reset()

    def reset(self) -> None:
        """Restart the clip chain from the source motion (the noise stream carries on)."""
        self.kp_cond = self.source_kp_cond.copy()
        self.clip_idx = 0

    def generate_clip(self, cond: np.ndarray, motion: np.ndarray | None) -> np.ndarray:
        """Sample one clip for cond (1, 80, 1103) and fuse it onto `motion` (n, 265; None for the first).

        Returns the extended motion (a new array; `motion` is not modified): 80 frames after the
        first clip, V more after each later one. Updates kp_cond for the next clip.
        """
        pred = self.sampler.sample(self.lmdm, self.kp_cond, cond, self.noise.draw())[0]
        k = self.options.smo_k_d
        if motion is None:
            motion = smooth_pose(pred, 0, len(pred), k)
        else:
            old_len = len(motion)
            motion = self._fuse(motion, pred)
            # Re-smooth the cross-faded frames and the seam frame just after them.
            motion = smooth_pose(motion, old_len - self.options.fuse_length, old_len + 1, k)
        self.clip_idx += 1
        self._update_kp_cond(motion)
        return motion

    def _fuse(self, motion: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Cross-fade the last F frames of `motion` into the clip frames just before its new part, then append it."""
        fuse, new_start = self.options.fuse_length, self.options.overlap  # new part = pred[O:], V frames
        tail = motion[len(motion) - fuse:]
        incoming = pred[new_start - fuse:new_start]
        alpha = self._fuse_alpha
        blended = tail * (1 - alpha) + incoming * alpha
        return np.concatenate([motion[:len(motion) - fuse], blended, pred[new_start:]])

    def _update_kp_cond(self, motion: np.ndarray) -> None:
        """kp_cond for the next clip: the frame just before where that clip starts (len − O − 1)."""
        generated = motion[len(motion) - self.options.overlap - 1][None]
        period = self.options.fix_kp_cond
        if period > 0 and self.clip_idx % period == 0:
            self.kp_cond = self.source_kp_cond.copy()
            if self.options.fix_kp_cond_dim is not None:
                ds, de = self.options.fix_kp_cond_dim
                self.kp_cond[:, ds:de] = generated[:, ds:de]
        else:
            self.kp_cond = generated.copy()

    def generate_offline(self, cond_all: np.ndarray) -> np.ndarray:
        """Motion (N, 265) for the whole utterance's condition rows (N, 1103), before the output clamp.

        Clips start every V frames; the last one is padded by repeating its final row. The result
        is cut to N frames and smoothed once more over its full length.
        """
        return np.concatenate(list(self.offline_blocks([np.asarray(cond_all)], len(cond_all))))

    def offline_blocks(self, cond_blocks: Iterable[np.ndarray], num_frames: int) -> Iterator[np.ndarray]:
        """`generate_offline`'s rows in order, as soon as no later clip can change them.

        `cond_blocks` yields the utterance's num_frames condition rows in blocks of any size and
        is read only as far as the next clip needs. After a clip, rows before its cross-fade
        region are settled, and the final smoothing of a row reads only `smo_k_d // 2` settled
        neighbours on each side, so each block equals the same rows of the whole-utterance result.
        """
        if num_frames <= 0:
            raise ValueError("Audio2Motion.generate_offline: cond_all holds no frames")
        self.reset()
        kernel = self.options.smo_k_d
        half = kernel // 2 if kernel > 1 else 0
        incoming = iter(cond_blocks)
        pending: np.ndarray | None = None  # condition rows from the current clip's start on
        motion: np.ndarray | None = None  # the utterance's motion from row `base` on
        base = 0
        # Rows the next clip reads behind the end of `motion`: its cross-fade and the smoothing
        # around it, and the kp_cond row. Earlier rows, once emitted, are dropped: memory stays
        # bounded by a clip whatever the utterance's length, and each clip costs the same.
        kept_tail = max(self.options.fuse_length + half, self.options.overlap + 1)
        emitted = 0
        for start in range(0, num_frames, self.options.valid_clip_len):
            needed = min(SEQ_FRAMES, num_frames - start)
            while pending is None or len(pending) < needed:
                block = next(incoming, None)
                if block is None:
                    received = start + (0 if pending is None else len(pending))
                    raise ValueError(f"Audio2Motion: condition rows ended after {received} of {num_frames} frames")
                pending = block if pending is None else np.concatenate([pending, block])
            clip = pending[:SEQ_FRAMES]
            if len(clip) < SEQ_FRAMES:
                clip = np.concatenate([clip, np.repeat(clip[-1:], SEQ_FRAMES - len(clip), axis=0)])
            motion = self.generate_clip(clip[None], motion)
            pending = pending[self.options.valid_clip_len:]
            last = start + self.options.valid_clip_len >= num_frames
            settled = num_frames if last else min(base + len(motion) - self.options.fuse_length - half, num_frames)
            if settled > emitted:
                low, high = max(emitted - half, 0), min(settled + half, num_frames)
                window = smooth_pose(motion[low - base:high - base], emitted - low, settled - low, kernel)
                yield window[emitted - low:settled - low]
                emitted = settled
            keep_from = min(emitted - half, base + len(motion) - kept_tail)
            if keep_from > base:
                motion, base = motion[keep_from - base:].copy(), keep_from

    def clamp(self, motion: np.ndarray) -> np.ndarray:
        """(n, 265) motion clamped per dim when v_min_max_for_clip is set (the reference's output clamp)."""
        bounds = self.options.v_min_max_for_clip
        if bounds is None:
            return motion
        bounds = np.asarray(bounds, dtype=motion.dtype)
        return np.clip(motion, bounds[0], bounds[1])

    def to_frame_dicts(self, motion: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Per-frame motion dicts from (n, 265) motion, clamped per dim when v_min_max_for_clip is set."""
        return [motion_vector_to_dict(frame) for frame in self.clamp(motion)]
