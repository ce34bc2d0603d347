"""One OpenAI-compatible chat client for every LLM-as-judge use: evaluation and curation."""

from gaperon.judge.client import (
    Job,
    JudgeClient,
    Outcome,
    ParseError,
    RunReport,
)

__all__ = ["Job", "JudgeClient", "Outcome", "ParseError", "RunReport"]
