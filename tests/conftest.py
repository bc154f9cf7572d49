"""Shared fixtures: the sandbox on loopback, settings pointing at it, and the CLI in-process."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import tomli_w
from typer.testing import CliRunner

from aircall_sync.cli import app
from aircall_sync.sandbox.stack import Sandbox, SandboxOptions

#: A fixed end for generated data, so every run of the suite sees the same calls.
SANDBOX_END = datetime(2026, 10, 31, 12, 0, tzinfo=UTC)


@dataclass
class Cli:
    runner: CliRunner
    config: Path

    def __call__(self, *args: str, config: Path | None = None, env: dict | None = None):
        return self.runner.invoke(app, ["--config", str(config or self.config), *args], env=env)


def write_settings(path: Path, settings: dict) -> Path:
    path.write_text(tomli_w.dumps(settings), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """500 generated calls over the 7 days before SANDBOX_END (read-only: don't mutate it)."""
    with Sandbox(SandboxOptions(calls=500, seed=7, days=7, end=SANDBOX_END)) as box:
        yield box


@pytest.fixture
def sandbox_settings(sandbox: Sandbox, tmp_path: Path) -> dict:
    settings = sandbox.settings(tmp_path / "state.sqlite3")
    settings["aircall"]["requests_per_minute"] = 60000
    return settings


@pytest.fixture
def cli(sandbox_settings: dict, tmp_path: Path) -> Cli:
    return Cli(CliRunner(), write_settings(tmp_path / "settings.toml", sandbox_settings))


# ---------------------------------------------------------------- the full reliability set (issue #6)


def pytest_addoption(parser):
    parser.addoption("--reliability", action="store_true", default=False,
                     help="also run the full reliability set (tests marked reliability_full: SIGKILL at 15+ "
                          "points on 2,400 calls; several minutes)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--reliability"):
        return
    skip = pytest.mark.skip(reason="full reliability set: run pytest --reliability")
    for item in items:
        if "reliability_full" in item.keywords:
            item.add_marker(skip)
