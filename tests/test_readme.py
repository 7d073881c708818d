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


def test_ci_runs_the_readme_test_command(tmp_path):
    # .ci/run pulls the command out of the README; run that extraction on a copy whose command
    # is harmless, and check what it would execute.
    marker = "<!-- test-command -->"
    assert marker in README
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text((ROOT / ".ci" / "run").read_text())
    (tmp_path / "README.md").write_text(
        README.split(marker)[0] + marker + "\n```bash\necho ran-from-readme\n```\n"
    )
    result = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["+ echo ran-from-readme", "ran-from-readme"]


def test_ci_fails_when_the_command_fails(tmp_path):
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text((ROOT / ".ci" / "run").read_text())
    (tmp_path / "README.md").write_text("<!-- test-command -->\n```bash\nfalse\n```\n")
    result = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], capture_output=True,
                            timeout=60)
    assert result.returncode != 0
