"""The synthetic tiny ONNX set: tensor contract, determinism, size and what each model is built for.

Decoding that the real pipeline will do elsewhere (SCRFD, BlazeFace, FaceMesh projection, crop
geometry, eye features, softmax degrees, the DDIM noise formula) is re-implemented here in a few
lines of NumPy from DITTO_SPEC, so the checks do not lean on the code under test.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from conftest import REFERENCE
from ditto_fast import contract
from ditto_fast.backends.onnx_gridsample import count_plugin_nodes, to_native, to_plugin
from ditto_fast.diffusion_schedule import cosine_alphas_cumprod
from ditto_fast.tools.demo import demo_portrait
from ditto_fast.tools.synthetic import face_layout
from ditto_fast.tools.synthetic.tiny_models import blazeface_anchor_centres, build_tiny_onnx_set

REF = REFERENCE
NETWORK_OF_FILE = {
    "appearance_extractor.onnx": "appearance_extractor",
    "motion_extractor.onnx": "motion_extractor",
    "warp_network_ori.onnx": "warp_network",
    "decoder.onnx": "decoder",
    "stitch_network.onnx": "stitch_network",
    "lmdm_v0.4_hubert.onnx": "lmdm",
    "hubert.onnx": "hubert",
    "insightface_det.onnx": "insightface_det",
    "landmark106.onnx": "landmark106",
    "landmark203.onnx": "landmark203",
    "blaze_face.onnx": "blaze_face",
    "face_mesh.onnx": "face_mesh",
}
ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64"}
SIZE_BUDGET_BYTES = 15_000_000
HUBERT_TEST_LENGTH = 6480


def _session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


class Nets:
    """One onnxruntime session per network, called by network name."""

    def __init__(self, models: dict) -> None:
        self.sessions = {NETWORK_OF_FILE[f]: _session(m) for f, m in models.items()}

    def __call__(self, network: str, **feeds: np.ndarray) -> list[np.ndarray]:
        return self.sessions[network].run(None, feeds)


@pytest.fixture(scope="module")
def models():
    return build_tiny_onnx_set()


@pytest.fixture(scope="module")
def nets(models):
    return Nets(models)


def _official_contract() -> dict:
    path = REF / "io_contract.json"
    if not path.is_file():
        pytest.skip(f"{path} is not available on this machine")
    return json.loads(path.read_text())["models"]


# -- Small NumPy references ---------------------------------------------------------------------
def _test_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) in [0.05, 0.95]: smooth colour gradients plus hard-edged discs."""
    longest = max(height, width)
    y, x = np.mgrid[0:height, 0:width] / longest
    image = np.stack([0.2 + 0.6 * x, 0.25 + 0.5 * y, 0.5 + 0.3 * np.sin(6 * x + 3 * y)], -1)
    rng = np.random.default_rng(seed)
    for _ in range(6):
        cx, cy = rng.uniform(0.15, 0.85, 2) * (width / longest, height / longest)
        radius = rng.uniform(0.03, 0.12)
        image[(x - cx) ** 2 + (y - cy) ** 2 < radius**2] = rng.uniform(0.05, 0.95, 3)
    return image


def _nchw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)


def _upsample2(image: np.ndarray) -> np.ndarray:
    """Bilinear ×2 with half-pixel centres and clamped edges (what cv2.resize does)."""
    for axis in (0, 1):
        a = np.moveaxis(image, axis, 0)
        padded = np.concatenate([a[:1], a, a[-1:]])
        even, odd = 0.75 * a + 0.25 * padded[:-2], 0.75 * a + 0.25 * padded[2:]
        image = np.moveaxis(np.stack([even, odd], 1).reshape(2 * len(a), *a.shape[1:]), 0, axis)
    return image


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def _degrees(logits: np.ndarray) -> float:
    p = np.exp(logits - logits.max())
    return float(3 * (p / p.sum()) @ np.arange(logits.size) - 97.5)


def _alphas_cumprod() -> np.ndarray:
    """The cosine schedule of DITTO_SPEC §5.10 (float32 alphas, cumulative product as torch's)."""
    s, steps = 0.008, 1000
    f = np.cos((np.arange(steps + 1) / steps + s) / (1 + s) * np.pi / 2) ** 2
    betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999).astype(np.float32)
    return np.cumprod((1 - betas).astype(np.float64)).astype(np.float32)


def _scrfd_faces(outputs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every (box x1y1x2y2, kps (5,2)) scoring ≥ 0.5, decoded as in DITTO_SPEC §4.8."""
    faces = []
    for level, stride in enumerate((8, 16, 32)):
        scores, boxes, kps = outputs[level], outputs[3 + level], outputs[6 + level]
        cells = 512 // stride
        y, x = np.mgrid[:cells, :cells]
        anchors = np.repeat(np.stack([x.ravel(), y.ravel()], -1) * stride, 2, axis=0)
        for i in np.flatnonzero(scores[:, 0] >= 0.5):
            left_top, right_bottom = boxes[i, :2] * stride, boxes[i, 2:] * stride
            box = np.concatenate([anchors[i] - left_top, anchors[i] + right_bottom])
            faces.append((box, anchors[i] + kps[i].reshape(5, 2) * stride))
    return faces


def _blaze_anchors() -> np.ndarray:
    rows = []
    for cells, per_cell in ((16, 2), (8, 6)):
        for y in range(cells):
            for x in range(cells):
                rows += [((x + 0.5) / cells, (y + 0.5) / cells)] * per_cell
    return np.array(rows)


def _blaze_faces(regressors: np.ndarray, classificators: np.ndarray):
    """(box in 128-px units, keypoints normalised) of every anchor scoring ≥ 0.5 (§4.11)."""
    anchors = _blaze_anchors()
    scores = 1 / (1 + np.exp(-np.clip(classificators[0, :, 0], -50, 100)))
    faces = []
    for i in np.flatnonzero(scores >= 0.5):
        r = regressors[0, i]
        xc, yc = r[0] / 128 + anchors[i, 0], r[1] / 128 + anchors[i, 1]
        w, h = r[2] / 128, r[3] / 128
        box = 128 * np.array([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2])
        faces.append((box, r[4:].reshape(6, 2) / 128 + anchors[i]))
    return faces


def _crop_transform(points, eye_groups, lip_group, dsize, scale, vy_ratio):
    """DITTO_SPEC §5.2: (M_o2c 2×3, θ) of the rotated square crop built from `points`."""
    eye = np.mean([points[list(g)].mean(0) for g in eye_groups], 0)
    uy = points[list(lip_group)].mean(0) - eye
    uy /= np.linalg.norm(uy)
    ux = np.array([uy[1], -uy[0]])
    theta = np.arctan2(ux[1], ux[0])
    c0 = points.mean(0)
    r = (points - c0) @ np.stack([ux, uy]).T
    lo, hi = r.min(0), r.max(0)
    side = (hi - lo).max() * scale
    centre = c0 + ux * (lo + hi)[0] / 2 + uy * ((lo + hi)[1] / 2 + vy_ratio * side)
    s, c, n = dsize / side, np.cos(theta), np.sin(theta)
    return np.array([[s * c, s * n, dsize / 2 - s * (c * centre[0] + n * centre[1])],
                     [-s * n, s * c, dsize / 2 - s * (-n * centre[0] + c * centre[1])]]), theta


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _invert(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]


def _source_keypoints(nets) -> np.ndarray:
    """x_s of a frontal, neutral source: scale·kp (R = I, exp = t = 0)."""
    outputs = nets("motion_extractor", image=np.zeros((1, 3, 256, 256), np.float32))
    return (outputs[5][0, 0] * outputs[6].reshape(1, 21, 3)).astype(np.float32)


def _render(nets, image: np.ndarray, kp_source: np.ndarray, kp_driving: np.ndarray) -> np.ndarray:
    (volume,) = nets("appearance_extractor", image=_nchw(image))
    (feature,) = nets("warp_network", feature_3d=volume, kp_source=kp_source, kp_driving=kp_driving)
    (rgb,) = nets("decoder", feature=feature)
    return rgb[0].transpose(1, 2, 0)


# -- Contract, determinism, size ------------------------------------------------------------------
def _contract_feeds(spec: contract.ModelSpec) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for tensor in spec.inputs:
        if tensor.dtype == "int64":
            feeds[tensor.name] = np.array([999], dtype=np.int64)
        else:
            shape = [HUBERT_TEST_LENGTH if d == "N" else d for d in tensor.shape]
            feeds[tensor.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    return feeds


@pytest.mark.parametrize("file_name", sorted(NETWORK_OF_FILE))
def test_model_honours_the_tensor_contract(nets, file_name):
    network = NETWORK_OF_FILE[file_name]
    session, spec = nets.sessions[network], contract.MODELS[network]

    def infos(nodes):
        return [contract.TensorInfo(n.name, tuple(n.shape), ORT_TYPES[n.type]) for n in nodes]

    contract.check_model(network, file_name, infos(session.get_inputs()),
                         infos(session.get_outputs()))
    assert [o.name for o in session.get_outputs()] == [t.name for t in spec.outputs]
    values = session.run(None, _contract_feeds(spec))
    for expected, value in zip(spec.outputs, values, strict=True):
        assert value.dtype == np.dtype(expected.dtype), expected.name
        assert np.isfinite(value).all(), expected.name
        if expected.shape is not None:
            frames = contract.hubert_frames(HUBERT_TEST_LENGTH)
            shape = tuple(frames if d == "T" else d for d in expected.shape)
            assert value.shape == shape, expected.name
        elif expected.elements is not None:
            assert value.size == expected.elements, expected.name


def test_names_dtypes_shapes_and_order_match_the_official_contract_file(nets):
    official = _official_contract()
    for network, session in nets.sessions.items():
        for kind, nodes in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
            listed = official[network][kind]
            assert [n.name for n in nodes] == [t["name"] for t in listed], (network, kind)
            for node, tensor in zip(nodes, listed):
                assert ORT_TYPES[node.type] == tensor["dtype"], (network, node.name)
                if "?" not in tensor["shape"]:
                    assert len(node.shape) == len(tensor["shape"]), (network, node.name)
                    pairs = zip(tensor["shape"], node.shape)
                    assert all(isinstance(e, str) or e == f for e, f in pairs), (network, node.name)


def test_same_seed_builds_byte_identical_models(models):
    again = build_tiny_onnx_set(seed=0)
    assert {k: m.SerializeToString() for k, m in again.items()} == {
        k: m.SerializeToString() for k, m in models.items()}
    other = build_tiny_onnx_set(seed=1)
    assert other["hubert.onnx"].SerializeToString() != models["hubert.onnx"].SerializeToString()


def test_whole_set_fits_the_size_budget(models):
    assert set(models) == set(NETWORK_OF_FILE)
    assert sum(len(m.SerializeToString()) for m in models.values()) <= SIZE_BUDGET_BYTES


def test_models_use_opset_20_and_the_native_5d_gridsample(models):
    for model in models.values():
        assert [(o.domain, o.version) for o in model.opset_import] == [("", 20)]
    warp_nodes = models["warp_network_ori.onnx"].graph.node
    (grid_sample,) = [n for n in warp_nodes if n.op_type == "GridSample"]
    attributes = {a.name: a for a in grid_sample.attribute}
    assert attributes["mode"].s == b"linear" and attributes["padding_mode"].s == b"zeros"
    assert attributes["align_corners"].i == 0


# -- Renderer -------------------------------------------------------------------------------------
def test_zero_motion_reproduces_the_source_at_512(nets):
    image = _test_image(256, 256)
    kp = _source_keypoints(nets)
    (volume,) = nets("appearance_extractor", image=_nchw(image))
    assert (volume == volume[:, :, :1]).all()  # depth-constant, so any z sample reads the same
    (feature,) = nets("warp_network", feature_3d=volume, kp_source=kp, kp_driving=kp)
    assert np.array_equal(feature[:, :32], volume[:, :, 0])
    assert not feature[:, 32:].any()
    (rgb,) = nets("decoder", feature=feature)
    assert rgb.min() >= 0 and rgb.max() <= 1
    assert _psnr(rgb[0].transpose(1, 2, 0), _upsample2(image)) >= 30


def _peak(window: np.ndarray) -> np.ndarray:
    """(x, y) of the brightest spot: the centroid of the pixels within 10% of the maximum."""
    luma = window.mean(-1)
    y, x = np.nonzero(luma > luma.max() - 0.1 * (luma.max() - luma.min()))
    return np.array([x.mean(), y.mean()])


@pytest.mark.parametrize("shift", [(0.06, 0.0), (-0.06, 0.0), (0.0, -0.06)])
def test_moving_one_driving_keypoint_moves_the_content_near_it(nets, shift):
    kp_source = _source_keypoints(nets)
    moved, still = 3, 11  # nose tip; left eye, far from it
    yy, xx = (np.mgrid[0:256, 0:256] + 0.5) / 128 - 1  # normalised pixel centres
    image = np.full((256, 256, 3), 0.1)
    for k in (moved, still):  # a bright bump on each keypoint
        distance2 = (xx - kp_source[0, k, 0]) ** 2 + (yy - kp_source[0, k, 1]) ** 2
        image += 0.8 * np.exp(-distance2 / (2 * 0.02**2))[..., None]
    kp_driving = kp_source.copy()
    kp_driving[0, moved, :2] += shift
    before = _render(nets, image, kp_source, kp_source)
    after = _render(nets, image, kp_source, kp_driving)

    def bump(rgb, k):  # where keypoint k's bump is, near its source position, in 512 px
        x, y = ((kp_source[0, k, :2] + 1) * 256).astype(int)
        return _peak(rgb[y - 40:y + 40, x - 40:x + 40])

    # The content at a keypoint follows it; a few % are lost to the neighbours' Gaussians.
    expected = np.array(shift) * 256  # normalised units → pixels of the 512 render
    np.testing.assert_allclose(bump(after, moved) - bump(before, moved), expected, atol=1.5)
    np.testing.assert_allclose(bump(after, still), bump(before, still), atol=0.25)


def test_stitch_network_returns_the_driving_keypoints(nets):
    rng = np.random.default_rng(1)
    kp_source, kp_driving = rng.uniform(-1, 1, (2, 1, 21, 3)).astype(np.float32)
    (out,) = nets("stitch_network", kp_source=kp_source, kp_driving=kp_driving)
    assert np.array_equal(out, kp_driving)


def test_warp_survives_the_gridsample3d_plugin_round_trip(models, nets):
    plugin_form = to_plugin(models["warp_network_ori.onnx"])
    assert count_plugin_nodes(plugin_form) == 1
    native = _session(to_native(plugin_form))
    (volume,) = nets("appearance_extractor", image=_nchw(_test_image(256, 256)))
    kp_source = _source_keypoints(nets)
    kp_driving = kp_source + np.float32(0.03)
    feeds = {"feature_3d": volume, "kp_source": kp_source, "kp_driving": kp_driving}
    (expected,) = nets("warp_network", **feeds)
    np.testing.assert_allclose(native.run(None, feeds)[0], expected, atol=1e-6)


# -- Motion extractor -----------------------------------------------------------------------------
def test_motion_extractor_returns_a_frontal_neutral_face_whatever_the_image(nets):
    first = nets("motion_extractor", image=_nchw(_test_image(256, 256)))
    second = nets("motion_extractor", image=np.zeros((1, 3, 256, 256), np.float32))
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)
    pitch, yaw, roll, t, exp, scale, kp = first
    for logits in (pitch, yaw, roll):
        assert abs(_degrees(logits[0])) < 1e-3
    assert not t.any() and not exp.any()
    assert scale[0, 0] == pytest.approx(1.5)
    kp = kp.reshape(21, 3)
    assert np.abs(kp).max() <= 0.65
    left_eye, right_eye, nose, upper_lip, lower_lip, chin = kp[[11, 15, 3, 6, 17, 4]]
    assert left_eye[0] < 0 < right_eye[0] and left_eye[1] == right_eye[1]
    assert left_eye[1] < nose[1] < upper_lip[1] < lower_lip[1] < chin[1]  # y grows downwards
    # The reference's eye and lip masks pick keypoints that really sit on the eyes and lips.
    eyes, lips = kp[list(face_layout.EYE_KEYPOINTS)], kp[list(face_layout.LIP_KEYPOINTS)]
    assert np.abs(eyes[:, 1] - left_eye[1]).max() < 0.03
    assert (nose[1] < lips[:, 1]).all() and (lips[:, 1] < chin[1]).all()
    assert np.abs(lips[:, 0]).max() < np.abs(left_eye[0])  # no wider than the eyes are apart


# -- Audio ----------------------------------------------------------------------------------------
def _rising_tone(samples: int, start: float, stop: float) -> np.ndarray:
    """200 Hz (its period divides the 400-sample window and the 320 hop), rising envelope."""
    t = np.arange(samples)
    return (np.linspace(start, stop, samples) * np.sin(2 * np.pi * t / 80)).astype(np.float32)[None]


@pytest.mark.parametrize("samples", contract.HUBERT_LENGTHS)
def test_hubert_frames_carry_the_loudness_of_their_window(nets, samples):
    wave = _rising_tone(samples, 0.01, 0.5)
    (silent,) = nets("hubert", input_values=np.zeros_like(wave))
    (loud,) = nets("hubert", input_values=wave)
    frames = (samples - 400) // 320 + 1
    assert loud.shape == silent.shape == (frames, 1024)
    assert np.array_equal(silent, np.broadcast_to(silent[0], silent.shape))
    excess = loud - silent
    norms = np.linalg.norm(excess, axis=1)
    assert (np.diff(norms) > 0).all()
    windows = np.lib.stride_tricks.sliding_window_view(wave[0].astype(np.float64), 400)[::320]
    rms = np.sqrt((windows**2).mean(1))
    np.testing.assert_allclose(norms / norms[-1], rms / rms[-1], rtol=1e-3)
    cosines = excess @ excess[-1] / (norms * norms[-1])
    np.testing.assert_allclose(cosines, 1.0, atol=1e-5)  # all along one direction


def _video_rate_features(nets, wave: np.ndarray) -> np.ndarray:
    """HuBERT frames averaged in pairs, as the reference turns 50 Hz into 25 fps."""
    (features,) = nets("hubert", input_values=wave)
    return features[: len(features) // 2 * 2].reshape(-1, 2, 1024).mean(1)


def _lmdm_inputs(audio: np.ndarray, cond_frame: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cond = rng.normal(size=(1, 80, 1103)).astype(np.float32)
    cond[0, :, :1024] = audio
    return {"x": rng.normal(size=(1, 80, 265)).astype(np.float32), "cond_frame": cond_frame,
            "cond": cond, "time_cond": np.array([999], np.int64)}


def _source_motion(nets) -> np.ndarray:
    """(1, 265) motion of the synthetic source: [scale−1 | pitch | yaw | roll | t | exp]."""
    image = np.zeros((1, 3, 256, 256), np.float32)
    pitch, yaw, roll, t, exp, scale, _ = nets("motion_extractor", image=image)
    return np.concatenate([scale - 1, pitch, yaw, roll, t, exp], 1)


def test_lmdm_returns_cond_frame_exactly_for_silence(nets):
    cond_frame = np.random.default_rng(2).normal(size=(1, 265)).astype(np.float32)
    hubert_silence = _video_rate_features(nets, np.zeros((1, 6480), np.float32))[:1]
    for audio in (np.zeros((80, 1024), np.float32), np.repeat(hubert_silence, 80, 0)):
        _, x_start = nets("lmdm", **_lmdm_inputs(audio, cond_frame))
        assert np.array_equal(x_start, np.broadcast_to(cond_frame[:, None], x_start.shape))


def test_lmdm_opens_the_lips_more_for_louder_speech(nets):
    source = _source_motion(nets)
    wave = _rising_tone(80 * 640 + 400, 0.002, 0.4)  # one video frame per 640 samples
    audio = _video_rate_features(nets, wave)[:80]
    _, x_start = nets("lmdm", **_lmdm_inputs(audio, source))
    changed = np.flatnonzero((x_start[0] != source).any(0))
    lip_dims = {202 + 3 * k + axis for k in face_layout.LIP_KEYPOINTS for axis in range(3)}
    assert changed.size and set(changed) <= lip_dims  # the motion stitch keeps only these from lmdm
    # Driving keypoints of a frontal pose: x_d = scale·(kp + exp); y grows downwards.
    kp, scale = _source_keypoints(nets)[0], source[0, 0] + 1
    exp = x_start[0, :, 202:].reshape(80, 21, 3)
    rest_gap = kp[17, 1] - kp[6, 1]  # lower lip below upper lip
    gap = rest_gap + scale * (exp[:, 17, 1] - exp[:, 6, 1])
    assert rest_gap > 0 and (np.diff(gap) > 0).all() and gap[0] > rest_gap
    assert gap[-1] - rest_gap > 0.05  # visibly open: > 6 px of the 256 crop


@pytest.mark.parametrize("step", [0, 19, 500, 999])
def test_lmdm_pred_noise_follows_the_ddim_formula(nets, step):
    rng = np.random.default_rng(step)
    inputs = _lmdm_inputs(rng.normal(size=(80, 1024)).astype(np.float32) * 0.1,
                          rng.normal(size=(1, 265)).astype(np.float32))
    inputs["time_cond"] = np.array([step], np.int64)
    pred_noise, x_start = nets("lmdm", **inputs)
    abar = np.float64(_alphas_cumprod()[step])
    expected = (inputs["x"] - np.sqrt(abar) * x_start.astype(np.float64)) / np.sqrt(1 - abar)
    np.testing.assert_allclose(pred_noise, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_alphas_cumprod_matches_the_reference_table():
    path = REF / "constants.json"
    if not path.is_file():
        pytest.skip(f"{path} is not available on this machine")
    table = np.array(json.loads(path.read_text())["alphas_cumprod_f32"], np.float32)
    assert np.array_equal(cosine_alphas_cumprod(), table)
    assert np.array_equal(_alphas_cumprod(), table)


# -- Face detection and landmarks -----------------------------------------------------------------
def _letterbox(height: int, width: int, face: bool = True) -> tuple[np.ndarray, int, int]:
    """The detector blob of a (height, width) frame (§4.8) and the letterboxed size: the demo
    portrait centred on a textured background (or, `face=False`, the texture alone)."""
    ratio = height / width
    new_h, new_w = (512, int(512 / ratio)) if ratio > 1 else (int(512 * ratio), 512)
    canvas = np.zeros((512, 512, 3))
    canvas[:new_h, :new_w] = np.round(_test_image(new_h, new_w, seed=3) * 255)
    if face:
        side = min(new_h, new_w) // 2 * 2
        top, left = (new_h - side) // 2, (new_w - side) // 2
        canvas[top:top + side, left:left + side] = demo_portrait(side)
    canvas[:new_h // 8, :new_w // 8] = 0  # black inside the frame (away from the face) is fine
    return _nchw((canvas[..., ::-1] - 127.5) / 128), new_h, new_w


def test_detector_finds_no_face_in_a_texture(nets):
    blob, _, _ = _letterbox(1024, 1024, face=False)
    assert _scrfd_faces(nets("insightface_det", image=blob)) == []


@pytest.mark.parametrize("height, width", [(1024, 1024), (1200, 900), (720, 1280)])
def test_detector_finds_exactly_one_centred_face(nets, height, width):
    blob, new_h, new_w = _letterbox(height, width)
    faces = _scrfd_faces(nets("insightface_det", image=blob))
    assert len(faces) == 1
    box, kps = faces[0]
    np.testing.assert_allclose((box[:2] + box[2:]) / 2, (new_w / 2, new_h / 2), atol=1.0)
    np.testing.assert_allclose(box[2:] - box[:2], 0.45 * min(new_h, new_w), atol=1.0)
    assert ((kps > box[:2]) & (kps < box[2:])).all()
    left_eye, right_eye, nose, left_mouth, right_mouth = kps
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert left_eye[1] == right_eye[1] < nose[1] < left_mouth[1] == right_mouth[1]


def test_blazeface_reports_exactly_one_face_with_level_eyes(nets):
    rng = np.random.default_rng(4)
    image = rng.uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    faces = _blaze_faces(*nets("blaze_face", input=image))
    assert len(faces) == 1
    box, keypoints = faces[0]
    assert (0 < box[:2]).all() and (box[:2] < box[2:]).all() and (box[2:] < 128).all()
    assert keypoints[0, 1] == pytest.approx(keypoints[1, 1]) and keypoints[0, 0] < keypoints[1, 0]


def test_blazeface_anchor_layout():
    assert np.array_equal(blazeface_anchor_centres(), _blaze_anchors())
    path = REF / "constants.json"
    if not path.is_file():
        pytest.skip(f"{path} is not available on this machine")
    reference = np.array(json.loads(path.read_text())["blazeface_anchors_xy_896"])
    assert np.array_equal(_blaze_anchors(), reference)


def _eye_features(lmk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DITTO_SPEC §5.4 on normalised (478, 3) landmarks: eye_open (2,), eye_ball (6,)."""
    def d(i, j):
        return np.linalg.norm(lmk[i] - lmk[j])

    def unit(v):
        return v / (np.linalg.norm(v) + 1e-8)

    opens, moves = [], []
    for outer, inner, pairs, ball in ((33, 133, ((145, 159), (144, 160), (153, 158)), 468),
                                      (263, 362, ((374, 386), (373, 387), (380, 385)), 473)):
        opens.append(sum(d(*p) for p in pairs) / (d(outer, inner) + 1e-8))
        offset = lmk[ball] - (lmk[outer] + lmk[inner]) / 2
        moves.append((unit(offset) - unit(lmk[outer] - lmk[inner])) * np.linalg.norm(offset))
    return np.array(opens), np.stack(moves, -1).ravel()


def test_registration_chain_gives_an_upright_centred_face_with_open_eyes(nets):
    """SCRFD → 106 → tracking crop → 203 → final crop → BlazeFace → FaceMesh on a 1024² frame,
    and every model's idea of where the eyes are agrees inside the final crop."""
    blob, _, _ = _letterbox(1024, 1024)
    ((box, _),) = _scrfd_faces(nets("insightface_det", image=blob))
    box = box / 0.5  # det_scale of a 1024² frame
    centre, s = (box[:2] + box[2:]) / 2, 192 / (1.5 * (box[2:] - box[:2]).max())
    (fc1,) = nets("landmark106", data=np.zeros((1, 3, 192, 192), np.float32))
    lmk106 = ((fc1.reshape(106, 2) + 1) * 96 - 96) / s + centre
    eyes106, lips106 = ([33, 35, 40, 39], [87, 89, 94, 93]), [52, 61]
    track, track_theta = _crop_transform(lmk106, eyes106, lips106, 224, 1.5, -0.1)
    (raw203,) = nets("landmark203", input=np.zeros((1, 3, 224, 224), np.float32))
    lmk203 = _apply(_invert(track), raw203.reshape(203, 2) * 224)
    eyes203, lips203 = ([0, 6, 12, 18], [24, 30, 36, 42]), [48, 66]
    final, final_theta = _crop_transform(lmk203, eyes203, lips203, 512, 2.3, -0.125)
    assert abs(track_theta) < 1e-6 and abs(final_theta) < 1e-6
    crop_centre = _apply(_invert(final), np.array([[256.0, 256.0]]))[0]
    assert crop_centre[0] == pytest.approx(512, abs=0.5)  # centred in the 1024-wide frame
    corners = _apply(final, np.array([box[:2], box[2:]]))
    assert (corners > 0).all() and (corners < 512).all()  # the whole face box is in the crop

    blaze_input = np.zeros((1, 128, 128, 3), np.float32)
    ((blaze_box, blaze_kps),) = _blaze_faces(*nets("blaze_face", input=blaze_input))
    roi_box = blaze_box * 4  # 128 → 512 crop pixels
    roi_centre, roi_side = (roi_box[:2] + roi_box[2:]) / 2, 1.5 * (roi_box[2:] - roi_box[:2]).max()
    rotation = -np.arctan2(blaze_kps[0, 1] - blaze_kps[1, 1], blaze_kps[1, 0] - blaze_kps[0, 0])
    assert rotation == pytest.approx(0.0)
    (mesh, _, _) = nets("face_mesh", input=np.zeros((1, 256, 256, 3), np.float32))
    lmk478 = (mesh.reshape(478, 3) / 256 - [0.5, 0.5, 0]) * roi_side + [*roi_centre, 0]
    lmk478 /= 512
    eye_open, eye_ball = _eye_features(lmk478)
    assert (0.6 < eye_open).all() and (eye_open < 1.2).all()
    # Looking straight ahead: no vertical component; the iris sits a little in front of the eye
    # corners (the face surface bulges), which gives the small x/z components real eyes have too.
    assert np.abs(eye_ball[2:4]).max() < 1e-6 and np.abs(eye_ball).max() < 0.02

    eyes_203 = _apply(final, lmk203[[201, 202]])
    eyes_mesh = lmk478[[468, 473], :2] * 512
    eyes_kp = (_source_keypoints(nets)[0, [11, 15], :2] + 1) * 256 - 0.5  # align_corners=0 → pixels
    np.testing.assert_allclose(eyes_mesh, eyes_203, atol=0.01)
    np.testing.assert_allclose(eyes_kp, eyes_203, atol=0.01)
