"""Tiny, hand-constructed ONNX models with the exact tensor contract of the official Ditto set.

They are neither trained nor random: each one computes something simple and meaningful, so a
synthetic checkpoint renders a portrait that visibly speaks and the geometry of the whole chain
is testable end to end:

- appearance_extractor → warp_network_ori → decoder reproduce the 256² source at 512² when the
  source and driving keypoints agree (luma/chroma 4:2:0 packed by space-to-depth into the
  feature volume), and move image content with the keypoints otherwise;
- hubert carries the loudness of each 400-sample window; lmdm opens the lips with it;
- motion_extractor, the detectors and the landmark models return the canonical face of
  `face_layout`, each in its own coordinate convention.
"""

from __future__ import annotations

import numpy as np
import onnx

from ditto_fast.checkpoints import NATIVE_WARP_ONNX, file_stem
from ditto_fast.diffusion_schedule import cosine_alphas_cumprod
from ditto_fast.tools.synthetic import face_layout
from ditto_fast.tools.synthetic.onnx_builder import GraphBuilder

# -- Image representation shared by appearance_extractor and decoder --------------------------
# Full-range BT.601 (JPEG) luma/chroma: luma keeps full resolution, chroma is halved both ways.
RGB_TO_YUV = np.array([[0.299, 0.587, 0.114],
                       [-0.168736, -0.331264, 0.5],
                       [0.5, -0.418688, -0.081312]])
LUMA_BLOCK = 4  # 256² luma → 16 channels at 64²
CHROMA_BLOCK = 2  # 128² chroma planes → 4 channels each at 64²
PACKED_CHANNELS = LUMA_BLOCK**2 + 2 * CHROMA_BLOCK**2  # 24 of the volume's 32 channels
VOLUME_SHAPE = (1, 32, 16, 64, 64)
WARP_OUT_CHANNELS = 256

# -- Warp ---------------------------------------------------------------------------------------
# Gaussian influence widths (x, y) of one keypoint, in normalised coordinates (the crop spans 2).
# x matches the reference heatmaps' variance 0.01; y is halved so the upper- and lower-lip
# keypoints (0.055 apart) each pull their own lip and the gap between them opens, while the
# largest lip motion (1.5·LIP_OPEN_MAX) stays about 2σ, short of visibly folding the image.
WARP_SIGMA = (0.1, 0.05)

# -- Motion extractor ---------------------------------------------------------------------------
POSE_BINS = 66
POSE_LOGIT_WIDTH = 2.0  # bins; logits are symmetric about bin 32.5, i.e. 3·32.5 − 97.5 = 0°

# -- Audio: hubert + lmdm -----------------------------------------------------------------------
HUBERT_WINDOW, HUBERT_HOP, HUBERT_FEATURES = 400, 320, 1024
HUBERT_OFFSET_SCALE = 0.01  # the small constant added to every feature (orthogonal to the loudness)
LOUDNESS_FLOOR = 1e-4  # RMS below this is silence: exactly no lip motion
GATE_LOUDNESS = 0.002  # RMS at which the lips leave cond_frame for the loudness-driven pose (tanh)
LIP_OPEN_LOUDNESS = 0.12  # RMS of loud speech (tanh knee of the opening)
LIP_OPEN_MAX = 0.07  # exp units; the lower lip drops by 1.5·0.07 normalised (27 px at 512) at most
LMDM_FRAMES, MOTION_DIMS, COND_DIMS = 80, 265, 1103
EXP_OFFSET = 202  # motion layout: [scale−1 | pitch 66 | yaw 66 | roll 66 | t 3 | exp 63]

# -- Detectors ----------------------------------------------------------------------------------
DETECTOR_SIZE = 512
SCRFD_STRIDES = (8, 16, 32)
DETECTOR_PAD_VALUE = (0 - 127.5) / 128  # a black canvas pixel after (px − 127.5)/128
MIN_VALID_EXTENT = 16.0  # pixels; keeps the box sane for an all-black image
FACE_SCORE, BACKGROUND_SCORE = 0.89, 0.01
# The detector's faceness test, in box units: luminance over a small window at each eye, the
# mouth, both cheeks and the chin; a face has every skin window brighter than every dark one by
# FACE_CONTRAST (after the detector's (px − 127.5)/128 scaling: 40 grey levels). The demo portrait
# has 94; a flat image has 0, and uniform noise over 5×5-point windows has ~15 levels of spread.
FACE_DARK_POINTS = (face_layout.EYE_CENTRE, (-face_layout.EYE_CENTRE[0], face_layout.EYE_CENTRE[1]),
                    (0.0, face_layout.MOUTH_Y))
FACE_SKIN_POINTS = ((0.22, 0.02), (-0.22, 0.02), (0.0, 0.28))
FACE_WINDOW_RADIUS = 0.02  # box units: inside the iris (0.022) and the lips
FACE_CONTRAST = 40 / 128
BLAZE_SIZE = 128
BLAZE_FACE_LOGIT, BLAZE_BACKGROUND_LOGIT = 4.0, -6.0
MESH_PRESENCE_LOGIT = 10.0


def _conv1x1(matrix: np.ndarray) -> np.ndarray:
    return matrix.reshape(*matrix.shape, 1, 1)


# -- Renderer ---------------------------------------------------------------------------------
def _unpack_yuv(g: GraphBuilder, planes: str) -> tuple[str, str]:
    """Packed (1, ≥24, 64, 64) → luma (1,1,256,256) and chroma (1,2,128,128)."""
    luma_channels = LUMA_BLOCK**2
    luma = g.op("DepthToSpace", g.slice(planes, 1, 0, luma_channels), blocksize=LUMA_BLOCK)
    chroma = g.op("DepthToSpace", g.slice(planes, 1, luma_channels, PACKED_CHANNELS),
                  blocksize=CHROMA_BLOCK)
    return luma, chroma


def _pack_yuv(g: GraphBuilder, luma: str, chroma: str, channels: int) -> str:
    """Luma (1,1,256,256) and chroma (1,2,128,128) → packed (1, channels, 64, 64), zero-padded."""
    cells = VOLUME_SHAPE[-1]
    # Expand, not Pad: Pad changed at opset 18 and ONNX cannot convert it back to the warp's
    # plugin form at opset 17.
    spare = g.op("Expand", g.const(np.zeros((1, 1, 1, 1))),
                 g.ints(1, channels - PACKED_CHANNELS, cells, cells))
    return g.concat(g.op("SpaceToDepth", luma, blocksize=LUMA_BLOCK),
                    g.op("SpaceToDepth", chroma, blocksize=CHROMA_BLOCK), spare, axis=1)


def build_appearance_extractor() -> onnx.ModelProto:
    """image (1,3,256,256) → pred (1,32,16,64,64): YUV 4:2:0 packed by space-to-depth into 24 of
    the 32 channels (the rest zero) and repeated along depth, so any z sample reads the same."""
    g = GraphBuilder("appearance_extractor")
    image = g.input("image", (1, 3, 256, 256))
    yuv = g.op("Conv", image, g.const(_conv1x1(RGB_TO_YUV)))
    chroma = g.op("AveragePool", g.slice(yuv, 1, 1, 3), kernel_shape=[2, 2], strides=[2, 2])
    planes = _pack_yuv(g, g.slice(yuv, 1, 0, 1), chroma, VOLUME_SHAPE[1])
    volume = g.op("Expand", g.op("Unsqueeze", planes, g.ints(2)), g.ints(*VOLUME_SHAPE))
    g.output(volume, "pred", VOLUME_SHAPE)
    return g.build("Synthetic appearance extractor: YUV 4:2:0 space-to-depth packing.")


def _pixel_centre_grid(size: int) -> np.ndarray:
    """(size², 2) normalised (x, y) of the pixel centres, row-major: with align_corners=0 these
    sample every pixel exactly, so zero motion reproduces the input bit for bit."""
    axis = (2 * np.arange(size) + 1) / size - 1
    y, x = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([x.ravel(), y.ravel()], -1)


def _displacement_grid(g: GraphBuilder, kp_source: str, kp_driving: str, size: int) -> str:
    """(1, 1, size, size, 3) sampling grid, z = 0 (the single depth slice) and
    D(p) = p + Σ_k g_k(p)(x_s,k − x_d,k) / max(1, Σ_k g_k(p)), g_k a Gaussian on driving keypoint k."""
    grid = g.const(_pixel_centre_grid(size))
    source_xy = g.reshape(g.slice(kp_source, 2, 0, 2), 21, 2)
    driving_xy = g.reshape(g.slice(kp_driving, 2, 0, 2), 21, 2)
    offsets = g.op("Sub", g.op("Unsqueeze", grid, g.ints(1)), driving_xy)  # (P, 21, 2)
    scaled = g.op("Mul", offsets, g.const(1 / np.asarray(WARP_SIGMA)))
    distance2 = g.op("ReduceSum", g.op("Mul", scaled, scaled), g.ints(-1), keepdims=0)
    weights = g.op("Exp", g.op("Mul", distance2, g.const(-0.5)))  # (P, 21)
    pull = g.op("MatMul", weights, g.op("Sub", source_xy, driving_xy))  # (P, 2)
    norm = g.op("Max", g.op("ReduceSum", weights, g.ints(1), keepdims=1), g.const(1.0))
    xy = g.op("Add", grid, g.op("Div", pull, norm))
    z = g.op("Expand", g.const(np.zeros((1, 1))), g.ints(size * size, 1))
    xyz = g.concat(xy, z, axis=1)
    return g.reshape(xyz, 1, 1, size, size, 3)


def build_warp_network() -> onnx.ModelProto:
    """feature_3d, kp_source, kp_driving → out (1,256,64,64).

    A backward warp shaped like the reference's sparse motions (the output at a driving keypoint
    samples the source keypoint): overlapping keypoints average their motions, and keypoints that
    stay put hold their surroundings. It warps the unpacked 256² YUV image (one depth slice of the
    depth-constant volume, chroma repeated to 256²) with a 5-D GridSample, so content moves pixel
    by pixel rather than in packed 4×4 blocks, then packs it again (chroma back to 128² by 2×2
    means, exact for zero motion). The packed channels lead the 256 outputs, the rest are zero.
    """
    g = GraphBuilder("warp_network_ori")
    volume = g.input("feature_3d", VOLUME_SHAPE)
    kp_source = g.input("kp_source", (1, 21, 3))
    kp_driving = g.input("kp_driving", (1, 21, 3))
    cells = VOLUME_SHAPE[-1]
    size = cells * LUMA_BLOCK
    planes = g.reshape(g.slice(volume, 2, 0, 1), 1, VOLUME_SHAPE[1], cells, cells)
    luma, chroma = _unpack_yuv(g, planes)
    chroma = g.op("Resize", chroma, "", g.const([1.0, 1.0, 2.0, 2.0]), mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    image = g.op("Unsqueeze", g.concat(luma, chroma, axis=1), g.ints(2))  # (1, 3, 1, 256, 256)
    warped = g.op("GridSample", image, _displacement_grid(g, kp_source, kp_driving, size),
                  mode="linear", padding_mode="zeros", align_corners=0)
    warped = g.reshape(warped, 1, 3, size, size)
    chroma = g.op("AveragePool", g.slice(warped, 1, 1, 3), kernel_shape=[2, 2], strides=[2, 2])
    out = _pack_yuv(g, g.slice(warped, 1, 0, 1), chroma, WARP_OUT_CHANNELS)
    g.output(out, "out", (1, WARP_OUT_CHANNELS, cells, cells))
    return g.build("Synthetic warp: Gaussian keypoint displacement field + native 5-D GridSample.")


def build_decoder() -> onnx.ModelProto:
    """feature (1,256,64,64) → output (1,3,512,512) in [0,1]: unpack the YUV planes, bilinear
    upsample (luma ×2, chroma ×4; half-pixel centres) and convert back to RGB."""
    g = GraphBuilder("decoder")
    feature = g.input("feature", (1, WARP_OUT_CHANNELS, 64, 64))
    luma, chroma = _unpack_yuv(g, feature)
    luma = g.op("Resize", luma, "", g.const([1.0, 1.0, 2.0, 2.0]), mode="linear")
    chroma = g.op("Resize", chroma, "", g.const([1.0, 1.0, 4.0, 4.0]), mode="linear")
    rgb = g.op("Conv", g.concat(luma, chroma, axis=1), g.const(_conv1x1(np.linalg.inv(RGB_TO_YUV))))
    g.output(g.op("Clip", rgb, g.const(0.0), g.const(1.0)), "output", (1, 3, 512, 512))
    return g.build("Synthetic decoder: YUV 4:2:0 unpacking, bilinear 2x upsampling.")


def build_stitch_network() -> onnx.ModelProto:
    """kp_source, kp_driving → out = kp_driving (a zero correction that still reads kp_source)."""
    g = GraphBuilder("stitch_network")
    kp_source = g.input("kp_source", (1, 21, 3))
    kp_driving = g.input("kp_driving", (1, 21, 3))
    out = g.op("Add", kp_driving, g.op("Mul", kp_source, g.const(0.0)))
    g.output(out, "out", (1, 21, 3))
    return g.build("Synthetic stitching network: identity correction.")


def frontal_pose_logits() -> np.ndarray:
    """(1, 66) bin logits whose softmax expectation is bin 32.5, i.e. 0 degrees."""
    bins = np.arange(POSE_BINS)
    return (-0.5 * ((bins - (POSE_BINS - 1) / 2) / POSE_LOGIT_WIDTH) ** 2)[None].astype(np.float32)


def build_motion_extractor() -> onnx.ModelProto:
    """image → the canonical face: frontal pose, t = 0, exp = 0, scale 1.5, face_layout's kp."""
    g = GraphBuilder("motion_extractor")
    zero = g.zero_from(g.input("image", (1, 3, 256, 256)))
    logits = frontal_pose_logits()
    kp = face_layout.canonical_keypoints().reshape(1, 63)
    for name, value in (("pitch", logits), ("yaw", logits), ("roll", logits),
                        ("t", np.zeros((1, 3))), ("exp", np.zeros((1, 63))),
                        ("scale", np.full((1, 1), face_layout.KEYPOINT_SCALE)), ("kp", kp)):
        g.output(g.op("Add", g.const(value), zero), name, value.shape)
    return g.build("Synthetic motion extractor: fixed canonical face, frontal and neutral.")


# -- Audio --------------------------------------------------------------------------------------
def hubert_vectors(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(loudness direction, constant offset), both (1024,) float32; the offset is orthogonal to
    the direction so projecting a feature on the direction recovers the loudness alone."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(HUBERT_FEATURES)
    direction *= np.sqrt(HUBERT_FEATURES) / np.linalg.norm(direction)
    offset = rng.standard_normal(HUBERT_FEATURES)
    offset -= direction * (offset @ direction) / (direction @ direction)
    offset *= HUBERT_OFFSET_SCALE
    return direction.astype(np.float32), offset.astype(np.float32)


def build_hubert(direction: np.ndarray, offset: np.ndarray) -> onnx.ModelProto:
    """input_values (1,N) → encoding_out (T,1024); row j = RMS(x[320j:320j+400])·direction + offset."""
    g = GraphBuilder("hubert")
    wave = g.input("input_values", (1, "N"))
    power = g.op("Unsqueeze", g.op("Mul", wave, wave), g.ints(1))  # (1, 1, N)
    window = np.full((1, 1, HUBERT_WINDOW), 1 / HUBERT_WINDOW)
    mean_power = g.op("Conv", power, g.const(window), strides=[HUBERT_HOP])  # (1, 1, T)
    rms = g.reshape(g.op("Sqrt", mean_power), -1, 1)
    features = g.op("Add", g.op("MatMul", rms, g.const(direction[None])), g.const(offset))
    g.output(features, "encoding_out", ("T", HUBERT_FEATURES))
    return g.build("Synthetic HuBERT: windowed RMS loudness along a fixed feature direction.")


def lip_opening_direction() -> np.ndarray:
    """(265,) motion-vector change per unit of mouth opening: the lower lip drops (+y is down),
    the mouth corners follow a little and the upper lip rises a little."""
    direction = np.zeros(MOTION_DIMS)
    moves = {face_layout.UPPER_LIP_KEYPOINT: -0.3,
             **{k: 0.3 for k in face_layout.MOUTH_CORNER_KEYPOINTS},
             **{k: 1.0 for k in face_layout.LOWER_LIP_KEYPOINTS}}
    for keypoint, amount in moves.items():
        direction[EXP_OFFSET + 3 * keypoint + 1] = amount
    return direction


def build_lmdm(direction: np.ndarray) -> onnx.ModelProto:
    """x, cond_frame, cond, time_cond → pred_noise, x_start.

    x_start repeats cond_frame over the 80 frames except the lip-opening dims, which move from
    cond_frame towards a loudness-driven opening (rest = exp 0, the motion extractor's) as the
    frame's loudness rises; loudness is the hubert part of cond projected on hubert's direction.
    Silence (loudness ≤ LOUDNESS_FLOOR) leaves x_start exactly cond_frame. The opening does not
    build on cond_frame's own, so chaining clips through cond_frame cannot drift the mouth open.
    pred_noise = (x − √ᾱ_t·x_start)/√(1 − ᾱ_t) with ᾱ of the cosine schedule.
    """
    g = GraphBuilder("lmdm")
    x = g.input("x", (1, LMDM_FRAMES, MOTION_DIMS))
    cond_frame = g.input("cond_frame", (1, MOTION_DIMS))
    cond = g.input("cond", (1, LMDM_FRAMES, COND_DIMS))
    time_cond = g.input("time_cond", (1,), np.int64)

    unmix = (direction / (direction.astype(np.float64) @ direction))[:, None]
    audio = g.slice(cond, 2, 0, HUBERT_FEATURES)
    rms = g.op("MatMul", audio, g.const(unmix))  # (1, 80, 1)
    loudness = g.op("Relu", g.op("Sub", rms, g.const(LOUDNESS_FLOOR)))
    gate = g.op("Tanh", g.op("Mul", loudness, g.const(1 / GATE_LOUDNESS)))
    opening = g.op("Mul", g.op("Tanh", g.op("Mul", loudness, g.const(1 / LIP_OPEN_LOUDNESS))),
                   g.const(LIP_OPEN_MAX))  # (1, 80, 1)
    lips = lip_opening_direction()
    target = g.op("MatMul", opening, g.const(lips[None]))  # (1, 80, 265)
    previous = g.op("Unsqueeze", cond_frame, g.ints(1))  # (1, 1, 265)
    change = g.op("Mul", g.op("Mul", g.op("Sub", target, previous), gate), g.const(lips != 0))
    x_start = g.op("Add", previous, change)

    abar = cosine_alphas_cumprod()
    sqrt_abar = g.op("Gather", g.const(np.sqrt(abar)), time_cond)
    sqrt_one_minus = g.op("Gather", g.const(np.sqrt(np.float32(1) - abar)), time_cond)
    noise = g.op("Div", g.op("Sub", x, g.op("Mul", x_start, sqrt_abar)), sqrt_one_minus)
    g.output(noise, "pred_noise", (1, LMDM_FRAMES, MOTION_DIMS))
    g.output(x_start, "x_start", (1, LMDM_FRAMES, MOTION_DIMS))
    return g.build("Synthetic LMDM: cond_frame with loudness-driven lip opening.")


# -- Face detection and landmarks ---------------------------------------------------------------
def scrfd_anchor_centres(stride: int) -> np.ndarray:
    """(n, 2) pixel centres (x·s, y·s), row-major over (y, x), two anchors per cell in a row."""
    cells = DETECTOR_SIZE // stride
    y, x = np.mgrid[:cells, :cells]
    return np.repeat(np.stack([x.ravel(), y.ravel()], -1) * stride, 2, axis=0).astype(np.float64)


def _faceness(g: GraphBuilder, image: str, centre: str, side: str) -> str:
    """(1,) 1.0 when the box centred at `centre` (x, y pixels) of side `side` holds a face's
    light and dark layout (FACE_* above), else 0.0: the synthetic detector answers faces only."""
    window = np.linspace(-FACE_WINDOW_RADIUS, FACE_WINDOW_RADIUS, 5)
    offsets = np.stack(np.meshgrid(window, window), -1).reshape(-1, 2)
    features = np.array(FACE_DARK_POINTS + FACE_SKIN_POINTS)
    points = (features[:, None, :] + offsets[None]).reshape(-1, 2)  # (features·25, 2) box units
    pixels = g.op("Add", centre, g.op("Mul", side, g.const(points)))
    grid = g.op("Sub", g.op("Mul", g.op("Add", pixels, g.const(0.5)), g.const(2.0 / DETECTOR_SIZE)), g.const(1.0))
    grid = g.reshape(grid, 1, 1, len(points), 2)
    sampled = g.op("GridSample", image, grid, mode="linear", padding_mode="border", align_corners=0)
    luminance = g.reshape(g.op("ReduceMean", sampled, g.ints(1), keepdims=0), len(features), len(offsets))
    means = g.op("ReduceMean", luminance, g.ints(1), keepdims=0)  # (features,)
    dark = g.op("ReduceMax", g.slice(means, 0, 0, len(FACE_DARK_POINTS)), keepdims=1)
    skin = g.op("ReduceMin", g.slice(means, 0, len(FACE_DARK_POINTS), len(features)), keepdims=1)
    return g.op("Cast", g.op("Greater", g.op("Sub", skin, dark), g.const([FACE_CONTRAST])), to=onnx.TensorProto.FLOAT)


def build_insightface_det() -> onnx.ModelProto:
    """image (1,3,512,512) → SCRFD scores/boxes/kps for at most one face.

    The letterboxed frame sits top-left on a canvas whose padding is exactly (0 − 127.5)/128; the
    valid width (height) is one past the last column (row) holding any brighter value. The face
    box is square, centred in the valid region, DETECTOR_BOX_FRACTION of its shorter side, with
    face_layout's keypoints. Every anchor encodes that same box and keypoints; only the first
    anchor of the stride-32 cell holding the box centre scores FACE_SCORE, all others
    BACKGROUND_SCORE — and only when the box holds a face's light and dark layout (`_faceness`):
    a flat image, noise or a landscape scores BACKGROUND_SCORE everywhere, i.e. no face. (A frame
    whose right columns or bottom rows are pure black gets a slightly smaller valid region, which
    only shifts the box a little.)
    """
    g = GraphBuilder("insightface_det")
    image = g.input("image", (1, 3, DETECTOR_SIZE, DETECTOR_SIZE))
    brighter = g.op("Greater", image, g.const(DETECTOR_PAD_VALUE + 0.5 / 128))
    lit = g.op("Cast", brighter, to=onnx.TensorProto.FLOAT)
    ordinals = g.const(np.arange(1, DETECTOR_SIZE + 1))
    extents = []
    for axes in ((0, 1, 2), (0, 1, 3)):  # lit columns → width, lit rows → height
        lit_lines = g.op("ReduceMax", lit, g.ints(*axes), keepdims=0)
        extents.append(g.op("ReduceMax", g.op("Mul", lit_lines, ordinals), keepdims=1))
    size = g.op("Max", g.concat(*extents, axis=0), g.const(MIN_VALID_EXTENT))  # (w, h)
    centre = g.op("Mul", size, g.const(0.5))
    side = g.op("Mul", g.op("ReduceMin", size, keepdims=1),
                g.const(face_layout.DETECTOR_BOX_FRACTION))
    half = g.op("Mul", side, g.const(0.5))
    # [−x1, −y1, x2, y2] so that (anchor terms + this)/stride are the l, t, r, b distances.
    box_terms = g.op("Mul", g.concat(g.op("Sub", centre, half), g.op("Add", centre, half), axis=0),
                     g.const([-1.0, -1.0, 1.0, 1.0]))
    keypoints = g.op("Add", g.op("Tile", centre, g.ints(5)),
                     g.op("Mul", side, g.const(face_layout.detector_keypoints().ravel())))
    face_cell = g.op("Floor", g.op("Mul", centre, g.const(1 / SCRFD_STRIDES[-1])))

    outputs: dict[str, tuple[str, tuple[int, int]]] = {}
    for level, stride in enumerate(SCRFD_STRIDES, start=1):
        anchors = scrfd_anchor_centres(stride)
        n = len(anchors)
        box_anchor_terms = np.concatenate([anchors, -anchors], -1) / stride
        outputs[f"boxes{level}"] = (g.op("Add", g.const(box_anchor_terms),
                                         g.op("Mul", box_terms, g.const(1 / stride))), (n, 4))
        outputs[f"kps{level}"] = (g.op("Add", g.const(-np.tile(anchors, 5) / stride),
                                       g.op("Mul", keypoints, g.const(1 / stride))), (n, 10))
        if stride == SCRFD_STRIDES[-1]:
            cells = anchors / stride
            cells[1::2] = -1  # the second anchor of a cell never matches
            is_face = g.op("ReduceMin", g.op("Cast", g.op("Equal", g.const(cells), face_cell),
                                             to=onnx.TensorProto.FLOAT), g.ints(1), keepdims=1)
            is_face = g.op("Mul", is_face, _faceness(g, image, centre, side))
            scores = g.op("Add", g.op("Mul", is_face, g.const(FACE_SCORE - BACKGROUND_SCORE)),
                          g.const(BACKGROUND_SCORE))
        else:
            scores = g.const(np.full((n, 1), BACKGROUND_SCORE))
        outputs[f"scores{level}"] = (scores, (n, 1))
    for kind in ("scores", "boxes", "kps"):
        for level in range(1, len(SCRFD_STRIDES) + 1):
            value, shape = outputs[f"{kind}{level}"]
            g.output(value, f"{kind}{level}", shape)
    return g.build("Synthetic SCRFD: one centred face box per image that holds a face's layout.")


def _constant_model(name: str, input_name: str, input_shape: tuple[int, ...],
                    outputs: list[tuple[str, np.ndarray]], doc: str) -> onnx.ModelProto:
    """A model whose outputs are fixed arrays (plus 0·mean(input), so the input is still read)."""
    g = GraphBuilder(name)
    zero = g.zero_from(g.input(input_name, input_shape))
    for output_name, value in outputs:
        g.output(g.op("Add", g.const(value), zero), output_name, value.shape)
    return g.build(doc)


def build_landmark106() -> onnx.ModelProto:
    return _constant_model("landmark106", "data", (1, 3, 192, 192),
                           [("fc1", face_layout.landmark106_fc1())],
                           "Synthetic 2d106 landmarks: the canonical face in the 192 crop.")


def build_landmark203() -> onnx.ModelProto:
    return _constant_model("landmark203", "input", (1, 3, 224, 224),
                           [("landmarks", face_layout.landmark203_output())],
                           "Synthetic 203 landmarks: the canonical face in the 224 tracking crop.")


def blazeface_anchor_centres() -> np.ndarray:
    """(896, 2) BlazeFace short-range anchor centres: 16² cells × 2, then 8² cells × 6."""
    centres = []
    for cells, per_cell in ((16, 2), (8, 6)):
        y, x = np.mgrid[:cells, :cells]
        grid = np.stack([(x.ravel() + 0.5) / cells, (y.ravel() + 0.5) / cells], -1)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres)


def blazeface_outputs() -> tuple[np.ndarray, np.ndarray]:
    """(regressors (1,896,16), classificators (1,896,1)): every anchor encodes the layout's face,
    only the anchor nearest to its centre scores above 0.5."""
    face = face_layout.blazeface_detection()
    anchors = blazeface_anchor_centres()
    regressors = np.concatenate([
        face.centre - anchors, np.broadcast_to(face.size, anchors.shape),
        (face.keypoints[None] - anchors[:, None]).reshape(len(anchors), 12),
    ], -1) * BLAZE_SIZE
    logits = np.full((len(anchors), 1), BLAZE_BACKGROUND_LOGIT)
    logits[np.argmin(np.linalg.norm(anchors - face.centre, axis=1))] = BLAZE_FACE_LOGIT
    return regressors[None].astype(np.float32), logits[None].astype(np.float32)


def build_blaze_face() -> onnx.ModelProto:
    regressors, classificators = blazeface_outputs()
    return _constant_model("blaze_face", "input", (1, BLAZE_SIZE, BLAZE_SIZE, 3),
                           [("regressors", regressors), ("classificators", classificators)],
                           "Synthetic BlazeFace: one face in the 512 crop.")


def build_face_mesh() -> onnx.ModelProto:
    """Identity (1,1,1,1434) landmarks; Identity_1 and Identity_2 (1,1,1,1) are presence logits
    (their real shapes are unknown and nothing downstream reads them)."""
    landmarks = face_layout.face_mesh_landmarks().reshape(1, 1, 1, -1).astype(np.float32)
    presence = np.full((1, 1, 1, 1), MESH_PRESENCE_LOGIT, dtype=np.float32)
    return _constant_model("face_mesh", "input", (1, 256, 256, 3),
                           [("Identity", landmarks), ("Identity_1", presence),
                            ("Identity_2", presence)],
                           "Synthetic FaceMesh: the canonical 478-point face in the ROI.")


def build_tiny_onnx_set(seed: int = 0) -> dict[str, onnx.ModelProto]:
    """Every model of the synthetic-tiny checkpoint, keyed by its official ONNX file name.

    The seed picks hubert's feature direction and offset (lmdm reads the same direction); the
    same seed always gives byte-identical models.
    """
    direction, offset = hubert_vectors(seed)
    models = {
        "appearance_extractor": build_appearance_extractor(),
        "motion_extractor": build_motion_extractor(),
        "warp_network": build_warp_network(),
        "decoder": build_decoder(),
        "stitch_network": build_stitch_network(),
        "lmdm": build_lmdm(direction),
        "hubert": build_hubert(direction, offset),
        "insightface_det": build_insightface_det(),
        "landmark106": build_landmark106(),
        "landmark203": build_landmark203(),
        "blaze_face": build_blaze_face(),
        "face_mesh": build_face_mesh(),
    }
    # The warp is the native-GridSample form; its GridSample3D twin is derived from it elsewhere.
    return {(NATIVE_WARP_ONNX if network == "warp_network" else f"{file_stem(network)}.onnx"): model
            for network, model in models.items()}
