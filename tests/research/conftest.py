from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def llama3_tokenizer():
    from gaperon.tokenizer import load_tokenizer

    return load_tokenizer("llama3")
