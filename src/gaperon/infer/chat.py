"""Multi-turn chat over the simple generator: history in the model's chat template, streamed replies.

`run_interactive` is the terminal loop behind `gaperon chat` (commands /reset, /system TEXT, /exit);
`ChatSession.reply` is what scripts use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO

from jinja2.exceptions import TemplateError
from torch import nn

from gaperon.infer.generate import stream
from gaperon.infer.sampling import Sampling

HELP = "commands: /reset (forget the conversation), /system TEXT (set the system prompt), /exit"


@dataclass
class ChatOptions(Sampling):
    max_new_tokens: int = 512  # replies are longer than one-shot continuations
    draft_k: int = 4


@dataclass
class ChatSession:
    model: nn.Module
    tok: object
    system: str | None = None
    draft: nn.Module | None = None
    options: ChatOptions = field(default_factory=ChatOptions)
    turns: list[dict] = field(default_factory=list)  # user/assistant messages, no system
    last_acceptance: float | None = None

    @property
    def messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    def reset(self) -> None:
        """Forget the conversation, keep the system prompt."""
        self.turns = []

    def set_system(self, text: str | None) -> None:
        self.system = text or None

    def _prompt(self) -> list[int]:
        """The rendered history; the oldest turns are dropped if it outgrows the context."""
        ctx = self.model.cfg.max_seq_len
        while True:
            ids = self.tok.encode_chat(self.messages, add_generation_prompt=True)
            if len(ids) < ctx or len(self.turns) <= 1:
                return ids
            self.turns = self.turns[2:] if len(self.turns) > 2 else self.turns[-1:]

    def reply(self, user_text: str) -> Iterator[str]:
        """Stream the assistant's answer to `user_text`; the full answer joins the history."""
        self.turns.append({"role": "user", "content": user_text})
        o = self.options
        try:
            gen = stream(
                self.model,
                self.tok,
                self._prompt(),
                max_new_tokens=o.max_new_tokens,
                temperature=o.temperature,
                top_k=o.top_k,
                top_p=o.top_p,
                seed=o.seed,
                draft=self.draft,
                draft_k=o.draft_k,
            )
        except Exception:
            self.turns.pop()
            raise
        yield from gen
        assert gen.result is not None
        self.last_acceptance = gen.result.acceptance_rate
        self.turns.append({"role": "assistant", "content": gen.result.text})

    def complete(self, messages: list[dict]) -> str:
        """Answer a whole message list at once (system messages included), without streaming."""
        system = [m["content"] for m in messages if m.get("role") == "system"]
        self.system = system[-1] if system else self.system
        self.turns = [dict(m) for m in messages[:-1] if m.get("role") != "system"]
        last = messages[-1]
        if last.get("role") != "user":
            raise ValueError("the last message must be from the user")
        return "".join(self.reply(last["content"]))


def run_interactive(session: ChatSession, stdin: TextIO, stdout: TextIO, prompt: str = "> ") -> int:
    """Read user lines until /exit or end of input; stream each reply to stdout."""
    stdout.write(f"chatting ({HELP})\n")
    tty = stdin.isatty() and stdout.isatty()  # then input() gives line editing and history
    while True:
        if tty:
            try:
                text = input(prompt)
            except EOFError:
                stdout.write("\n")
                return 0
        else:
            stdout.write(prompt)
            stdout.flush()
            line = stdin.readline()
            if not line:
                stdout.write("\n")
                return 0
            text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.strip() in ("/exit", "/quit"):
            return 0
        if text.strip() == "/reset":
            session.reset()
            stdout.write("(conversation reset)\n")
            continue
        if text.startswith("/system"):
            session.set_system(text[len("/system") :].strip())
            session.reset()
            stdout.write(f"(system prompt {'set' if session.system else 'cleared'}; conversation reset)\n")
            continue
        if text.startswith("/"):
            stdout.write(f"unknown command {text.split()[0]!r}; {HELP}\n")
            continue
        reply = session.reply(text)
        try:
            for delta in reply:
                stdout.write(delta)
                stdout.flush()
        except (ValueError, TemplateError) as e:  # e.g. the history outgrew the context
            stdout.write(f"(error: {e})")
        except KeyboardInterrupt:  # stop this answer, keep the session
            reply.close()
            if session.turns and session.turns[-1]["role"] == "user":
                session.turns.pop()
            stdout.write(" (interrupted)")
        stdout.write("\n")
