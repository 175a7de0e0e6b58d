"""Shared helpers for the infra/ checks: paths, and the Bicep files parsed with pycep-parser (the
parser checkov itself uses), once per session."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MAIN = INFRA / "main.bicep"


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@functools.lru_cache(maxsize=None)
def parse(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


def handler_settings_from_source() -> list[str]:
    """`SETTINGS` from src/config.rs: the names in the `pub const SETTINGS: &[&str] = &[...]` list
    (a cross-check; tests/infra_settings.rs uses the constant itself)."""
    text = (REPO / "src" / "config.rs").read_text()
    match = re.search(r"pub const SETTINGS: &\[&str\] = &\[(.*?)\];", text, re.S)
    assert match, "src/config.rs no longer has `pub const SETTINGS: &[&str] = &[...]`"
    return re.findall(r'"([^"]+)"', match.group(1))


@pytest.fixture(scope="session")
def parsed() -> dict[Path, dict[str, Any]]:
    return {path: parse(path) for path in bicep_files()}
