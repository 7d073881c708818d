"""The zero-cost network doubles honour the tensor contract, and the offline engine renders with them."""

from __future__ import annotations

import numpy as np
import pytest

from ditto_fast.backends.base import Network
from ditto_fast.contract import MODELS, check_model, hubert_frames
from ditto_fast.engine.offline import RenderJob
from ditto_fast.ops.paste_back import PASTE_SIZE, PasteBack, render_to_hwc
from ditto_fast.options import RenderOptions
from ditto_fast.tools.benchmark_doubles import (
    RENDER_NETWORKS,
    crop_to_frame,
    still_avatar,
    zero_cost_networks,
)

HUBERT_SAMPLES = 6480  # one offline HuBERT window


def _concrete(shape: tuple[int | str, ...], symbolic: int) -> tuple[int, ...]:
    return tuple(symbolic if isinstance(d, str) else d for d in shape)


def _contract_inputs(name: str) -> dict[str, np.ndarray]:
    return {t.name: np.zeros(_concrete(t.shape, HUBERT_SAMPLES), dtype=t.dtype) for t in MODELS[name].inputs}


@pytest.fixture(scope="module")
def networks() -> dict[str, Network]:
    return zero_cost_networks()


@pytest.mark.parametrize("name", RENDER_NETWORKS)
def test_double_declares_the_contract(networks, name):
    network = networks[name]
    assert isinstance(network, Network)
    check_model(name, str(network.path), network.inputs, network.outputs)  # raises on any mismatch


@pytest.mark.parametrize("name", RENDER_NETWORKS)
def test_double_answers_with_contract_shapes_read_only(networks, name):
    outputs = networks[name](**_contract_inputs(name))
    specs = MODELS[name].outputs
    assert len(outputs) == len(specs)
    for output, spec in zip(outputs, specs):
        assert output.shape == _concrete(spec.shape, hubert_frames(HUBERT_SAMPLES)), spec.name
        assert output.dtype == np.dtype(spec.dtype), spec.name
    if name != "stitch_network":  # the stitch double computes a fresh array per call
        with pytest.raises(ValueError, match="read-only"):
            outputs[0][(0,) * outputs[0].ndim] = 1


def test_double_rejects_wrong_inputs(networks):
    inputs = _contract_inputs("warp_network")
    with pytest.raises(ValueError, match="zero-cost warp_network.*expected inputs"):
        networks["warp_network"](**{**inputs, "extra": inputs["kp_source"]})
    with pytest.raises(ValueError, match="input 'kp_driving' has shape"):
        networks["warp_network"](**{**inputs, "kp_driving": np.zeros((1, 20, 3), np.float32)})
    with pytest.raises(ValueError, match="zero-cost hubert.*outside"):
        networks["hubert"](input_values=np.zeros((1, 100_000), np.float32))


def test_decoder_double_is_a_visible_face_in_range(networks):
    (image,) = networks["decoder"](**_contract_inputs("decoder"))
    assert 0 <= image.min() and image.max() <= 1
    assert image.std() > 0.1  # structure, not a flat colour


def test_stitch_double_nudges_driving_keypoints_without_touching_inputs(networks):
    rng = np.random.default_rng(0)
    kp_source, kp_driving = (rng.standard_normal((1, 21, 3)).astype(np.float32) for _ in range(2))
    before = kp_driving.copy()
    (out,) = networks["stitch_network"](kp_source=kp_source, kp_driving=kp_driving)
    np.testing.assert_array_equal(kp_driving, before)
    assert 0 < np.abs(out - kp_driving).max() < 1e-2


@pytest.mark.parametrize("size", [(1432, 1432), (1080, 1920)])
def test_crop_covers_the_share_of_the_frame_and_lies_inside(size):
    height, width = size
    m_c2o = crop_to_frame(height, width, crop_share=0.57)
    corners = np.array([[0, 0, 1], [PASTE_SIZE, 0, 1], [0, PASTE_SIZE, 1], [PASTE_SIZE, PASTE_SIZE, 1]]) @ m_c2o.T
    assert (corners[:, 0] >= 0).all() and (corners[:, 0] <= width).all()
    assert (corners[:, 1] >= 0).all() and (corners[:, 1] <= height).all()
    side = np.linalg.norm(corners[1, :2] - corners[0, :2])
    assert side == pytest.approx(0.57 * min(size), rel=1e-4)


def test_crop_share_outside_unit_interval_is_rejected():
    with pytest.raises(ValueError, match="crop_share"):
        crop_to_frame(100, 100, crop_share=1.5)


def test_engine_renders_frames_with_the_doubles(networks):
    avatar = still_avatar(480, 640, crop_share=0.57)
    frames = 6
    job = RenderJob(networks, avatar, RenderOptions(seed=0), features=np.zeros((frames, 1024), np.float32))
    (decoded,) = networks["decoder"](**_contract_inputs("decoder"))
    expected = PasteBack()(avatar.frames[0], render_to_hwc(decoded), avatar.m_c2o[0])
    background = avatar.frames[0]
    rendered = [(frame.index, frame.rgb.copy()) for frame in job]
    assert [index for index, _ in rendered] == list(range(frames))
    for _, rgb in rendered:
        np.testing.assert_array_equal(rgb, expected)
    changed = (expected != background).any(axis=2)
    # the face covers the crop (the feathered rim included) and nothing outside it
    crop_area = (0.57 * min(avatar.frame_size)) ** 2
    assert changed.mean() == pytest.approx(crop_area / background[..., 0].size, rel=0.03)
    assert not changed[0].any() and not changed[-1].any()
