"""The README as a newcomer follows it: its "Try it" commands and its Python examples behave as
written when run from a folder outside the repository (the installed package, as after the main
command in a fresh clone, which .ci/run checks itself), and CI runs the README's own commands."""

from __future__ import annotations

import json
import pathlib
import re
import shlex
import subprocess
import sys

import av
import pytest

import ditto_fast

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EXAMPLES = re.findall(r"```python\n(.*?)```", README, flags=re.S)
WALK = re.search(r"<!-- walk -->\n```bash\n(.*?)```", README, flags=re.S).group(1).strip().splitlines()
BIN = pathlib.Path(sys.executable).parent  # where this environment installed `ditto-fast`


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_python_example_runs(code, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # anywhere but the repository: nothing may depend on the folder
    exec(compile(code, "README.md", "exec"), {})


def _frames(path: pathlib.Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.parametrize("line", WALK, ids=[line.split("#")[0].strip() for line in WALK])
def test_try_it_commands_do_what_their_comments_say(line, tmp_path):
    command, _, promise = (part.strip() for part in line.partition("#"))
    result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path)})
    expected_status = int(re.search(r"exit (\d+)", promise).group(1)) if "exit " in promise else 0
    assert result.returncode == expected_status, result.stderr
    if expected_status:
        error_lines = [line for line in result.stderr.splitlines() if "error" in line]
        assert len(error_lines) == 1 and "Traceback" not in result.stderr
        named = re.search(r"naming the (\w+)", promise)
        if named:  # the file the command was given
            assert any(word in error_lines[0] for word in shlex.split(command) if "." in word)
    if promise.startswith("ditto-fast "):
        assert result.stdout.strip() == f"ditto-fast {ditto_fast.__version__}" == promise
    frames = re.search(r"(\d+) frames", promise)
    if frames:
        outputs = [word for word in shlex.split(command) if word.endswith(".mp4")]
        assert outputs and _frames(tmp_path / outputs[0]) == int(frames.group(1))
        stats = [word for word in shlex.split(command) if word.endswith(".json")]
        for path in stats:
            assert json.loads((tmp_path / path).read_text())["frames_emitted"] == int(frames.group(1))


def _ci_copy(tmp_path: pathlib.Path, main_command: str, test_command: str,
             kernel_command: str | None = None) -> subprocess.CompletedProcess:
    """Run .ci/run in a git repository whose README holds harmless commands (CI clones it for the
    first run, in a fresh virtual environment)."""
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text((ROOT / ".ci" / "run").read_text())
    (tmp_path / "README.md").write_text(
        f"<!-- main-command -->\n```bash\n{main_command}\n```\n\n"
        f"<!-- test-command -->\n```bash\n{test_command}\n```\n"
        + (f"\n<!-- kernel-command -->\n```bash\n{kernel_command}\n```\n" if kernel_command else ""))
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "t"], check=True)
    return subprocess.run(["bash", str(tmp_path / ".ci" / "run")], capture_output=True, text=True, timeout=120)


def test_the_readme_marks_both_commands():
    for marker in ("<!-- main-command -->", "<!-- test-command -->"):
        assert marker in README


def test_ci_runs_the_main_job_in_a_fresh_clone_then_the_test_command(tmp_path):
    result = _ci_copy(tmp_path, "echo made --out demo.mp4 > demo.mp4", "echo ran-from-readme")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if not line.startswith("+ apt-get")]  # browser setup
    assert lines[0].startswith("+ (fresh clone, fresh venv without torch) echo made")
    assert lines[1].startswith("first run: ") and "demo.mp4" in lines[1]
    assert lines[2:] == ["+ echo ran-from-readme", "ran-from-readme"]
    assert not (tmp_path / "demo.mp4").exists()  # made in the clone, not here


def test_ci_fails_when_the_main_job_leaves_no_video(tmp_path):
    result = _ci_copy(tmp_path, "echo nothing --out demo.mp4", "echo ran-from-readme")
    assert result.returncode != 0 and "left no demo.mp4" in result.stderr
    assert "ran-from-readme" not in result.stdout


def test_ci_fails_when_the_test_command_fails(tmp_path):
    result = _ci_copy(tmp_path, "echo made --out demo.mp4 > demo.mp4", "false")
    assert result.returncode != 0


def test_ci_runs_the_kernel_command_in_a_venv_of_its_own(tmp_path):
    result = _ci_copy(tmp_path, "echo made --out demo.mp4 > demo.mp4", "echo tests-ran",
                      'python3 -c "import sys; print(\'kernels in\', sys.prefix)"')
    assert result.returncode == 0, result.stderr
    ran = [line for line in result.stdout.splitlines() if line.startswith("kernels in ")]
    assert len(ran) == 1 and ran[0].endswith("/kernels")  # the venv .ci/run made, not this one
