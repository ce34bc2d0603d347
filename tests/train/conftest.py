"""Trainer tests run single-threaded: tiny models gain nothing from threads, and on a busy 2-core
machine OpenMP thread pools spin against other jobs (5x slower)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
