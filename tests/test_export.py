"""`ditto-fast export-onnx`: our torch modules to contract ONNX files, checked against torch."""

from __future__ import annotations

import onnx
import pytest

pytest.importorskip("torch")

from ditto_fast.backends.onnx_gridsample import count_plugin_nodes  # noqa: E402
from ditto_fast.cli import main  # noqa: E402
from ditto_fast.tools.export import CORE_NETWORKS, PTH_FILES, export_network  # noqa: E402
from ditto_fast.tools.synthetic.torch_checkpoints import write_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def tiny_pytorch_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    for seed, name in enumerate(CORE_NETWORKS):
        write_checkpoint(name, root / "ditto_pytorch" / PTH_FILES[name], "tiny", seed)
    return root


def test_every_core_network_exports_and_matches_torch(tiny_pytorch_tree, tmp_path, capsys):
    assert main(["export-onnx", "--pytorch", str(tiny_pytorch_tree), "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"exported {len(CORE_NETWORKS)} networks to {tmp_path}"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["appearance_extractor.onnx", "motion_extractor.onnx",
                            "warp_network.onnx", "warp_network_ori.onnx", "decoder.onnx",
                            "stitch_network.onnx", "lmdm_v0.4_hubert.onnx",
                            "lmdm_v0.4_hubert_hoisted_prepare.onnx", "lmdm_v0.4_hubert_hoisted_step.onnx"])
    assert count_plugin_nodes(onnx.load(str(tmp_path / "warp_network.onnx"))) == 2
    assert count_plugin_nodes(onnx.load(str(tmp_path / "warp_network_ori.onnx"))) == 0
    for line in lines[:-1]:
        diff = float(line.split("max |ort - torch| = ")[1].split(",")[0])
        assert diff < 1e-4, line


def test_a_wrong_export_is_caught(tiny_pytorch_tree, tmp_path, monkeypatch):
    import ditto_fast.tools.export as export

    # Break the exported file behind the check's back: the comparison must notice.
    real_export = export.export_graph

    def corrupting_export(net, path, example):
        real_export(net, path, example)
        model = onnx.load(str(path))
        bias = next(i for i in model.graph.initializer if len(i.dims) == 1)
        raw = onnx.numpy_helper.to_array(bias) + 1.0
        bias.CopyFrom(onnx.numpy_helper.from_array(raw, bias.name))
        onnx.save(model, str(path))

    monkeypatch.setattr(export, "export_graph", corrupting_export)
    pth = tiny_pytorch_tree / "ditto_pytorch" / PTH_FILES["stitch_network"]
    with pytest.raises(ValueError, match="exported stitch_network differs from torch"):
        export_network("stitch_network", pth, tmp_path)


def test_missing_models_folder(tmp_path, capsys):
    assert main(["export-onnx", "--pytorch", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "no models/ folder" in capsys.readouterr().err
