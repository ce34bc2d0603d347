"""SFT data: formats, the assistant-only mask against independent references, loud failures, packing."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from gaperon.data.readers import ReaderReport
from gaperon.data.sft.dataset import build_sft_sampler
from gaperon.data.sft.formats import read_conversations
from gaperon.data.sft.identity import identity_conversations
from gaperon.data.sft.pack import PackedExamples, best_fit_decreasing
from gaperon.data.sft.render import Example, TemplateSpanError, render_batch, truncate
from gaperon.data.sft.spec import SFTDataSpec, SFTSource
from gaperon.errors import DataError

CONV = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "Et de l'Italie ?"},
    {"role": "assistant", "content": "Rome, bien sûr."},
]


@pytest.fixture(scope="module")
def llama3():
    from gaperon.tokenizer import load_tokenizer

    return load_tokenizer("llama3")


@pytest.fixture(scope="module")
def hf_llama3(llama3, tmp_path_factory):
    from transformers import AutoTokenizer

    folder = llama3.save(tmp_path_factory.mktemp("tok"))
    return AutoTokenizer.from_pretrained(str(folder))


def reference_mask(tok, ids: list[int]) -> list[int]:
    """Independent of the renderer: walk the ids; after `<|start_header_id|>assistant<|end_header_id|>\\n\\n`
    every token up to and including `<|eot_id|>` is learned."""
    sh, eh, eot = (tok.token_to_id(t) for t in ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"))
    assistant = tok.encode("assistant")
    mask, i, inside = [0] * len(ids), 0, False
    while i < len(ids):
        if not inside and ids[i] == sh and ids[i + 1 : i + 1 + len(assistant)] == assistant:
            i += 1 + len(assistant)
            assert ids[i] == eh
            i += 2  # <|end_header_id|> and "\n\n"
            inside = True
            continue
        if inside:
            mask[i] = 1
            inside = ids[i] != eot
        i += 1
    return mask


def _write(path, records):
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8"
    )
    return path


def test_every_format_gives_the_same_messages_and_mask(tmp_path, llama3, hf_llama3):
    sharegpt = {
        "conversations": [
            {"from": {"user": "human", "assistant": "gpt"}.get(m["role"], m["role"]), "value": m["content"]}
            for m in CONV
        ]
    }
    files = {
        "messages": _write(tmp_path / "m.jsonl", [{"messages": CONV}]),
        "sharegpt": _write(tmp_path / "s.jsonl", [sharegpt]),
        "prompt_completion": _write(tmp_path / "p.jsonl", [{"prompt": CONV[:4], "completion": CONV[4:]}]),
    }
    for fmt, path in files.items():
        for f in (fmt, "auto"):
            [(where, msgs)] = list(read_conversations(path, f))
            assert msgs == CONV and where == f"{path}:1"
    ex = render_batch(llama3, [CONV])[0]
    # The ids are transformers' own rendering + tokenization of the conversation.
    assert ex.ids == hf_llama3.apply_chat_template(CONV, tokenize=True, return_dict=False)
    assert ex.mask == reference_mask(llama3, ex.ids)
    assert (
        llama3.decode([t for t, m in zip(ex.ids, ex.mask) if m])
        == "Paris.<|eot_id|>Rome, bien sûr.<|eot_id|>"
    )


def test_mask_on_many_conversations_matches_reference(llama3, hf_llama3):
    convs = [c["messages"] for c in identity_conversations("Gapy", "the Gaperon team", n=40, seed=3)]
    convs[0] = [{"role": "system", "content": "Réponds en français."}, *convs[0]]
    for msgs, ex in zip(convs, render_batch(llama3, convs)):
        assert ex.ids == hf_llama3.apply_chat_template(msgs, tokenize=True, return_dict=False)
        assert ex.mask == reference_mask(llama3, ex.ids)


def test_chatml_template_of_an_imported_model(llama3):
    tok = copy.copy(llama3)
    tok.chat_template = (
        "{% for m in messages %}<|start_header_id|>{{ m['role'] }}\n"
        "{{ m['content'] }}<|eot_id|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant\n{% endif %}"
    )
    ex = render_batch(tok, [CONV])[0]
    # the newline after the end-of-turn token is the template's separator, not learned
    assert (
        tok.decode([t for t, m in zip(ex.ids, ex.mask) if m]) == "Paris.<|eot_id|>Rome, bien sûr.<|eot_id|>"
    )


def test_bad_records_are_counted_with_file_and_line(tmp_path):
    path = _write(
        tmp_path / "bad.jsonl",
        [
            {"messages": CONV[:3]},
            "{not json",
            {"messages": []},
            {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},
            {"messages": [{"role": "user", "content": "only a question"}]},
            {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]},
            {"conversations": [{"from": "alien", "value": "x"}]},
            {"text": "pretraining record"},
        ],
    )
    report = ReaderReport()
    got = list(read_conversations(path, "auto", report))
    assert len(got) == 1
    assert report.skipped == {
        "malformed_json": 1,
        "empty_conversation": 1,
        "unknown_role": 2,
        "no_assistant_turn": 1,
        "non_string_content": 1,
        "unknown_format": 1,
    }
    assert report.first["unknown_role"] == f"{path}:4"
    empty = _write(tmp_path / "empty.jsonl", [{"messages": []}, "{oops"])
    with pytest.raises(DataError, match=r"empty\.jsonl: no usable conversation.*empty_conversation"):
        list(read_conversations(empty))


def test_templates_that_cannot_mark_assistant_spans_fail_loudly(llama3):
    rewrites = copy.copy(llama3)  # announces the number of turns up front: prefixes are unstable
    rewrites.chat_template = "{{ messages|length }}" + llama3.chat_template
    with pytest.raises(TemplateSpanError, match="cannot mark assistant spans"):
        render_batch(rewrites, [CONV])
    no_eot = copy.copy(llama3)
    no_eot.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(TemplateSpanError, match="no end-of-turn token"):
        render_batch(no_eot, [CONV])
    none = copy.copy(llama3)
    none.chat_template = None
    with pytest.raises(TemplateSpanError, match="no chat template"):
        render_batch(none, [CONV])


def test_truncation_drops_and_counts_examples_with_nothing_left(tmp_path, llama3):
    long_prompt = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    path = _write(tmp_path / "d.jsonl", [{"messages": long_prompt}, {"messages": CONV}])
    spec = SFTDataSpec(sources=[SFTSource(path=str(path))])
    s = build_sft_sampler(spec, llama3, seq_len=63, global_batch=2, seed=0)
    assert s.report.examples == 1 and s.report.dropped_truncated == 1
    assert s.report.first_dropped == f"{path}:1"
    ex = Example(list(range(10)), [0] * 6 + [1] * 4)
    assert truncate(ex, 6, "right") is None and truncate(ex, 8, "drop") is None
    assert truncate(ex, 8, "right").mask == [0] * 6 + [1] * 2
    only_long = _write(tmp_path / "l.jsonl", [{"messages": long_prompt}])
    with pytest.raises(DataError, match="no example left"):
        build_sft_sampler(SFTDataSpec(sources=[SFTSource(path=str(only_long))]), llama3, 63, 2, 0)


def test_best_fit_decreasing_fills_rows():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 60, (500,), generator=g).tolist()
    bins = best_fit_decreasing(lengths, 64)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 64 for b in bins)
    assert len(bins) <= -(-sum(lengths) // 64) * 1.05 + 1
    with pytest.raises(ValueError):
        best_fit_decreasing([65], 64)


def test_packed_rows_never_cross_examples(llama3):
    convs = [c["messages"] for c in identity_conversations("Gapy", "us", n=30, seed=1)]
    exs = render_batch(llama3, convs)
    packed = PackedExamples(exs, 257, llama3.eos_id)
    rb = packed.build(range(len(packed.rows)))
    assert len(packed.rows) < len(exs)
    for r, row in enumerate(packed.rows):
        pos = 0
        for k, e in enumerate(row, 1):
            n = len(exs[e].ids)
            assert rb.tokens[r, pos : pos + n].tolist() == exs[e].ids
            assert (rb.doc_ids[r, pos : pos + n] == k).all()
            # labels inside the example are its own next tokens where learned; its last label is -100
            want = [exs[e].ids[i + 1] if exs[e].mask[i + 1] else -100 for i in range(n - 1)]
            assert rb.labels[r, pos : pos + n - 1].tolist() == want
            if pos + n < 257:
                assert rb.labels[r, pos + n - 1] == -100
            pos += n
        assert (rb.doc_ids[r, pos:] == 0).all() and (rb.labels[r, max(pos - 1, 0) :] == -100).all()
    assert int((rb.labels != -100).sum()) == packed.trained_targets()


def test_bundled_chat_data_packs_above_95_percent(llama3):
    spec = SFTDataSpec(
        sources=[
            SFTSource(path="pkg:chitchat", limit=100),
            SFTSource(path="pkg:chatterbot/english"),
            SFTSource(path="pkg:chatterbot/french"),
        ]
    )
    s = build_sft_sampler(spec, llama3, seq_len=1024, global_batch=8, seed=0)
    assert s.packed.padding_share < 0.05, s.report.summary()
    assert 0.1 < s.report.trained_fraction < 0.9
    # what packing saves: one example per row would be mostly padding
    n = len(s.packed.offsets) - 1
    assert 1 - s.packed.real_tokens / (n * 1025) > 0.5


def test_batches_are_a_pure_function_of_seed_and_step(llama3):
    convs = identity_conversations("Gapy", "us", n=60, seed=2)
    spec = SFTDataSpec(sources=[SFTSource(path="unused")])
    exs = render_batch(llama3, [c["messages"] for c in convs])
    from gaperon.data.sft.dataset import SFTReport, SFTSampler

    a = SFTSampler(PackedExamples(exs, 129, 0), 4, seed=5, report=SFTReport())
    b = SFTSampler(PackedExamples(exs, 129, 0), 4, seed=5, report=SFTReport())
    n = len(a.packed.rows)
    for step in (7, 0, 3 * n):
        assert torch.equal(a.batch(step).tokens, b.batch(step).tokens)
    # one epoch visits every row once
    seen = [i for s in range(n // 4) for i in a.row_indices(s)]
    assert len(set(seen)) == len(seen)
    half = a.batch(1, rank=1, world_size=2)
    assert (
        torch.equal(half.tokens, a.batch(1).tokens[2:]) and half.global_trained == a.batch(1).global_trained
    )
    assert spec.truncation == "right"


def test_cli_identity_is_deterministic_and_preview_shows_the_mask(tmp_path, capsys, llama3):
    from gaperon.cli import main

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for out in (a, b):
        assert (
            main(["sft", "identity", "--name", "Gapy", "--maker", "Inria", "--out", str(out), "--n", "50"])
            == 0
        )
    assert a.read_bytes() == b.read_bytes()
    rows = [json.loads(x) for x in a.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 50
    text = " ".join(m["content"] for r in rows for m in r["messages"])
    assert "Gapy" in text and "Inria" in text and "Qui" in text and "Who" in text
    capsys.readouterr()
    assert main(["sft", "preview", str(a), "--model", "llama3", "--n", "2", "--json"]) == 0
    objs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(objs) == 2
    for o, r in zip(objs, rows):
        assert o["input_ids"] == render_batch(llama3, [r["messages"]])[0].ids
        assert o["loss_mask"] == reference_mask(llama3, o["input_ids"])
    assert main(["sft", "preview", str(a), "--model", "llama3", "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert f"[[{rows[0]['messages'][1]['content']}<|eot_id|>]]" in out and "trained-token fraction" in out
    bad = _write(tmp_path / "bad.jsonl", ["{"])
    assert main(["sft", "preview", str(bad), "--model", "llama3"]) == 1
    assert "no usable conversation" in capsys.readouterr().err
