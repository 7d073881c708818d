"""Property-based tests (issue 16) for audio chunking and command-line parsing. The render
options' own properties (any value is canonical or one ValueError, `--set` round trips) are in
test_options.py."""

from __future__ import annotations

import argparse
import contextlib
import io
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ditto_fast.cli import _chunksize, build_parser
from ditto_fast.stages.audio import SAMPLE_RATE, SAMPLES_PER_FRAME, AudioError, as_mono_16k, frame_count
from ditto_fast.stages.audio_windows import LiveWindows, frames_to_samples, offline_windows

HUBERT_EXTRA = 80  # samples a HuBERT window has beyond its frames

CHUNKSIZES = st.tuples(st.integers(0, 5), st.integers(1, 6), st.integers(0, 5))


def reference_online_windows(audio: np.ndarray, chunksize) -> list[np.ndarray]:
    """The reference's online script (DITTO_SPEC §5.6): `left` frames of silence in front, a
    window of int(sum · 0.04 · 16000) + 80 samples every `valid` frames, zero-padded at the end."""
    padded = np.concatenate([np.zeros(chunksize[0] * SAMPLES_PER_FRAME, np.float32), audio])
    length = frames_to_samples(sum(chunksize)) + HUBERT_EXTRA
    return [np.pad(padded[i:i + length], (0, max(0, i + length - len(padded))))
            for i in range(0, len(padded), chunksize[1] * SAMPLES_PER_FRAME)]


@settings(max_examples=150, deadline=None)
@given(chunksize=CHUNKSIZES, samples=st.integers(0, 12_000), cuts=st.lists(st.integers(0, 12_000), max_size=8))
def test_live_windows_do_not_depend_on_how_the_audio_is_cut(chunksize, samples, cuts):
    audio = np.random.default_rng(samples).uniform(-1, 1, samples).astype(np.float32)
    try:
        cutter = LiveWindows(chunksize, HUBERT_EXTRA)
    except ValueError as exc:  # a window shorter than its stride: refused up front
        assert "shorter than its stride" in str(exc)
        return
    windows = []
    edges = sorted({0, samples, *(c for c in cuts if c <= samples)})
    for start, end in zip(edges, edges[1:]):
        windows += cutter.push(audio[start:end])
    windows += cutter.flush()
    expected = reference_online_windows(audio, chunksize)
    assert len(windows) == len(expected)
    for got, want in zip(windows, expected):
        np.testing.assert_array_equal(got, want)


@settings(max_examples=100, deadline=None)
@given(chunksize=CHUNKSIZES, samples=st.integers(0, 40_000))
def test_offline_windows_cover_every_frame_once(chunksize, samples):
    windows = list(offline_windows(np.zeros(samples, np.float32), chunksize, HUBERT_EXTRA))
    assert len(windows) == math.ceil(frame_count(samples) / chunksize[1])
    assert all(w.shape == (frames_to_samples(sum(chunksize)) + HUBERT_EXTRA,) and w.dtype == np.float32
               for w in windows)


@settings(max_examples=300, deadline=None)
@given(samples=st.integers(0, 10**9))
def test_frame_count_is_the_25_fps_ceiling_give_or_take_the_reference_rounding(samples):
    frames = frame_count(samples)
    assert samples / SAMPLES_PER_FRAME <= frames <= samples / SAMPLES_PER_FRAME + 1
    assert frame_count(samples + 1) >= frames


AUDIO_DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int16, np.int32, np.int8, np.uint8,
                                np.uint16, np.complex64, np.bool_])


@settings(max_examples=200, deadline=None)
@given(samples=hnp.arrays(AUDIO_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, max_side=300)),
       rate=st.one_of(st.integers(-10, 200_000), st.floats(allow_nan=True), st.booleans(), st.none()))
def test_any_array_and_rate_become_finite_16k_mono_or_one_audio_error(samples, rate):
    try:
        mono = as_mono_16k(samples, rate)
    except AudioError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert mono.dtype == np.float32 and mono.ndim == 1 and np.isfinite(mono).all()
    n = samples.shape[0]
    assert len(mono) == (n if rate == SAMPLE_RATE else math.ceil(n * SAMPLE_RATE / rate))


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=20),
                      st.lists(st.integers(-3, 12), max_size=5).map(lambda v: ",".join(map(str, v)))))
def test_chunksize_flag_parses_to_three_valid_counts_or_a_usage_error(text):
    try:
        past, current, future = _chunksize(text)
    except argparse.ArgumentTypeError as exc:
        assert "expected PAST,CURRENT,FUTURE" in str(exc) and "\n" not in str(exc)
        return
    assert past >= 0 and current >= 1 and future >= 0


NUMERIC_FLAGS = ("--threads", "--frame-batch", "--crf", "--seed", "--emo")
FLAG_VALUES = st.one_of(st.integers(-2**70, 2**70).map(str), st.text(max_size=12),
                        st.floats(allow_nan=True).map(repr))


@settings(max_examples=200, deadline=None)
@given(values=st.fixed_dictionaries({}, optional={flag: FLAG_VALUES for flag in NUMERIC_FLAGS}),
       command=st.sampled_from(["render", "stream"]))
def test_any_flag_values_parse_or_end_in_one_usage_error(values, command):
    """argparse either accepts a value (the options' own checks then run) or exits 1 with the
    usage and one error line: never another exception."""
    argv = [command, "--demo", "--out", "x.mp4"]
    for flag, value in values.items():
        argv += [f"{flag}={value}"]  # `=`: a value starting with '-' stays a value
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = build_parser(command).parse_args(argv)
    except SystemExit as exit_info:
        errors = [line for line in err.getvalue().splitlines() if ": error: " in line]
        assert exit_info.code == 1 and len(errors) == 1
        return
    for flag in values:
        assert isinstance(getattr(args, flag.lstrip("-").replace("-", "_")), int)


@pytest.mark.parametrize("text", ["3,5,2", " 3, 5, 2", "0,1,0"])
def test_chunksize_flag_examples(text):
    assert _chunksize(text) == tuple(int(v) for v in text.split(","))
