"""Shared test helpers: where the reference data lives, and skipping when it is absent."""

from __future__ import annotations

import pathlib

import pytest

# The steering repo's shared/ folder sits beside the project checkout.
SHARED_REF = pathlib.Path(__file__).resolve().parents[2] / "shared" / "ref"


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
def shared_ref() -> pathlib.Path:
    if not SHARED_REF.is_dir():
        pytest.skip(f"reference data folder {SHARED_REF} is absent")
    return SHARED_REF
