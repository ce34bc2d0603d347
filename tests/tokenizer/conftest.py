"""Shared fixtures: our Llama-3.1 tokenizer and Meta's tiktoken reference on the same ranks."""

from __future__ import annotations

import pytest
from tokenizer_helpers import SMALL_TOKENS, write_ranks


@pytest.fixture(scope="session")
def tok():
    from gaperon.tokenizer import llama3_tokenizer

    return llama3_tokenizer()


@pytest.fixture(scope="session")
def meta():
    """Meta's own reference class (llama_models.llama3.tokenizer): tiktoken, its own regex and specials."""
    from llama_models.llama3.tokenizer import Tokenizer as MetaTokenizer

    from gaperon.tokenizer.loading import llama3_ranks_path

    return MetaTokenizer(llama3_ranks_path())


@pytest.fixture(scope="session")
def reference(meta):
    """The tiktoken.Encoding: `encode_ordinary` is the ground truth for plain text."""
    return meta.model


@pytest.fixture(scope="session")
def small_tok(tmp_path_factory):
    """A Llama-3-style tokenizer on a 269-rank table: same code paths as llama3, in milliseconds."""
    from gaperon.tokenizer import load_tokenizer

    path = tmp_path_factory.mktemp("small_ranks") / "small.model"
    write_ranks(path, SMALL_TOKENS)
    return load_tokenizer(path)
