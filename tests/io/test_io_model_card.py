"""The Gaperon SFT model card's usage runs unchanged on a folder we export."""

from __future__ import annotations

import torch
from io_helpers import random_llama
from transformers import AutoModelForCausalLM, AutoTokenizer

from gaperon.infer.generate import generate
from gaperon.infer.sampling import Sampling
from gaperon.io.hf import load_hf, save_hf
from gaperon.tokenizer import llama3_tokenizer


def test_model_card_usage_on_exported_folder(tmp_path):
    tok = llama3_tokenizer()
    ours = random_llama("tiny", seed=5)
    model_name = str(save_hf(ours, tok, tmp_path / "gaperon-tiny-sft", dtype="bf16"))

    # --- the model card, verbatim except for max_new_tokens ---
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    model = AutoModelForCausalLM.from_pretrained(model_name, torch_dtype=torch.bfloat16, device_map="auto")
    messages = [{"role": "user", "content": "Quelle est la capitale de la France ?"}]
    formatted_text = tokenizer.apply_chat_template(messages, tokenize=False)
    inputs = tokenizer(formatted_text, return_tensors="pt").to(model.device)
    outputs = model.generate(**inputs, max_new_tokens=8)
    response = tokenizer.decode(outputs[0], skip_special_tokens=True)
    # ---
    assert isinstance(response, str)
    prompt = inputs["input_ids"][0].tolist()
    assert prompt == tok.encode_chat(messages, add_generation_prompt=False)  # one BOS, same ids
    assert prompt.count(128000) == 1
    assert outputs.shape[1] > len(prompt)

    # Greedy decoding agrees with our own generator on the exported weights (fp32 both sides).
    theirs = AutoModelForCausalLM.from_pretrained(model_name, dtype=torch.float32)
    greedy = theirs.generate(**inputs, max_new_tokens=6, do_sample=False)[0, len(prompt) :].tolist()
    mine, _ = load_hf(model_name, dtype="fp32")
    assert generate(mine, tok, prompt, Sampling(max_new_tokens=6), stop_ids=()).ids == greedy
