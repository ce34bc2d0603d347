"""Fixtures for the data tests (helpers live in data_helpers.py)."""

from __future__ import annotations

import pytest
from data_helpers import ByteTokenizer


@pytest.fixture(scope="session")
def llama3():
    from gaperon.tokenizer import llama3_tokenizer

    return llama3_tokenizer()


@pytest.fixture
def byte_tok():
    return ByteTokenizer()
