"""Shared test helpers: where the reference data lives, and skipping when it is absent."""

from __future__ import annotations

import os
import pathlib

import pytest

# Without a GPU, Triton kernels run only under Triton's interpreter, which is chosen when a kernel
# is decorated (its module's import). Set here, before any test module loads, so that a test
# importing a kernel module in passing (a torch path, the paste-back dispatch) cannot decorate it
# for a device first and break the kernel tests that run later in the same process.
if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

_TESTS = pathlib.Path(__file__).resolve().parent
# The public reference vectors ship with the project (tests/data/README.md). A checkout without
# them falls back to a shared/ref folder beside the checkout; with neither, the tests that need
# them skip. Every test and helper takes the folder from this one constant (and its fixture).
_BUNDLED_REF = _TESTS / "data" / "reference"
_FALLBACK_REF = _TESTS.parents[1] / "shared" / "ref"
REFERENCE = _BUNDLED_REF if _BUNDLED_REF.is_dir() else _FALLBACK_REF


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--golden-keys", action="store_true",
                     help="after the run, list the keys of each golden file loaded that no test read")


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    if not config.getoption("--golden-keys"):
        return
    from golden_stubs import KEYS_READ, load_golden

    terminalreporter.section("golden keys no test read")
    for path, read in sorted(KEYS_READ.items()):
        unread = sorted(set(load_golden(path)) - read)
        terminalreporter.write_line(f"{path.name}: {', '.join(unread) if unread else '(all read)'}")


@pytest.fixture(scope="session")
def reference_data() -> pathlib.Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data folder {REFERENCE} is absent")
    return REFERENCE
