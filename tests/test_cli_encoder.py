"""The encoder's crf and x264 preset through the API and the `render` / `stream` commands."""

from __future__ import annotations

import pathlib

import pytest
from test_stage_writer import SUBME_OF_PRESET, x264_settings

from ditto_fast import Renderer
from ditto_fast.cli import build_parser, main
from ditto_fast.stages.writer import DEFAULT_CRF, DEFAULT_PRESET
from ditto_fast.tools.demo import write_demo_inputs

TINY = pathlib.Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-tiny"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:
    return write_demo_inputs(tmp_path_factory.mktemp("demo"), seconds=0.6)


@pytest.mark.parametrize("command", [["render", "--demo"], ["stream", "--source", "p.png", "--audio", "a.wav"]])
def test_flags_parse_next_to_the_quality_preset(command):
    parser = build_parser()
    defaults = parser.parse_args([*command, "--out", "o.mp4"])
    assert (defaults.crf, defaults.x264_preset) == (DEFAULT_CRF, DEFAULT_PRESET)
    chosen = parser.parse_args([*command, "--out", "o.mp4", "--crf", "23", "--x264-preset", "veryfast"])
    assert (chosen.crf, chosen.x264_preset) == (23, "veryfast")
    if command[0] == "render":  # the render quality preset is a separate flag
        assert parser.parse_args([*command, "--out", "o.mp4", "--preset", "speed"]).x264_preset == DEFAULT_PRESET


@pytest.mark.parametrize("command", ["render", "stream"])
@pytest.mark.parametrize("flags,message", [
    (["--crf", "52"], "argument --crf: x264 crf must be an integer from 0 to 51, got 52"),
    (["--crf", "high"], "argument --crf: x264 crf must be an integer from 0 to 51, got 'high'"),
    (["--x264-preset", "speed"], "argument --x264-preset: invalid choice: 'speed'"),
])
def test_bad_flags_stop_the_command_before_any_work(command, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--source", "p.png", "--audio", "a.wav", "--out", "o.mp4", *flags])
    assert exit_info.value.code == 1  # usage errors exit 1, like every error
    assert message in capsys.readouterr().err


def test_render_to_file_checks_the_options_before_any_work(inputs, tmp_path, monkeypatch):
    import ditto_fast.renderer as api

    monkeypatch.setattr(api, "register", lambda *a, **k: pytest.fail("registered before checking the options"))
    with pytest.raises(ValueError, match="unknown x264 preset 'fastest'"):
        Renderer(TINY).render_to_file(inputs[0], inputs[1], tmp_path / "o.mp4", x264_preset="fastest")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command,crf,preset", [("render", "30", "ultrafast"), ("stream", "26", "veryfast")])
def test_the_commands_encode_with_the_chosen_settings(command, crf, preset, inputs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "o.mp4"
    status = main([command, "--checkpoints", str(TINY), "--source", str(inputs[0]), "--audio", str(inputs[1]),
                   "--out", str(out), "--seed", "0", "--crf", crf, "--x264-preset", preset, "--encoder", "libx264"])
    assert status == 0
    settings = x264_settings(out)
    assert float(settings["crf"]) == int(crf)
    assert int(settings["subme"]) == SUBME_OF_PRESET[preset]
