"""The console front end: an interactive terminal chat over the same engine the bots use."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

from core.engine import Engine
from core.text import clean_text
from core.types import Reply, Turn

__all__ = ["ConsoleChat"]

logger = logging.getLogger(__name__)

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

    def turn(self, text: str) -> Turn:
        return Turn(text=text, platform="console", channel=self.channel, channel_name=self.channel,
                    thread=self.thread, user=self.user, preset=self.preset, mode=self.mode)

    async def run(self) -> None:
        self.console.print(f"[bold]Kaizen[/bold] · model {self.engine.model.name} · /help for commands, /quit to leave")
        while True:
            try:
                line = await asyncio.to_thread(self.read, "you> ")
            except (EOFError, KeyboardInterrupt):
                self.console.print()
                return
            line = clean_text(line).strip()  # NUL, controls, undecodable bytes: valid text from here on
            if line.startswith("/"):
                if not await self.command(line):
                    return
                continue
            await self.say(line)

    async def say(self, text: str) -> Reply | None:
        return await self._show(lambda on_text: self.engine.answer(self.turn(text), on_text=on_text))

    async def _show(self, produce) -> Reply | None:
        shown = 0

        def on_text(so_far: str) -> None:
            nonlocal shown
            # Print only what is new; the engine hands us the whole answer so far.
            if len(so_far) > shown:
                sys.stdout.write(so_far[shown:])
                sys.stdout.flush()
                shown = len(so_far)

        sys.stdout.write("kaizen> ")
        sys.stdout.flush()
        try:
            reply = await produce(on_text)
        except ValueError as e:  # unknown preset/mode and other user mistakes
            sys.stdout.write("\n")
            self.console.print(f"[red]{e}[/red]")
            return None
        except Exception:
            logger.exception("engine failed")
            sys.stdout.write("\n")
            self.console.print("[red]Sorry, something went wrong while answering; the error is in the log.[/red]")
            return None
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

