"""`gaperon import`, `gaperon export` and `gaperon info` end to end through the CLI entry point."""

from __future__ import annotations

import json

import pytest
import torch
from io_helpers import make_run, random_llama, write_llama_gguf

from gaperon.cli import main
from gaperon.io.hf import load_hf, save_hf


def test_import_gguf_to_hf_folder(tmp_path, capsys):
    model = random_llama("micro")
    src = write_llama_gguf(tmp_path / "m.gguf", model)
    out = tmp_path / "imported"
    assert main(["import", str(src), str(out), "--dtype", "bf16"]) == 0
    assert "wrote" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16" and config["tie_word_embeddings"] is False
    assert (out / "tokenizer.json").is_file()
    back, tok = load_hf(out)
    assert back.embed_tokens.weight.dtype == torch.bfloat16
    assert torch.equal(back.lm_head.weight, model.lm_head.weight.to(torch.bfloat16))
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]).startswith("<|im_start|>user")


def test_import_hf_folder_and_refuse_existing_output(tmp_path, capsys):
    src = save_hf(random_llama("micro", tie_embeddings=True), None, tmp_path / "src")
    out = tmp_path / "out"
    assert main(["import", str(src), str(out), "--max-shard-size", "40KB"]) == 0
    assert (out / "model.safetensors.index.json").is_file()
    assert main(["import", str(src), str(out)]) == 2  # a usage error, refused before loading
    assert "already exists" in capsys.readouterr().err
    assert main(["import", str(src), str(out), "--force"]) == 0
    assert (out / "model.safetensors").is_file()
    assert main(["import", str(src), str(src / "inner")]) == 1


def test_bad_max_shard_size_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    import gaperon.io.loading as loading

    def no_loading(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the argument was checked")

    monkeypatch.setattr(loading, "load_model", no_loading)
    src = save_hf(random_llama("micro"), None, tmp_path / "src")
    assert main(["import", str(src), str(tmp_path / "out"), "--max-shard-size", "2XB"]) == 2
    err = capsys.readouterr().err
    assert "'2XB'" in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_export_training_run(tmp_path):
    from gaperon.tokenizer import llama3_tokenizer

    tok = llama3_tokenizer()
    model = random_llama("tiny", norm_gain_scale=20.0)
    run = tmp_path / "run"
    make_run(run, model, tok)
    out = tmp_path / "export"
    assert main(["export", str(run), str(out), "--dtype", "fp32"]) == 0
    from transformers import LlamaForCausalLM

    theirs = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32)
    x = torch.tensor([tok.encode("Bonjour le monde", bos=True)])
    with torch.no_grad():
        assert (theirs(x).logits - model(x)).abs().max().item() < 1e-5
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [
        128001,
        128008,
        128009,
    ]


@pytest.mark.parametrize(
    "name, make_bad, message",
    [
        ("bad.gguf", lambda p: p.write_bytes(b"not a model at all"), "not a GGUF file"),
        ("bad.txt", lambda p: p.write_bytes(b"not a model at all"), "not a model; expected a .gguf file"),
        ("bad_dir", lambda p: p.mkdir(), "not a model folder"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, name, make_bad, message):
    bad = tmp_path / name
    make_bad(bad)
    assert main(["export", str(bad), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert message in err and str(bad) in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_gguf_error(tmp_path, capsys):
    src = write_llama_gguf(tmp_path / "g.gguf", random_llama("micro"), arch="gpt2")
    assert main(["import", str(src), str(tmp_path / "out")]) == 1
    assert "general.architecture is 'gpt2'; only llama is supported" in capsys.readouterr().err


def test_info_gaperon_8b(capsys):
    assert main(["info", "gaperon-8b"]) == 0
    out = capsys.readouterr().out
    assert "8,030,261,248 parameters (8.030 B)" in out
    assert "dim=4096 layers=32 heads=32 kv_heads=8 head_dim=128 ffn=14336 vocab=128256" in out
    assert main(["info", "gaperon-9b"]) == 2  # an unknown preset is a usage error


def test_help_texts(capsys):
    for verb in ("import", "export", "info"):
        with pytest.raises(SystemExit):
            main([verb, "--help"])
        text = capsys.readouterr().out
        tail = text[text.rindex("examples:") :].splitlines()  # every verb's help ends with examples
        assert len(tail) >= 2 and all(line.startswith(f"  gaperon {verb}") for line in tail[1:])
        if verb != "info":
            assert "--dtype" in text and "Hugging Face" in text and "--force" in text


def test_info_without_argument_lists_presets(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "gaperon-1b" in out and "1.498 B" in out and "gaperon-8b" in out and "8.030 B" in out


def test_info_describes_a_gguf_and_an_hf_folder_without_loading_weights(tmp_path, capsys, monkeypatch):
    import gaperon.io.loading as loading

    def no_loading(*_args, **_kwargs):
        raise AssertionError("info loaded the weights")

    monkeypatch.setattr(loading, "load_model", no_loading)
    model = random_llama("micro")
    n = model.num_params()
    gguf_path = write_llama_gguf(tmp_path / "m.gguf", model, qtype="Q8_0")
    assert main(["info", str(gguf_path)]) == 0
    out = capsys.readouterr().out
    assert f"{n:,} parameters" in out and "GGUF file" in out and "Q8_0 x" in out
    assert "tokenizer: gpt2 BPE, 512 tokens" in out and "chat template: yes" in out
    folder = save_hf(random_llama("micro", tie_embeddings=True), None, tmp_path / "hf", dtype="bf16")
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    tied = random_llama("micro", tie_embeddings=True).num_params()
    assert f"{tied:,} parameters" in out and "Hugging Face folder" in out and "bf16 x" in out
    assert "config dtype: bf16" in out and "tokenizer: none" in out and "chat template: no" in out
    assert main(["info", str(tmp_path / "nothing")]) == 2
