"""Bad Hugging Face folders: each gives one clear error naming the file (and the tensor)."""

from __future__ import annotations

import json

import pytest
import torch
from io_helpers import random_llama
from safetensors.torch import load_file, save_file

from gaperon.io import ModelFormatError
from gaperon.io.hf import load_hf, save_hf


@pytest.fixture
def folder(tmp_path):
    return save_hf(random_llama("micro"), None, tmp_path / "hf")


@pytest.fixture
def sharded(tmp_path):
    return save_hf(random_llama("micro"), None, tmp_path / "sharded", max_shard_size="60KB")


def edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def edit_weights(folder, fn):
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    fn(tensors)
    save_file(tensors, str(path))


def test_missing_folder_and_config(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="nope: no such model folder"):
        load_hf(tmp_path / "nope")
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"hf/config\.json: no such file"):
        load_hf(folder)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model_type": "gpt2"}, r"config\.json: model_type is 'gpt2'; only llama"),
        (
            {"architectures": ["MistralForCausalLM"]},
            r"config\.json: architectures is \['MistralForCausalLM'\]",
        ),
        (
            {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
            r"config\.json: rope_scaling .* not supported",
        ),
        (
            {"rope_parameters": {"rope_type": "yarn", "factor": 4.0}},
            r"config\.json: rope_parameters .* not supported",
        ),
        ({"attention_bias": True}, r"config\.json: attention_bias is true"),
        ({"mlp_bias": True}, r"config\.json: mlp_bias is true"),
        ({"hidden_act": "gelu"}, r"config\.json: hidden_act 'gelu'"),
        ({"num_key_value_heads": 3}, r"config\.json: .*divisible by n_kv_heads"),
        ({"hidden_size": None}, r"config\.json: bad value"),
    ],
)
def test_unsupported_config(folder, changes, message):
    edit_config(folder, **changes)
    with pytest.raises(ModelFormatError, match=message):
        load_hf(folder)


def test_missing_config_field(folder):
    config = json.loads((folder / "config.json").read_text())
    del config["intermediate_size"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match=r"config\.json: missing field 'intermediate_size'"):
        load_hf(folder)


def test_missing_shard_listed_in_index(sharded):
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    victim = index["weight_map"]["model.norm.weight"]
    (sharded / victim).unlink()
    with pytest.raises(ModelFormatError, match=rf"index\.json: lists {victim} .* does not exist"):
        load_hf(sharded)


def test_truncated_safetensors(sharded):
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    victim = sharded / index["weight_map"]["model.layers.1.mlp.down_proj.weight"]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 10])
    with pytest.raises(ModelFormatError, match=rf"{victim.name}: truncated safetensors file"):
        load_hf(sharded)
    victim.write_bytes(data[:20])  # cut inside the header
    with pytest.raises(ModelFormatError, match=rf"{victim.name}: truncated safetensors file"):
        load_hf(sharded)


def test_corrupt_safetensors_header(folder):
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:20] = b"#garbage####"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match=r"model\.safetensors: corrupt safetensors header"):
        load_hf(folder)
    path.write_bytes(b"\xff" * 8 + b"x" * 10)
    with pytest.raises(ModelFormatError, match=r"model\.safetensors: not a safetensors file"):
        load_hf(folder)


def test_missing_tensor(folder):
    edit_weights(folder, lambda t: t.pop("model.layers.1.self_attn.k_proj.weight"))
    with pytest.raises(
        ModelFormatError, match=r"tensor 'model\.layers\.1\.self_attn\.k_proj\.weight' is missing"
    ):
        load_hf(folder)


def test_unexpected_tensor(folder):
    edit_weights(folder, lambda t: t.update({"model.layers.0.self_attn.q_proj.bias": torch.zeros(64)}))
    with pytest.raises(
        ModelFormatError,
        match=r"model\.safetensors: unexpected tensor 'model\.layers\.0\.self_attn\.q_proj\.bias'",
    ):
        load_hf(folder)


def test_wrong_shape(folder):
    edit_weights(folder, lambda t: t.update({"model.layers.0.mlp.up_proj.weight": torch.zeros(100, 64)}))
    with pytest.raises(
        ModelFormatError,
        match=r"model\.safetensors: tensor 'model\.layers\.0\.mlp\.up_proj\.weight' has shape \[100, 64\], "
        r"expected \[192, 64\]",
    ):
        load_hf(folder)


def test_no_weights(folder):
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelFormatError, match="no safetensors weights"):
        load_hf(folder)


def test_old_rotary_buffer_and_unprefixed_names_accepted(folder):
    def rename(t):
        for k in list(t):
            t[k.removeprefix("model.")] = t.pop(k)
        t["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.zeros(8)

    edit_weights(folder, rename)
    model, _ = load_hf(folder)
    assert model.cfg.n_layers == 2


def test_save_refuses_a_tokenizer_larger_than_the_vocabulary(tmp_path):
    from gaperon.tokenizer import llama3_tokenizer

    with pytest.raises(ValueError, match="has 128256 ids but the model only 512 embedding rows"):
        save_hf(random_llama("micro"), llama3_tokenizer(), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
