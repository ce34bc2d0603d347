"""Multi-turn chat over the engine: history in the model's chat template, streamed replies.

`run_interactive` is the terminal loop behind `gaperon chat` (/help, /reset, /system TEXT, /exit;
line editing and history through readline on a terminal); `ChatSession.reply` is what scripts use.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from jinja2.exceptions import TemplateError

from gaperon.errors import ChatFormatError, GaperonError
from gaperon.infer.engine import EngineLike, stream_request
from gaperon.infer.sampling import Sampling
from gaperon.tokenizer.protocol import TextTokenizer

HELP = (
    "commands: /help (this list), /reset (forget the conversation), /system TEXT (set the system "
    "prompt and reset), /exit (or Ctrl-D); Ctrl-C stops a reply; arrow keys edit and recall lines"
)
TRUNCATED = " [reply cut: token limit reached; raise --max-new-tokens]"


def encode_messages(tok: TextTokenizer, messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """The chat template's ids for `messages`; a template that rejects them is the user's to fix."""
    if tok.chat_template is None:
        raise ChatFormatError("the model's tokenizer has no chat template: use plain prompts instead")
    try:
        return tok.encode_chat(messages, add_generation_prompt=True)
    except TemplateError as e:  # the template's own raise_exception, or a malformed template
        raise ChatFormatError(f"the chat template rejected the messages: {e}") from None


@dataclass
class ChatSession:
    engine: EngineLike
    tok: TextTokenizer
    system: str | None = None
    sampling: Sampling = field(default_factory=lambda: Sampling(max_new_tokens=512))
    turns: list[dict[str, str]] = field(default_factory=list)  # user/assistant messages, no system
    dropped_turns: int = 0  # old turns dropped by the last reply to fit the context
    last_finish: str | None = None  # "stop" | "length" of the last reply

    @property
    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    def reset(self) -> None:
        """Forget the conversation, keep the system prompt."""
        self.turns = []

    def set_system(self, text: str | None) -> None:
        self.system = text or None

    def _prompt(self) -> list[int]:
        """The rendered history; the oldest exchanges are dropped (counted) if it outgrows the context."""
        ctx = self.engine.max_len
        self.dropped_turns = 0
        while True:
            ids = encode_messages(self.tok, self.messages)
            if len(ids) < ctx or len(self.turns) <= 1:
                return ids
            drop = 2 if len(self.turns) > 2 else len(self.turns) - 1
            self.turns = self.turns[drop:]
            self.dropped_turns += drop

    def reply(self, user_text: str) -> Generator[str, None, None]:
        """Stream the assistant's answer to `user_text`; the full answer joins the history."""
        self.turns.append({"role": "user", "content": user_text})
        try:
            outputs = stream_request(self.engine, self._prompt(), self.sampling)
        except GaperonError:  # a prompt the template or the context refuses: the turn never happened
            self.turns.pop()
            raise
        text = []
        self.last_finish = None
        for out in outputs:
            if out.text:
                text.append(out.text)
                yield out.text
            if out.finished:
                self.last_finish = out.finish_reason
        self.turns.append({"role": "assistant", "content": "".join(text)})

    def complete(self, messages: list[dict[str, str]]) -> str:
        """Answer a whole message list at once (system messages included), without streaming."""
        system = [m["content"] for m in messages if m.get("role") == "system"]
        self.system = system[-1] if system else self.system
        self.turns = [dict(m) for m in messages[:-1] if m.get("role") != "system"]
        last = messages[-1]
        if last.get("role") != "user":
            raise ChatFormatError("the last message must be from the user")
        return "".join(self.reply(last["content"]))


def _command(session: ChatSession, text: str, stdout: TextIO) -> bool | None:
    """Run a /command; None: not a command; True: exit; False: handled."""
    word = text.split()[0] if text.startswith("/") else ""
    if not word:
        return None
    if word in ("/exit", "/quit"):
        return True
    if word == "/help":
        stdout.write(HELP + "\n")
    elif word == "/reset":
        session.reset()
        stdout.write("(conversation reset)\n")
    elif word == "/system":
        session.set_system(text[len("/system") :].strip())
        session.reset()
        stdout.write(f"(system prompt {'set' if session.system else 'cleared'}; conversation reset)\n")
    else:
        stdout.write(f"unknown command {word!r}; {HELP}\n")
    return False


def _read_line(stdin: TextIO, stdout: TextIO, prompt: str, tty: bool) -> str | None:
    if tty:
        try:
            return input(prompt)
        except EOFError:
            return None
    stdout.write(prompt)
    stdout.flush()
    line = stdin.readline()
    return line.rstrip("\n") if line else None


def _enable_line_editing() -> None:
    """On a terminal, `input()` gets line editing and history from readline once it is imported."""
    try:
        import readline  # noqa: F401
    except ImportError:  # Windows without pyreadline: plain input still works
        pass


def run_interactive(session: ChatSession, stdin: TextIO, stdout: TextIO, prompt: str = "> ") -> int:
    """Read user lines until /exit or end of input; stream each reply to stdout."""
    stdout.write("chatting; /help lists the commands\n")
    tty = stdin.isatty() and stdout.isatty()
    if tty:
        _enable_line_editing()
    while True:
        text = _read_line(stdin, stdout, prompt, tty)
        if text is None:
            stdout.write("\n")
            return 0
        if not text.strip():
            continue
        command = _command(session, text.strip(), stdout)
        if command is True:
            return 0
        if command is False:
            continue
        _answer(session, text, stdout)


def _answer(session: ChatSession, text: str, stdout: TextIO) -> None:
    reply = session.reply(text)
    try:
        for delta in reply:
            stdout.write(delta)
            stdout.flush()
    except GaperonError as e:  # the template or the context refused this turn: say so, keep the session
        stdout.write(f"(error: {e})")
    except KeyboardInterrupt:  # stop this answer, keep the session
        reply.close()
        if session.turns and session.turns[-1]["role"] == "user":
            session.turns.pop()
        stdout.write(" (interrupted)")
    else:
        if session.last_finish == "length":
            stdout.write(TRUNCATED)
        if session.dropped_turns:
            stdout.write(f"\n(the {session.dropped_turns} oldest messages were dropped to fit the context)")
    stdout.write("\n")
