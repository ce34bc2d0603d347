"""Fixtures of the infer tests (helpers live in infer_helpers.py)."""

import pytest
from infer_helpers import ByteTokenizer, micro_model
from torch import nn


@pytest.fixture(scope="session")
def tok() -> ByteTokenizer:
    return ByteTokenizer()


@pytest.fixture(scope="session")
def micro() -> nn.Module:
    return micro_model(0)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Micro models gain nothing from threads, and on a busy CI machine OpenMP barriers waiting for a
    descheduled thread cost milliseconds per op: run each module single-threaded, then restore."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
