"""`ditto-fast synth` and the committed checkpoints/synthetic-tiny tree."""

from __future__ import annotations

import pathlib

import pytest

pytest.importorskip("torch")

from ditto_fast.backends.onnxruntime import OnnxRuntimeNetwork  # noqa: E402
from ditto_fast.backends.torch import TorchNetwork  # noqa: E402
from ditto_fast.checkpoints import SYNTHETIC_MARKER, find_tree  # noqa: E402
from ditto_fast.cli import main  # noqa: E402
from ditto_fast.contract import MODELS  # noqa: E402
from ditto_fast.tools.export import CORE_NETWORKS  # noqa: E402
from ditto_fast.tools.synthetic import tree as synth  # noqa: E402

COMMITTED = pathlib.Path(__file__).resolve().parents[1] / "checkpoints" / "synthetic-tiny"


def files_of(root: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fresh_tiny(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("synth") / "tiny"
    synth.write_synthetic_tree(out, "tiny", seed=0)
    return out


def test_committed_tree_is_what_the_generator_writes(fresh_tiny):
    committed, fresh = files_of(COMMITTED), files_of(fresh_tiny)
    assert sorted(committed) == sorted(fresh)
    changed = [name for name in fresh if committed[name] != fresh[name]]
    assert not changed, f"regenerate with `ditto-fast synth --size tiny --out {COMMITTED} --overwrite`: {changed}"
    assert sum(len(b) for b in committed.values()) <= 25 * 10**6


def test_another_seed_gives_other_weights(tmp_path, fresh_tiny):
    other = synth.write_synthetic_tree(tmp_path / "seed1", "tiny", seed=1).root
    assert (other / "ditto_pytorch/models/decoder.pth").read_bytes() != (
        fresh_tiny / "ditto_pytorch/models/decoder.pth").read_bytes()


@pytest.mark.parametrize("kind", ["offline", "online"])
def test_every_network_loads_on_onnxruntime_through_the_config(kind):
    tree = find_tree(COMMITTED)
    config = tree.load_config(kind)
    assert config.online == (kind == "online")
    assert config.default_kwargs["synthetic"] is True
    for network in MODELS:
        OnnxRuntimeNetwork(network, tree.onnx_file(network, config))
    # the TensorRT form of the warp network, through the GridSample3D rewrite
    OnnxRuntimeNetwork("warp_network", tree.onnx_dir / "warp_network.onnx")


def test_pytorch_config_names_existing_files_that_load():
    tree = find_tree(COMMITTED)
    config = tree.load_config("pytorch")
    for network in MODELS:
        assert config.model_path(network).is_file(), network
    for network in CORE_NETWORKS:
        net = TorchNetwork(network, tree.torch_file(network, config))
        assert net.layout == "synthetic-tiny"
    for network in ("insightface_det", "landmark106", "landmark203", "hubert", "blaze_face", "face_mesh"):
        OnnxRuntimeNetwork(network, config.model_path(network))


def test_the_tree_says_it_is_synthetic():
    assert synth.is_synthetic(COMMITTED)
    assert "NOT the\nofficial ones" in (COMMITTED / SYNTHETIC_MARKER).read_text()


def test_refuses_to_replace_what_it_did_not_write(tmp_path, capsys):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    assert main(["synth", "--out", str(precious), "--overwrite"]) == 1
    assert "not a synthetic tree" in capsys.readouterr().err
    assert (precious / "notes.txt").read_text() == "keep me"
    assert main(["synth", "--out", str(precious)]) == 1
    assert "is not empty" in capsys.readouterr().err


def test_overwrite_replaces_a_synthetic_tree(tmp_path, capsys):
    out = tmp_path / "tree"
    assert main(["synth", "--out", str(out)]) == 0
    (out / "stale.txt").write_text("from an older run")
    assert main(["synth", "--out", str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists()
    assert "weights are synthetic" in capsys.readouterr().out.splitlines()[-1]


def test_a_failed_run_leaves_nothing_behind(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(synth, "write_checkpoint", fail)
    with pytest.raises(OSError, match="disk full"):
        synth.write_synthetic_tree(tmp_path / "tree", "tiny")
    assert list(tmp_path.iterdir()) == []
