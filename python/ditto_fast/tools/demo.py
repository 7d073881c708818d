"""The project's own demo inputs: a drawn portrait and speech-like audio.

The portrait is drawn from the canonical face of the synthetic checkpoints
(`synthetic.face_layout`), so with `checkpoints/synthetic-tiny` the landmarks land on its
eyes and mouth. The audio is voiced syllables (a harmonic source with a wandering pitch,
shaped by syllable envelopes, with pauses), whose loudness is what the synthetic HuBERT
carries: the lips open on syllables and close in pauses.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ditto_fast.stages.audio import SAMPLE_RATE, write_wav
from ditto_fast.tools.synthetic import face_layout as face

BOX_FRACTION = face.DETECTOR_BOX_FRACTION

SKIN, SKIN_SHADOW = (224, 178, 150), (196, 146, 120)
HAIR, SHIRT = (58, 40, 32), (52, 86, 140)
LIPS, IRIS, BROW = (170, 70, 78), (70, 110, 60), (70, 50, 40)


def _to_pixels(size: int):
    box = BOX_FRACTION * size

    def point(u: float, v: float) -> tuple[int, int]:
        # box units -> pixels, at 1/16 px precision for cv2's shift-based drawing
        return (round((size / 2 + u * box) * 16), round((size / 2 + v * box) * 16))

    def length(u: float) -> int:
        return round(u * box * 16)

    return point, length


def demo_portrait(size: int = 512) -> np.ndarray:
    """An RGB uint8 head-and-shoulders portrait, square, face centred."""
    if size < 128 or size % 2:
        raise ValueError(f"portrait size must be an even number >= 128, got {size}")
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    image = np.stack([150 + 60 * y, 170 + 40 * x, 200 - 30 * y], axis=-1).astype(np.uint8)
    point, length = _to_pixels(size)
    aa, shift = cv2.LINE_AA, 4

    def ellipse(centre, radii, colour, angle=0.0, thickness=-1):
        cv2.ellipse(image, point(*centre), (length(radii[0]), length(radii[1])), angle, 0, 360, colour,
                    thickness, aa, shift)

    ellipse((0.0, 1.25), (0.95, 0.55), SHIRT)  # shoulders
    ellipse((0.0, 0.55), (0.17, 0.3), SKIN_SHADOW)  # neck
    ellipse((0.0, -0.12), (0.46, 0.47), HAIR)  # hair behind the face
    ellipse(face.FACE_OVAL_CENTRE, face.FACE_OVAL_RADII, SKIN)
    ellipse((0.0, -0.43), (0.36, 0.1), HAIR)  # fringe
    for side in (-1, 1):
        ex, ey = side * face.EYE_CENTRE[0], face.EYE_CENTRE[1]
        ellipse((side * face.EAR[0], face.EAR[1]), (0.04, 0.08), SKIN_SHADOW)
        ellipse((ex, ey), (face.EYE_HALF_WIDTH, face.EYE_HALF_HEIGHT), (245, 245, 240))
        ellipse((ex, ey), (face.IRIS_RADIUS, face.IRIS_RADIUS), IRIS)
        ellipse((ex, ey), (0.009, 0.009), (20, 20, 20))
        brow = [point(side * face.BROW_INNER_X, face.BROW_Y + 0.01), point(side * face.BROW_OUTER_X, face.BROW_Y)]
        cv2.polylines(image, [np.array(brow)], False, BROW, max(2, size // 120), aa, shift)
    nose = [point(0.0, face.NOSE_BRIDGE_TOP), point(0.03, face.NOSE_TIP[1]), point(-0.02, face.NOSE_BASE_CENTRE[1])]
    cv2.polylines(image, [np.array(nose)], False, SKIN_SHADOW, max(2, size // 160), aa, shift)
    ellipse((0.0, face.MOUTH_Y), (face.MOUTH_HALF_WIDTH, face.LIP_HALF_HEIGHT), LIPS)
    ellipse((0.0, face.MOUTH_Y), (face.INNER_LIP_HALF_WIDTH, face.INNER_LIP_HALF_HEIGHT), (110, 40, 50))
    return image


def demo_speech(seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    """Float32 mono 16 kHz speech-like audio: syllables of ~0.2 s with pauses between phrases."""
    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    pitch = 140 + 25 * np.sin(2 * np.pi * 0.7 * t) + 10 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))  # a buzzy, voice-like source
    envelope = np.zeros(n)
    start = int(0.3 * SAMPLE_RATE)
    while start < n:
        phrase_end = start + int(rng.uniform(1.0, 1.8) * SAMPLE_RATE)
        while start < min(phrase_end, n):
            length = int(rng.uniform(0.12, 0.28) * SAMPLE_RATE)
            end = min(start + length, n)
            envelope[start:end] = np.sin(np.linspace(0, np.pi, end - start)) * rng.uniform(0.5, 1.0)
            start = end + int(rng.uniform(0.02, 0.08) * SAMPLE_RATE)
        start += int(rng.uniform(0.35, 0.6) * SAMPLE_RATE)  # a pause between phrases
    noise = rng.normal(0, 0.02, n)
    return (0.25 * envelope * voice / np.abs(voice).max() + noise * envelope).astype(np.float32)


def write_demo_inputs(folder: str | Path, seconds: float = 4.0) -> tuple[Path, Path]:
    """Write `portrait.png` and `speech.wav` into `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    portrait = folder / "portrait.png"
    if not cv2.imwrite(str(portrait), cv2.cvtColor(demo_portrait(), cv2.COLOR_RGB2BGR)):
        raise OSError(f"{portrait}: could not write the demo portrait")
    return portrait, write_wav(folder / "speech.wav", demo_speech(seconds))
