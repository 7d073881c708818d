"""Condition handler (DITTO_SPEC §5.7) against the reference's golden rows, plus its input checks."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from ditto_fast.stages.condition import (
    AUDIO_FEATURE_DIM,
    CONDITION_DIM,
    ConditionHandler,
    parse_emo,
)

COND_CASES = [f"cond_{k:02d}.npz" for k in range(26)]


def decode_golden_json(value: object) -> object:
    """Undo the golden README §2 JSON encoding: tuples and ndarrays come back as themselves."""
    if isinstance(value, dict):
        if "__tuple__" in value:
            return tuple(decode_golden_json(v) for v in value["__tuple__"])
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"]).reshape(value["shape"])
        return {k: decode_golden_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_golden_json(v) for v in value]
    return value


def _load(shared_ref: pathlib.Path, name: str) -> np.lib.npyio.NpzFile:
    path = shared_ref / "golden" / name
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return np.load(path)


@pytest.mark.parametrize("name", COND_CASES)
def test_condition_rows_match_golden(shared_ref: pathlib.Path, name: str) -> None:
    case = _load(shared_ref, name)
    params = json.loads(str(case["params_json"]))
    emo = decode_golden_json(params["emo"])
    np.testing.assert_array_equal(parse_emo(emo), case["emo_parsed"])

    handler = ConditionHandler(case["src_sc"], case["src_eye_open"], case["src_eye_ball"],
                               emo=emo, eye_f0_mode=params["eye_f0_mode"])
    for k, (n, idx) in enumerate(zip(case["call_n"], case["call_idx"])):
        aud = case[f"call{k}_aud_col"][:, None] + case[f"call{k}_aud_row"][None, :]
        assert len(aud) == n
        cond = handler(aud, int(idx))
        assert cond.shape == (n, CONDITION_DIM)
        assert cond.dtype == np.dtype(str(case[f"call{k}_cond_dtype"]))
        np.testing.assert_array_equal(cond[:, :AUDIO_FEATURE_DIM], aud)
        np.testing.assert_array_equal(cond[:, AUDIO_FEATURE_DIM:], case[f"call{k}_cond_tail"],
                                      err_msg=f"{name} call {k} (n={n}, idx={idx})")


# Inputs for each error the golden file names (it stores only the exception types).
ERROR_INPUTS = {
    "int_out_of_range": [8, -1],
    "list_of_8_ints": [list(range(8))],
    "ndarray_wrong_width": [np.full((2, 7), 0.125, dtype=np.float32)],
    "numpy_int64_scalar": [np.int64(4)],
}


def test_emo_errors_match_golden_exception_types(shared_ref: pathlib.Path) -> None:
    expected = json.loads(str(_load(shared_ref, "cond_errors.npz")["errors_json"]))
    assert set(expected) == set(ERROR_INPUTS)
    for label, inputs in ERROR_INPUTS.items():
        exc_type = {"ValueError": ValueError, "TypeError": TypeError}[expected[label]]
        for emo in inputs:
            with pytest.raises(exc_type, match="emo"):
                parse_emo(emo)


@pytest.mark.parametrize("emo", [[], (), ((3,), (4,)), [[3], "4"], [[9]], np.zeros((0, 8)), "4"])
def test_other_unsupported_emo_values_raise(emo: object) -> None:
    with pytest.raises(ValueError, match="emo"):
        parse_emo(emo)


def test_parse_emo_forms() -> None:
    one = parse_emo(4)
    assert one.shape == (1, 8) and one.dtype == np.float32
    assert one[0].argmax() == 4 and abs(float(one.sum()) - 1.0) < 1e-6
    np.testing.assert_array_equal(parse_emo([4]), one)
    # Entries of a per-frame list may be bare labels too, as in the reference.
    np.testing.assert_array_equal(parse_emo([[4], (2, 5), 4])[[0, 2]], np.tile(one, (2, 1)))
    two = parse_emo((2, 5))[0]
    assert two[2] == two[5] and two[2] > 0.49
    given = np.random.default_rng(0).random((3, 8))
    np.testing.assert_array_equal(parse_emo(given), given.astype(np.float32))


def test_condition_indexing_rules() -> None:
    """Frame j = max(i, 0) picks emotion j mod m and the ping-pong source frame for the eyes."""
    n_src = 3
    eye_open = np.arange(n_src * 2, dtype=np.float32).reshape(n_src, 2)
    eye_ball = 100 + np.arange(n_src * 6, dtype=np.float32).reshape(n_src, 6)
    sc = np.linspace(-1, 1, 63, dtype=np.float32)
    emo = [[0], [1]]
    handler = ConditionHandler(sc, eye_open, eye_ball, emo=emo)
    aud = np.zeros((9, AUDIO_FEATURE_DIM), dtype=np.float32)
    cond = handler(aud, -2)
    frames = [0, 0, 0, 1, 2, 3, 4, 5, 6]
    source = [0, 0, 0, 1, 2, 2, 1, 0, 0]
    np.testing.assert_array_equal(cond[:, 1024:1032].argmax(1), [j % 2 for j in frames])
    np.testing.assert_array_equal(cond[:, 1032:1034], eye_open[source])
    np.testing.assert_array_equal(cond[:, 1034:1040], eye_ball[source])
    np.testing.assert_array_equal(cond[:, 1040:], np.tile(sc, (9, 1)))

    frame0 = ConditionHandler(sc, eye_open, eye_ball, emo=emo, eye_f0_mode=True)(aud, 5)
    np.testing.assert_array_equal(frame0[:, 1032:1034], np.tile(eye_open[0], (9, 1)))


def test_condition_handler_rejects_bad_shapes() -> None:
    sc = np.zeros(63, np.float32)
    with pytest.raises(ValueError, match="eye_ball"):
        ConditionHandler(sc, np.zeros((2, 2)), np.zeros((3, 6)))
    with pytest.raises(ValueError, match="sc"):
        ConditionHandler(np.zeros(62), np.zeros((1, 2)), np.zeros((1, 6)))
    handler = ConditionHandler(sc, np.zeros((1, 2)), np.zeros((1, 6)))
    with pytest.raises(ValueError, match="aud_feat"):
        handler(np.zeros((4, 1000), np.float32), 0)
