"""The packaged tensor contract and its checks."""

from __future__ import annotations

import json

import pytest

from ditto_fast.contract import MODELS, ContractError, TensorInfo, check_model, hubert_frames


def test_contract_matches_the_reference_io_contract(reference_data):
    reference = json.loads((reference_data / "io_contract.json").read_text())["models"]
    assert set(reference) == set(MODELS)
    for name, spec in MODELS.items():
        for side in ("inputs", "outputs"):
            ours = getattr(spec, side)
            theirs = reference[name][side]
            assert [t.name for t in ours] == [t["name"] for t in theirs], (name, side)
            for mine, ref in zip(ours, theirs):
                assert mine.dtype == ref["dtype"], (name, mine.name)
                if mine.shape is not None:
                    assert list(mine.shape) == ref["shape"], (name, mine.name)
                elif mine.elements is not None:  # layout unknown, size known
                    assert mine.elements == 1434 and ref["shape"][-1] == 1434


def test_hubert_framing():
    assert [hubert_frames(n) for n in (3240, 6480, 12960)] == [9, 20, 40]


def infos(*specs):
    return [TensorInfo(name, shape, dtype) for name, shape, dtype in specs]


STITCH_IN = infos(("kp_source", (1, 21, 3), "float32"), ("kp_driving", (1, 21, 3), "float32"))
STITCH_OUT = infos(("out", (1, 21, 3), "float32"))


def test_a_conforming_model_passes():
    check_model("stitch_network", "s.onnx", STITCH_IN, STITCH_OUT)
    # symbolic dims in the file are not a contradiction
    check_model("hubert", "h.onnx", infos(("input_values", (1, "len"), "float32")),
                infos(("encoding_out", ("frames", 1024), "float32")))


@pytest.mark.parametrize(
    "inputs,outputs,message",
    [
        (STITCH_IN[:1], STITCH_OUT, "s.onnx: stitch_network has no input 'kp_driving'"),
        (infos(("kp_source", (1, 21, 2), "float32"), ("kp_driving", (1, 21, 3), "float32")),
         STITCH_OUT,
         "s.onnx: stitch_network input 'kp_source' is [1, 21, 2] float32, expected [1, 21, 3] float32"),
        (infos(("kp_source", (1, 21, 3), "float16"), ("kp_driving", (1, 21, 3), "float32")),
         STITCH_OUT, "input 'kp_source' is [1, 21, 3] float16"),
        (STITCH_IN + infos(("extra", (1,), "float32")), STITCH_OUT, "unexpected inputs ['extra']"),
        (STITCH_IN, infos(("delta", (1, 21, 3), "float32")), "output 0 is 'delta', expected 'out'"),
        (STITCH_IN, infos(("out", (21, 3), "float32")), "output 'out' is [21, 3] float32"),
        (STITCH_IN, [], "has 0 outputs, expected 1"),
    ],
)
def test_violations_name_file_tensor_expected_and_found(inputs, outputs, message):
    with pytest.raises(ContractError) as info:
        check_model("stitch_network", "s.onnx", inputs, outputs)
    assert message in str(info.value)


def test_output_order_is_enforced():
    swapped = infos(("x_start", (1, 80, 265), "float32"), ("pred_noise", (1, 80, 265), "float32"))
    lmdm_in = infos(("x", (1, 80, 265), "float32"), ("cond_frame", (1, 265), "float32"),
                    ("cond", (1, 80, 1103), "float32"), ("time_cond", (1,), "int64"))
    with pytest.raises(ContractError, match="output 0 is 'x_start', expected 'pred_noise'"):
        check_model("lmdm", "l.onnx", lmdm_in, swapped)


def test_face_mesh_landmarks_checked_by_size():
    inputs = infos(("input", (1, 256, 256, 3), "float32"))
    rest = infos(("Identity_1", (1, 1), "float32"), ("Identity_2", (1, 1), "float32"))
    check_model("face_mesh", "f.onnx", inputs, infos(("Identity", (1, 1434), "float32")) + rest)
    with pytest.raises(ContractError, match="expected 1434 elements"):
        check_model("face_mesh", "f.onnx", inputs, infos(("Identity", (1, 1404), "float32")) + rest)


def test_unknown_network():
    with pytest.raises(ContractError, match="unknown network 'nope'"):
        check_model("nope", "x.onnx", [], [])
