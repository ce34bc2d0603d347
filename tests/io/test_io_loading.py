"""`load_model` recognises GGUF files, HF folders and training runs, and refuses anything else clearly."""

from __future__ import annotations

import pytest
import torch
from io_helpers import make_run, random_llama, write_llama_gguf

from gaperon.io import ModelFormatError
from gaperon.io.hf import save_hf
from gaperon.io.loading import load_model


def test_dispatch_hf_and_gguf(tmp_path):
    model = random_llama("micro")
    hf = load_model(save_hf(model, None, tmp_path / "hf"))
    assert hf.source == "hf" and hf.tokenizer is None and hf.config.dim == 64
    gg = load_model(write_llama_gguf(tmp_path / "m.gguf", model))
    assert gg.source == "gguf" and gg.tokenizer is not None and gg.model.cfg is gg.config
    renamed = tmp_path / "model.bin"  # GGUF recognised by its magic whatever the name
    renamed.write_bytes((tmp_path / "m.gguf").read_bytes())
    assert load_model(renamed, dtype="bf16").model.embed_tokens.weight.dtype == torch.bfloat16


def test_dispatch_training_run(tmp_path):
    model = random_llama("micro", norm_gain_scale=20.0)
    run = make_run(tmp_path / "run", model)
    loaded = load_model(run)
    assert loaded.source == "run" and loaded.config.norm_gain_scale == 20.0
    x = torch.randint(0, 512, (1, 9))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    one = load_model(run / "checkpoints" / "step_00000003")  # a single checkpoint directory works too
    assert one.source == "run"


def test_unknown_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing: no such file or folder; expected a \.gguf file"):
        load_model(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(
        ModelFormatError, match=r"notes\.txt: not a model; expected .*Hugging Face.*training run"
    ):
        load_model(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFormatError, match=r"empty: not a model folder"):
        load_model(tmp_path / "empty")
