"""The README's Python examples run as written, and CI runs the README's own test command."""

from __future__ import annotations

import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EXAMPLES = re.findall(r"```python\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_python_example_runs(code, monkeypatch):
    monkeypatch.chdir(ROOT)  # examples use paths relative to the repository, as a reader would
    exec(compile(code, "README.md", "exec"), {})


def _ci_copy(tmp_path: pathlib.Path, main_command: str, test_command: str) -> subprocess.CompletedProcess:
    """Run .ci/run in a git repository whose README holds harmless commands (CI clones it for the
    first run, in a fresh virtual environment)."""
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text((ROOT / ".ci" / "run").read_text())
    (tmp_path / "README.md").write_text(
        f"<!-- main-command -->\n```bash\n{main_command}\n```\n\n"
        f"<!-- test-command -->\n```bash\n{test_command}\n```\n")
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
    lines = result.stdout.splitlines()
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
