"""The console front end: an interactive terminal chat over the same engine the bots use."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from core.engine import Engine
from core.text import clean_text
from core.types import Reply, Turn

try:  # POSIX terminals; elsewhere the chat still works, without holding keys back
    import termios
except ImportError:  # pragma: no cover - Windows
    termios = None  # type: ignore[assignment]
try:
    import readline as _readline
except ImportError:  # pragma: no cover
    _readline = None  # type: ignore[assignment]

__all__ = ["ConsoleChat"]

logger = logging.getLogger(__name__)


class _HeldKeys:
    """While an answer streams: the terminal stops echoing and hands keys over one by one, and they are collected
    here (backspace edits them) instead of appearing inside the answer. Ctrl-C still interrupts (the terminal
    keeps signal keys). `typed` is what was collected; a no-op when stdin is not a terminal."""

    def __init__(self) -> None:
        self.typed = ""
        self._fd: int | None = None
        self._saved: Any = None

    def __enter__(self) -> _HeldKeys:
        if termios is None or not sys.stdin.isatty():
            return self
        fd = sys.stdin.fileno()
        try:
            self._saved = termios.tcgetattr(fd)
            quiet = termios.tcgetattr(fd)
            quiet[3] &= ~(termios.ECHO | termios.ICANON)
            quiet[6][termios.VMIN], quiet[6][termios.VTIME] = 0, 0
            termios.tcsetattr(fd, termios.TCSANOW, quiet)
        except termios.error:
            return self
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._collect)
        return self

    def _collect(self) -> None:
        try:
            data = os.read(self._fd, 1024).decode("utf-8", "replace")
        except OSError:
            return
        for ch in data:
            if ch in ("\x7f", "\b"):
                self.typed = self.typed[:-1]
            elif ch == "\r":
                self.typed += "\n"
            elif ch == "\n" or ch >= " " or ch == "\t":
                self.typed += ch

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        asyncio.get_running_loop().remove_reader(self._fd)
        # Keys still in flight (typed in the last milliseconds) are collected before echo comes back.
        while select.select([self._fd], [], [], 0)[0]:
            before = self.typed
            self._collect()
            if self.typed == before:
                break
        termios.tcsetattr(self._fd, termios.TCSANOW, self._saved)

HELP = """Commands:
  /preset NAME    decoding preset for the next messages (/preset alone lists them)
  /mode NAME      chat, rag, agent or auto
  /trace          show what the engine did for the last answer (prompt, trims, reasoning, tool calls)
  /up, /down      vote 👍 or 👎 on the last answer (/retract takes the vote back)
  /reason TEXT    say why, for your vote on the last answer
  /correct TEXT   replace the last answer with what it should have said (training learns from it)
  /another        try another answer (different decoding); votes on the two make a preference pair
  /reset          forget this conversation
  /help           this text
  /quit           leave (Ctrl-D works too)"""


@dataclass
class ConsoleChat:
    engine: Engine
    channel: str = ""
    user: str = "console"
    preset: str | None = None
    mode: str | None = None
    console: Console = field(default_factory=lambda: Console(highlight=False))
    read: Callable[[str], str] = input
    last: Reply | None = None
    thread: str = "console"
    store: Any = None  # feedback.FeedbackStore: votes from /up, /down, /reason
    _answering: asyncio.Future | None = field(default=None, init=False, repr=False)
    _queued: list[str] = field(default_factory=list, init=False, repr=False)  # lines typed during an answer
    _pending: str = field(default="", init=False, repr=False)  # a half-typed line from then
    _stop: bool = field(default=False, init=False, repr=False)  # Ctrl-C asked to stop the current answer

    def turn(self, text: str) -> Turn:
        return Turn(text=text, platform="console", channel=self.channel, channel_name=self.channel,
                    thread=self.thread, user=self.user, preset=self.preset, mode=self.mode)

    async def run(self) -> None:
        self.console.print(f"[bold]Kaizen[/bold] · model {self.engine.model.name} · /help for commands, /quit to leave")
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGINT)
        try:
            # Ctrl-C stops the answer being written (or clears the line at the prompt), never the program.
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
            handles_sigint = True
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals here
            handles_sigint = False
        try:
            await self._loop()
        finally:
            if handles_sigint:
                loop.remove_signal_handler(signal.SIGINT)
                signal.signal(signal.SIGINT, previous)

    async def _loop(self) -> None:
        while True:
            if self._queued:
                # Lines typed (and entered) while the last answer streamed: shown, then answered in order.
                line = self._queued.pop(0)
                sys.stdout.write(f"you> {line}\n")
                sys.stdout.flush()
            else:
                try:
                    line = await asyncio.to_thread(self._read_line, "you> ")
                except (EOFError, KeyboardInterrupt):
                    self.console.print()
                    return
            line = clean_text(line).strip()  # NUL, controls, undecodable bytes: valid text from here on
            if not line:
                continue
            if line.startswith("/"):
                if not await self.command(line):
                    return
                continue
            await self.say(line)

    def _read_line(self, prompt: str) -> str:
        """`read(prompt)`, with what was typed but not entered during the last answer already in the line."""
        pending, self._pending = self._pending, ""
        if pending and self.read is input and _readline is not None:
            _readline.set_startup_hook(lambda: _readline.insert_text(pending))
            try:
                return self.read(prompt)
            finally:
                _readline.set_startup_hook()
        if pending:  # no line editing here: show it, and take it as the start of the line
            sys.stdout.write(f"(typed while answering: {pending})\n")
            return pending + self.read(prompt)
        return self.read(prompt)

    def _interrupt(self) -> None:
        if self._answering is not None and not self._answering.done():
            self._stop = True
            self._answering.cancel()
            return
        # At the prompt: like a shell, drop the half-typed line and offer a fresh one.
        with contextlib.suppress(OSError, ValueError, termios.error if termios else OSError):
            if termios is not None and sys.stdin.isatty():
                termios.tcflush(sys.stdin.fileno(), termios.TCIFLUSH)
        sys.stdout.write("^C (Ctrl-D or /quit to leave)\nyou> ")
        sys.stdout.flush()

    async def say(self, text: str) -> Reply | None:
        return await self._show(lambda on_text: self.engine.answer(self.turn(text), on_text=on_text))

    async def _show(self, produce) -> Reply | None:
        shown = 0
        live = True  # False once this answer ended or was stopped: late pieces of it are not printed
        held = _HeldKeys()

        def on_text(so_far: str) -> None:
            nonlocal shown
            # Print only what is new; the engine hands us the whole answer so far.
            if live and len(so_far) > shown:
                sys.stdout.write(so_far[shown:])
                sys.stdout.flush()
                shown = len(so_far)

        sys.stdout.write("kaizen> ")
        sys.stdout.flush()
        self._stop = False
        self._answering = asyncio.ensure_future(produce(on_text))
        try:
            with held:  # what is typed now is kept for later, not echoed into the answer
                reply = await self._answering
        except asyncio.CancelledError:
            if not self._stop:
                raise  # the chat itself is being stopped
            sys.stdout.write(" [stopped]\n")
            sys.stdout.flush()
            return None
        except ValueError as e:  # unknown preset/mode and other user mistakes
            sys.stdout.write("\n")
            self.console.print(f"[red]{e}[/red]")
            return None
        except Exception:
            logger.exception("engine failed")
            sys.stdout.write("\n")
            self.console.print("[red]Sorry, something went wrong while answering; the error is in the log.[/red]")
            return None
        finally:
            live = False
            self._answering = None
            self._take(held.typed)
        # Streaming may have been off (chain-of-thought, beam search) or cut at whitespace: finish the line.
        if shown == 0:
            sys.stdout.write(reply.answer)
        elif shown < len(reply.answer):
            sys.stdout.write(reply.answer[shown:])
        sys.stdout.write("\n")
        for i, s in enumerate(reply.sources, 1):
            self.console.print(f"  [dim][{i}] {s.title or s.uri} {s.uri}[/dim]")
        self.last = reply
        return reply

    def _take(self, typed: str) -> None:
        """Queue the complete lines typed during an answer; keep a half-typed one for the next prompt."""
        *lines, rest = typed.split("\n")
        self._queued += [line for line in lines if line.strip()]
        self._pending += rest

    async def command(self, line: str) -> bool:
        """Handle a /command; False means quit."""
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        presets = self.engine.settings.presets
        match name:
            case "quit" | "exit" | "q":
                return False
            case "help" | "?":
                self.console.print(HELP)
            case "preset":
                if not arg:
                    self.console.print("presets: " + ", ".join(sorted(presets)))
                elif arg not in presets:
                    valid = ", ".join(sorted(presets))
                    self.console.print(f"[red]unknown preset {arg!r}; valid presets: {valid}[/red]")
                else:
                    self.preset = arg
                    self.console.print(f"preset: {arg}")
            case "mode":
                if arg not in ("chat", "rag", "agent", "auto"):
                    self.console.print("[red]valid modes: chat, rag, agent, auto[/red]")
                else:
                    self.mode = arg
                    self.console.print(f"mode: {arg}")
            case "trace":
                if self.last is None:
                    self.console.print("no answer yet")
                else:
                    self.show_trace(self.last)
            case "up" | "down" | "retract" | "reason" | "correct":
                self.feedback(name, arg)
            case "another":
                if self.last is None or not self.last.called_model:
                    self.console.print("no answer from the model to try again")
                else:
                    previous = self.last
                    await self._show(lambda on_text: self.engine.another(previous, on_text=on_text))
            case "reset":
                self.engine.memory.clear(self.turn("").conversation_key)
                self.console.print("conversation forgotten")
            case _:
                self.console.print(f"[red]unknown command /{name}[/red]\n{HELP}")
        return True

    def feedback(self, name: str, arg: str) -> None:
        if self.store is None:
            self.console.print("[red]no feedback store is open[/red]")
            return
        if self.last is None or not self.last.called_model:
            self.console.print("no answer to vote on yet")
            return
        iid = self.last.id
        try:
            match name:
                case "up" | "down":
                    self.store.vote(interaction_id=iid, user=self.user, value=1 if name == "up" else -1,
                                    reason=arg or None)
                    self.console.print(f"{'👍' if name == 'up' else '👎'} recorded for {iid}")
                case "retract":
                    self.store.retract_vote(interaction_id=iid, user=self.user)
                    self.console.print("vote taken back")
                case "reason":
                    if not arg:
                        self.console.print("usage: /reason TEXT")
                        return
                    self.store.set_reason(interaction_id=iid, user=self.user, reason=arg)
                    self.console.print("reason recorded")
                case "correct":
                    if not arg:
                        self.console.print("usage: /correct TEXT (what the last answer should have said)")
                        return
                    self.store.record_correction(interaction_id=iid, user=self.user, text=arg, platform="console")
                    self.console.print(f"[bold]corrected answer[/bold] (by {self.user}):")
                    self.console.print(arg, markup=False, highlight=False)
        except Exception as e:  # noqa: BLE001 - a clear line, never a traceback in the chat
            self.console.print(f"[red]{e}[/red]")

    def show_trace(self, reply: Reply) -> None:
        self.console.print(f"[bold]reply {reply.id}[/bold] model={reply.model} adapter={reply.adapter or '-'} "
                           f"preset={reply.preset} mode={reply.mode} tokens={reply.prompt_tokens}+"
                           f"{reply.completion_tokens} latency={reply.latency_ms:.0f}ms")
        self.console.print("[bold]prompt the model saw:[/bold]")
        for m in reply.prompt:
            self.console.print(f"  [cyan]{m.role}[/cyan]: {m.content}")
        for step in reply.trace:
            self.console.print(f"  [magenta]{step.kind}[/magenta] {json.dumps(step.detail, default=str)}")

