"""The synthetic-tiny tree as package data: where the default checkpoints resolve (never the
current directory), the one-line error when they are nowhere, and the CMake rule that ships the
tree in the wheel at the path the resolution looks in."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from ditto_fast import Renderer, checkpoints
from ditto_fast.checkpoints import (
    CFG_DIR,
    PACKAGE_TREE,
    SOURCE_TREE,
    TRT_PREFIX,
    CheckpointError,
    default_tree,
    default_tree_candidates,
    find_tree,
)
from ditto_fast.stages.audio import frame_count
from ditto_fast.tools.demo import demo_speech, write_demo_inputs

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ROOT / SOURCE_TREE
# Where the wheel holds the tree; CMakeLists.txt installs it there (checked by configuring below).
WHEEL_PATH = "ditto_fast/data/synthetic-tiny"


def _files(root: pathlib.Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


def _committed_files() -> set[str]:
    """The checkout's tree, less what building engines or importing leaves in it."""
    return {name for name in _files(TINY) if not name.startswith(TRT_PREFIX) and "__pycache__" not in name}


def test_wheel_path_is_the_package_data_path():
    assert f"ditto_fast/{PACKAGE_TREE}" == WHEEL_PATH
    assert SOURCE_TREE == "checkpoints/synthetic-tiny"


def test_default_tree_does_not_depend_on_the_current_directory(tmp_path, monkeypatch):
    decoy = tmp_path / SOURCE_TREE  # a tree where the old cwd-relative default looked
    shutil.copytree(TINY / CFG_DIR, decoy / CFG_DIR)
    monkeypatch.chdir(tmp_path)
    tree = default_tree()
    assert tree.is_absolute() and tree in default_tree_candidates()
    assert tree.resolve() != decoy.resolve()
    assert find_tree(tree).synthetic
    monkeypatch.chdir(ROOT)
    assert default_tree() == tree


def test_candidates_are_package_data_then_the_source_checkout():
    *package, source = default_tree_candidates()
    assert package and all(path.as_posix().endswith(f"/ditto_fast/{PACKAGE_TREE}") for path in package)
    assert source == pathlib.Path(checkpoints.__file__).resolve().parents[2] / SOURCE_TREE


def test_the_default_tree_is_the_committed_one():
    """An editable install reads the checkout's tree; a wheel (the README's test command installs
    one) its package data, which must hold the committed files."""
    tree = default_tree()
    if tree != TINY.resolve():
        assert tree.as_posix().endswith(f"/{WHEEL_PATH}")
        assert _files(tree) == _committed_files()


def test_renderer_without_checkpoints_renders_from_another_folder(tmp_path, monkeypatch):
    portrait, speech = write_demo_inputs(tmp_path / "inputs", seconds=0.4)
    monkeypatch.chdir(tmp_path)
    renderer = Renderer()
    assert renderer.synthetic and renderer.checkpoints == default_tree()
    frames = [frame.rgb.shape for frame in renderer.render(renderer.register(portrait), speech, seed=0)]
    assert len(frames) == frame_count(len(demo_speech(0.4)))


def test_a_relative_path_given_is_relative_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoint folder does not exist"):
        Renderer(SOURCE_TREE)  # no fallback to the shipped tree
    (tmp_path / "tree").symlink_to(TINY, target_is_directory=True)
    assert Renderer("tree").checkpoints == pathlib.Path("tree")


def test_no_default_tree_is_a_one_line_error_naming_where_it_looked(tmp_path, monkeypatch):
    missing = (tmp_path / "package" / PACKAGE_TREE, tmp_path / "checkout" / SOURCE_TREE)
    monkeypatch.setattr("ditto_fast.checkpoints.default_tree_candidates", lambda: missing)
    with pytest.raises(CheckpointError) as error:
        Renderer()
    message = str(error.value)
    assert "\n" not in message and all(str(path) in message for path in missing)
    assert "synthetic-tiny" in message and "ditto-fast synth" in message


# --- the CMake rule: what `cmake --install` puts in the wheel ---------------------------------------


def _install_demo_tree(tmp_path: pathlib.Path, state: str) -> pathlib.Path:
    pybind11 = pytest.importorskip("pybind11")
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not on PATH")
    build, prefix = tmp_path / f"build-{state}", tmp_path / f"prefix-{state}"
    env = {k: v for k, v in os.environ.items() if k != "CUDACXX"}
    for command in (["cmake", "-S", str(ROOT), "-B", str(build), "-DDITTO_FAST_CUDA=OFF",
                     f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DSKBUILD_STATE={state}"],
                    ["cmake", "--install", str(build), "--component", "demo_tree", "--prefix", str(prefix)]):
        step = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert step.returncode == 0, step.stdout + step.stderr
    return prefix




def test_cmake_installs_the_tree_where_the_package_looks(tmp_path):
    prefix = _install_demo_tree(tmp_path, "wheel")
    installed = prefix / WHEEL_PATH
    assert find_tree(installed).synthetic
    committed = _committed_files()
    assert _files(installed) == committed
    assert _files(prefix) == {f"{WHEEL_PATH}/{name}" for name in committed}  # nothing else in the component


def test_editable_installs_leave_the_tree_in_the_checkout(tmp_path):
    prefix = _install_demo_tree(tmp_path, "editable")
    assert not (prefix / WHEEL_PATH).exists()
