"""Evaluation tests run offline, with the exported data and rendered configs in a per-session cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GAPERON_CACHE", str(tmp_path_factory.getbasetemp() / "gaperon-cache"))
    from gaperon.evaluate.data import clear_data_overrides

    clear_data_overrides()
    yield
    clear_data_overrides()
