"""`ditto-fast synth`: a complete checkpoint tree in the official layout with synthetic weights.

- `tiny`: the constructed ONNX set (`tiny_models`: it animates, so the demo shows a speaking
  face) and small random versions of the real architectures as `.pth`.
- `full`: the real architectures at their real sizes with random weights, as `.pth` and as
  ONNX exported from them (for benchmarks); the auxiliary networks (face detection,
  landmarks, HuBERT) are the constructed tiny ones, since only their I/O matters there.

The tree is written into a staging folder beside the target and renamed into place at the
end, so an interrupted run leaves no half-written tree. The same seed writes the same bytes.
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ditto_fast import __version__
from ditto_fast.backends.onnx_gridsample import to_plugin
from ditto_fast.checkpoints import (
    CFG_DIR,
    CONFIG_FILES,
    NATIVE_WARP_ONNX,
    ONNX_DIR,
    PYTORCH_DIR,
    PYTORCH_FILES,
    SYNTHETIC_MARKER,
    file_stem,
    is_synthetic,
)
from ditto_fast.errors import default_mode
from ditto_fast.tools.export import CORE_NETWORKS, export_tree
from ditto_fast.tools.synthetic.config_pickles import engine_config, pytorch_config
from ditto_fast.tools.synthetic.torch_checkpoints import Size, write_checkpoint

AUX_STEMS = ("insightface_det", "landmark106", "landmark203", "blaze_face", "face_mesh", "hubert")
PICKLE_PROTOCOL = 4  # fixed, so the bytes do not change with the Python version's default


@dataclass
class SynthReport:
    root: Path
    size: str
    seed: int
    parameters: dict[str, int] = field(default_factory=dict)  # core network -> count

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


def _write_configs(cfg_dir: Path) -> None:
    cfg_dir.mkdir(parents=True)
    configs = {"offline": engine_config(online=False), "online": engine_config(online=True),
               "pytorch": pytorch_config()}
    for kind, config in configs.items():
        (cfg_dir / CONFIG_FILES[kind]).write_bytes(pickle.dumps(config, protocol=PICKLE_PROTOCOL))


def _save_onnx(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def _write_tiny_onnx(onnx_dir: Path, tiny_set: dict[str, onnx.ModelProto]) -> None:
    for filename, model in tiny_set.items():
        _save_onnx(model, onnx_dir / filename)
    plugin = to_plugin(tiny_set[NATIVE_WARP_ONNX], NATIVE_WARP_ONNX)
    _save_onnx(plugin, onnx_dir / "warp_network.onnx")


def _write_marker(root: Path, size: str, seed: int) -> None:
    (root / SYNTHETIC_MARKER).write_text(
        f"# Synthetic Ditto checkpoints ({size})\n\n"
        f"Written by `ditto-fast synth --size {size} --seed {seed}` (ditto_fast {__version__}).\n"
        "Same layout and tensor contract as the official tree; the weights are NOT the\n"
        "official ones: the ONNX networks are constructed or random, the .pth files random.\n"
        "Renders made with them show the pipeline working, not Ditto's quality.\n"
    )


def _fill_tree(root: Path, size: Size, seed: int, report: SynthReport,
               progress: Callable[[str], None]) -> None:
    from ditto_fast.tools.synthetic.tiny_models import build_tiny_onnx_set

    _write_configs(root / CFG_DIR)
    progress("configs written")
    pytorch_dir = root / PYTORCH_DIR
    for offset, network in enumerate(CORE_NETWORKS):
        path = pytorch_dir / PYTORCH_FILES[file_stem(network)]
        report.parameters[network] = write_checkpoint(network, path, size, seed + offset)
        progress(f"{path.relative_to(root)}: {report.parameters[network]:,} parameters")
    tiny_set = build_tiny_onnx_set(seed)
    for stem in AUX_STEMS:  # the pytorch config runs auxiliary networks from ONNX files
        _save_onnx(tiny_set[f"{stem}.onnx"], pytorch_dir / PYTORCH_FILES[stem])
    onnx_dir = root / ONNX_DIR
    if size == "tiny":
        _write_tiny_onnx(onnx_dir, tiny_set)
    else:
        for stem in AUX_STEMS:
            _save_onnx(tiny_set[f"{stem}.onnx"], onnx_dir / f"{stem}.onnx")
        export_tree(pytorch_dir, onnx_dir, on_done=lambda r: progress(f"{ONNX_DIR}/{r.line()}"))
    progress(f"{ONNX_DIR}/ written")
    _write_marker(root, size, seed)


def write_synthetic_tree(
    out: str | Path,
    size: Size = "tiny",
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[str], None] = lambda message: None,
) -> SynthReport:
    """Write a complete synthetic checkpoint tree to `out` and report what it holds."""
    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: folder exists and is not empty (overwrite replaces it)")
        if not is_synthetic(out):  # never delete a folder this command did not write
            raise FileExistsError(f"{out}: not a synthetic tree (no {SYNTHETIC_MARKER}); refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        report = SynthReport(out, size, seed)
        _fill_tree(staging, size, seed, report, progress)
        if out.exists():
            shutil.rmtree(out)
        os.chmod(staging, default_mode(directory=True))
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return report
