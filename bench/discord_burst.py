"""A burst of @-mentions against the Discord front end: the real discord.py client, a fake Discord on
loopback.

    .venv/bin/python bench/discord_burst.py [--model scripted|real] [--mentions 100] [--users 20]
                                            [--answer-chars 3000] [--edit-interval 1.0]

Sends `--mentions` mentions from `--users` users at once over the fake gateway. Each is answered in a thread
of its own: thread created, typing shown, the answer streamed by throttled edits and split at 2000 characters.
Prints one table: mention-to-thread and mention-to-first-text latency, answers per minute, REST calls per
answer, the longest message, and the lost / answered-twice counts (both must be 0).

The model: `scripted` (default) streams a fixed text of about `--answer-chars` characters in `--tokens`
steps (`--token-ms` each, at most `--model-batch` answers at once, like a batching server), so the front end,
not the CPU, is measured; `real` uses the default SmolLM2-135M model with greedy decoding of
`--max-new-tokens` tokens.
Everything (fake Discord, bot) shares one process and event loop, so latencies include that contention.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.discord_adapter import run_discord
from bot.dispatcher import Dispatcher
from core.config import load_settings
from core.engine import Engine
from core.models import Generation
from feedback import FeedbackStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "discord"))
from fake_discord import USER_ID, FakeDiscord, user_payload  # noqa: E402

PARAGRAPH = ("To reset your VPN profile, open **Settings → Network**, remove the `corp` profile, then sign "
             "in again with MFA; the handbook has screenshots.\n")
CODE = "```sh\nvpnctl reset --profile corp\nvpnctl login --mfa\n```\n"


class ScriptedModel:
    """A stand-in chat model: streams a fixed answer in `steps` pieces, `batch` answers at a time."""

    name = "scripted"
    context_window = 8192
    adapter = ""

    def __init__(self, *, chars: int, steps: int, step_s: float, batch: int) -> None:
        text = ""
        while len(text) < chars:
            text += PARAGRAPH + (CODE if len(text) % 3 == 0 else "")
        size = max(1, len(text) // steps)
        self.pieces = [text[i:i + size] for i in range(0, len(text), size)]
        self.step_s = step_s
        self._slots = asyncio.Semaphore(batch)

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        return sum(len(m["content"]) // 4 + 4 for m in messages)

    def truncate(self, text: str, max_tokens: int) -> str:
        return text[: max_tokens * 4]

    async def generate(self, messages, decoding, *, adapter=None, on_text=None) -> list[Generation]:
        async with self._slots:
            text = ""
            for piece in self.pieces:
                await asyncio.sleep(self.step_s)
                text += piece
                if on_text is not None:
                    on_text(text.strip())
            return [Generation(text=text.strip(), prompt_tokens=self.count_tokens(messages),
                               completion_tokens=len(self.pieces), first_token_s=self.step_s)]

    async def aclose(self) -> None:
        return None


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


async def run(args: argparse.Namespace, model: Any, data_dir: Path) -> dict[str, Any]:
    fake = await FakeDiscord().start()
    precise = {"strategy": "greedy", "max_new_tokens": args.max_new_tokens}
    settings = load_settings(data_dir=data_dir, discord_token=fake.token, discord_api_url=fake.api_url,
                             discord_gateway_url=fake.gateway_url, default={"preset": "precise"},
                             presets={"precise": precise})
    store = FeedbackStore.open(settings)
    engine = Engine(settings, model, on_reply=store.on_reply)
    # Each user asks mentions/users questions within the burst; the limit is set so none is rate-limited.
    dispatcher = Dispatcher(engine, store, rate_limit_per_minute=max(10, args.mentions // args.users + 1))
    ready = asyncio.Event()
    bot = asyncio.create_task(run_discord(settings, dispatcher, ready=ready, edit_interval=args.edit_interval,
                                          guild_ready_timeout=0.1))
    await asyncio.wait_for(ready.wait(), 60)
    users = [user_payload(USER_ID + 10 + i, f"user{i}") for i in range(args.users)]

    t_start = time.monotonic()
    questions = await asyncio.gather(*(
        fake.say(f"question {i}: how do I reset my VPN profile?", author=users[i % args.users],
                 mention_bot=True) for i in range(args.mentions)))
    sent_at = {q["id"]: time.monotonic() for q in questions}  # all sent within the same few milliseconds

    def finished() -> bool:
        return sum(1 for q in questions if any(m["components"] for m in fake.bot_messages(q["id"]))) \
            == args.mentions

    await fake.wait_for(finished, timeout=args.timeout)
    await asyncio.sleep(0.5)  # let anything answered twice show up
    t_done = time.monotonic()

    to_thread, to_text = [], []
    for q in questions:
        thread_calls = fake.requests("POST", f"/channels/{q['channel_id']}/messages/{q['id']}/threads")
        posts = fake.requests("POST", f"/channels/{q['id']}/messages")
        if thread_calls:
            to_thread.append(thread_calls[0].at - sent_at[q["id"]])
        if posts:
            to_text.append(posts[0].at - sent_at[q["id"]])
    answered = [q for q in questions if fake.bot_messages(q["id"])]
    finals = [m for q in questions for m in fake.bot_messages(q["id"]) if m["components"]]
    rest = [c for c in fake.calls if c.path.startswith("/channels/")]
    result = {
        "thread_p50": pct(to_thread, 0.5) * 1000, "thread_p95": pct(to_thread, 0.95) * 1000,
        "text_p50": pct(to_text, 0.5) * 1000, "text_p95": pct(to_text, 0.95) * 1000,
        "per_min": len(finals) / (t_done - t_start) * 60, "wall": t_done - t_start,
        "rest_per_answer": len(rest) / max(1, len(finals)),
        "edits_per_answer": len(fake.requests("PATCH")) / max(1, len(finals)),
        "parts": max(len(fake.bot_messages(q["id"])) for q in questions),
        "longest": max(len(m["content"]) for m in fake.bot_messages()),
        "answered": len(finals), "lost": args.mentions - len(answered),
        "twice": len(finals) - len({m["channel_id"] for m in finals}),
    }
    bot.cancel()
    await asyncio.gather(bot, return_exceptions=True)
    await fake.close()
    store.close()
    return result


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "real":
            from core.models import load_model

            model = load_model(load_settings(data_dir=args.data_dir or Path(tmp) / "model"))
            label = f"{model.name}, greedy, {args.max_new_tokens} new tokens"
        else:
            model = ScriptedModel(chars=args.answer_chars, steps=args.tokens, step_s=args.token_ms / 1000,
                                  batch=args.model_batch)
            label = (f"scripted: ~{args.answer_chars} characters in {args.tokens} steps × "
                     f"{args.token_ms} ms, {args.model_batch} at a time")
        r = await run(args, model, Path(tmp) / "data")
        if args.model == "real":
            model.close()
    print(f"\nDiscord burst: {args.mentions} mentions from {args.users} users; model: {label}; "
          f"edits at most every {args.edit_interval}s\n")
    head = ("thread p50 ms", "thread p95 ms", "first text p50 ms", "first text p95 ms", "answers/min",
            "wall s", "REST calls/answer", "edits/answer", "messages/answer", "longest message", "answered",
            "lost", "answered twice")
    cells = (f"{r['thread_p50']:.0f}", f"{r['thread_p95']:.0f}", f"{r['text_p50']:.0f}",
             f"{r['text_p95']:.0f}", f"{r['per_min']:.0f}", f"{r['wall']:.1f}", f"{r['rest_per_answer']:.1f}",
             f"{r['edits_per_answer']:.1f}", r["parts"], r["longest"], f"{r['answered']}/{args.mentions}",
             r["lost"], r["twice"])
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    print("| " + " | ".join(str(c) for c in cells) + " |")
    if r["lost"] or r["twice"] or r["answered"] != args.mentions or r["longest"] > 2000:
        raise SystemExit("FAILED: a mention lost or answered twice, or a message over 2000 characters")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["scripted", "real"], default="scripted")
    p.add_argument("--mentions", type=int, default=100)
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--answer-chars", type=int, default=3000)
    p.add_argument("--tokens", type=int, default=40)
    p.add_argument("--token-ms", type=float, default=50.0)
    p.add_argument("--model-batch", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--edit-interval", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--data-dir", type=Path, default=None, help="where the real model is converted/cached")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
