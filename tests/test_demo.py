"""The project's own demo inputs."""

from __future__ import annotations

import wave

import cv2
import numpy as np
import pytest

from ditto_fast.tools.demo import SAMPLE_RATE, demo_portrait, demo_speech, write_demo_inputs
from ditto_fast.tools.synthetic import face_layout


def test_portrait_features_sit_on_the_synthetic_layout():
    size = 512
    image = demo_portrait(size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    box = face_layout.DETECTOR_BOX_FRACTION * size

    def pixel(u, v):
        return image[round(size / 2 + v * box), round(size / 2 + u * box)].astype(int)

    for side in (-1, 1):  # pupils are dark at the layout's eye centres
        assert pixel(side * face_layout.EYE_CENTRE[0], face_layout.EYE_CENTRE[1]).max() < 60
    mouth = pixel(face_layout.MOUTH_HALF_WIDTH * 0.8, face_layout.MOUTH_Y)
    assert mouth[0] > mouth[1] + 60  # lips are red
    assert np.array_equal(demo_portrait(size), image)  # deterministic


def test_speech_has_syllables_and_pauses():
    audio = demo_speech(4.0)
    assert audio.shape == (4 * SAMPLE_RATE,) and audio.dtype == np.float32
    frame_rms = np.sqrt((audio[: len(audio) // 640 * 640].reshape(-1, 640) ** 2).mean(axis=1))
    assert (frame_rms < 0.01).sum() >= 10  # silent video frames (pauses) ...
    assert (frame_rms > 0.05).sum() >= 30  # ... and loud ones (syllables)
    assert np.array_equal(demo_speech(4.0), audio) and not np.array_equal(demo_speech(4.0, seed=1), audio)
    with pytest.raises(ValueError):
        demo_speech(0)


def test_written_files_read_back(tmp_path):
    portrait, speech = write_demo_inputs(tmp_path, seconds=1.5)
    assert cv2.imread(str(portrait)).shape == (512, 512, 3)
    with wave.open(str(speech)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getnframes()) == (SAMPLE_RATE, 1, 24000)
