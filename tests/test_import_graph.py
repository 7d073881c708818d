"""The runtime's import graph: what a fresh install without torch can run, and which layers may
import which. Each check runs in a fresh interpreter in which the blocked modules cannot be
imported, so a new import of torch (or of tooling) anywhere under the runtime fails here."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "ditto_fast"
OPTIONAL_HEAVY = ("torch", "triton", "tensorrt", "cupy")

BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, Block())
"""


def run_blocked(blocked: tuple[str, ...], code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    script = BLOCKER.format(blocked=blocked) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                          cwd=cwd)


@pytest.mark.parametrize("module", ["ditto_fast", "ditto_fast.renderer", "ditto_fast.cli", "ditto_fast.compat",
                                    "ditto_fast.engine.offline", "ditto_fast.engine.online",
                                    "ditto_fast.pipeline.frames", "ditto_fast.backends.registry"])
def test_runtime_imports_without_torch_or_tooling(module):
    result = run_blocked((*OPTIONAL_HEAVY, "ditto_fast.tools"), f"""
        import importlib
        importlib.import_module({module!r})
        from ditto_fast import Renderer, Avatar, RenderOptions
        loaded = sorted(m for m in sys.modules
                        if m.split('.')[0] in {OPTIONAL_HEAVY!r} or m.startswith('ditto_fast.tools'))
        assert not loaded, loaded
    """)
    assert result.returncode == 0, result.stderr


def test_info_and_help_run_without_torch():
    result = run_blocked(OPTIONAL_HEAVY, """
        from ditto_fast.cli import main
        assert main(["info"]) == 0
        for command in ("render", "stream", "info"):
            try:
                main([command, "--help"])
            except SystemExit as exc:
                assert exc.code == 0, exc.code
    """)
    assert result.returncode == 0, result.stderr
    assert "torch: not available" in result.stdout


def test_demo_render_runs_without_torch(tmp_path):
    """The README's main job on a machine without torch: the demo renders with onnxruntime."""
    out = tmp_path / "demo.mp4"
    result = run_blocked(OPTIONAL_HEAVY, f"""
        from ditto_fast.cli import main
        sys.exit(main(["render", "--demo", "--out", {str(out)!r}]))
    """, cwd=PACKAGE.parents[1])
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


def _imports(path: Path) -> set[str]:
    """Modules `path` imports at module level or inside functions (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    type_checking = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                     and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


# Layers from the top; a module may import its own layer and the ones below it, never above.
LAYERS = [
    {"cli", "compat", "serving", "tools"},
    {"renderer"},
    {"engine"},
    {"pipeline"},
    {"stages", "ops"},
    {"backends"},
    {"runtime", "models"},
    {"avatar", "options", "checkpoints", "config", "safe_pickle", "contract", "errors", "diffusion_schedule",
     "environment", "files", "kernels", "_core", "__init__"},
]


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "ditto_fast":
        return None
    top = parts[1] if len(parts) > 1 else "__init__"
    return next((i for i, layer in enumerate(LAYERS) if top in layer), None)


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        module = "ditto_fast." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        own = _layer(module)
        if own is None or module.endswith("__init__") and module.count(".") == 1:
            continue
        for imported in _imports(path):
            theirs = _layer(imported)
            if theirs is not None and theirs < own:
                upward.append(f"{module} imports {imported}")
    assert not upward, "\n".join(sorted(upward))


def test_kernels_are_a_leaf():
    kernels = PACKAGE.parents[1] / "kernels"
    offenders = [f"{path.name} imports {name}" for path in kernels.glob("*.py")
                 for name in _imports(path) if name.startswith("ditto_fast")]
    assert not offenders, offenders
