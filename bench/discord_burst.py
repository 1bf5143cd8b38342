"""A burst of @-mentions against the Discord front end: the real discord.py client, a fake Discord on
loopback.

    .venv/bin/python bench/discord_burst.py [--model scripted|real] [--mentions 100] [--users 20]
                                            [--answer-chars 3000] [--edit-interval 1.0] [--replicas 2]

Sends `--mentions` mentions from `--users` users at once over the fake gateway, every fifth one delivered twice
(as a gateway resume replays events). Each is answered in a thread of its own: thread created, typing shown, the
answer streamed by throttled edits and split at 2000 characters. With `--replicas 2` the run is repeated with two
bots (each its own dispatcher and feedback store) on one shared database, both receiving every event, beside the
single-process figure. Prints one table: mention-to-thread and mention-to-first-text latency, answers per minute,
REST calls per answer, the longest message, and the lost / answered-twice counts (both must be 0).

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
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.discord.app import run_discord
from bot.dispatcher import Dispatcher
from core.config import load_settings
from core.engine import Engine
from feedback import FeedbackStore
from kaizen_testing.discord import USER_ID, FakeDiscord, user_payload
from kaizen_testing.scripted import ScriptedModel

PARAGRAPH = ("To reset your VPN profile, open **Settings → Network**, remove the `corp` profile, then sign "
             "in again with MFA; the handbook has screenshots.\n")
CODE = "```sh\nvpnctl reset --profile corp\nvpnctl login --mfa\n```\n"


def scripted_answer(chars: int) -> str:
    """About `chars` characters of prose with code blocks (so splitting has fences to keep whole)."""
    text = ""
    while len(text) < chars:
        text += PARAGRAPH + (CODE if len(text) % 3 == 0 else "")
    return text


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


async def run(args: argparse.Namespace, model: Any, data_dir: Path, replicas: int = 1) -> dict[str, Any]:
    fake = await FakeDiscord().start()
    precise = {"strategy": "greedy", "max_new_tokens": args.max_new_tokens}
    settings = load_settings(data_dir=data_dir / f"replicas-{replicas}", discord_token=fake.token,
                             discord_api_url=fake.api_url, discord_gateway_url=fake.gateway_url,
                             default={"preset": "precise"}, presets={"precise": precise})
    bots, stores = [], []
    for _ in range(replicas):  # each replica: its own store, dispatcher and gateway connection
        store = FeedbackStore.open(settings)
        engine = Engine(settings, model, on_reply=store.on_reply)
        # Each user asks mentions/users questions within the burst; the limit is set so none is rate-limited.
        dispatcher = Dispatcher(engine, store, rate_limit_per_minute=max(10, args.mentions // args.users + 1))
        ready = asyncio.Event()
        bots.append(asyncio.create_task(run_discord(settings, dispatcher, ready=ready,
                                                    edit_interval=args.edit_interval, guild_ready_timeout=0.1)))
        stores.append(store)
        await asyncio.wait_for(ready.wait(), 60)
    users = [user_payload(USER_ID + 10 + i, f"user{i}") for i in range(args.users)]

    t_start = time.monotonic()
    questions = await asyncio.gather(*(
        fake.say(f"question {i}: how do I reset my VPN profile?", author=users[i % args.users],
                 mention_bot=True) for i in range(args.mentions)))
    sent_at = {q["id"]: time.monotonic() for q in questions}  # all sent within the same few milliseconds
    # Every fifth event delivered again (a gateway resume replays what a restarted client missed).
    await asyncio.gather(*(fake.dispatch("MESSAGE_CREATE", q) for q in questions[::5]))

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
        "replicas": replicas,
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
    for bot in bots:
        bot.cancel()
    await asyncio.gather(*bots, return_exceptions=True)
    await fake.close()
    for store in stores:
        store.close()
    return result


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "real":
            from core.models import load_model

            model = load_model(load_settings(data_dir=args.data_dir or Path(tmp) / "model"))
            label = f"{model.name}, greedy, {args.max_new_tokens} new tokens"
        else:
            model = ScriptedModel(answer=scripted_answer(args.answer_chars), steps=args.tokens,
                                  token_s=args.token_ms / 1000, batch=args.model_batch)
            label = (f"scripted: ~{args.answer_chars} characters in {args.tokens} steps × "
                     f"{args.token_ms} ms, {args.model_batch} at a time")
        rows = [await run(args, model, Path(tmp) / "data", n) for n in sorted({1, args.replicas})]
        if args.model == "real":
            model.close()
    print(f"\nDiscord burst: {args.mentions} mentions from {args.users} users; model: {label}; "
          f"edits at most every {args.edit_interval}s\n")
    head = ("replicas", "thread p50 ms", "thread p95 ms", "first text p50 ms", "first text p95 ms", "answers/min",
            "wall s", "REST calls/answer", "edits/answer", "messages/answer", "longest message", "answered",
            "lost", "answered twice")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        cells = (r["replicas"], f"{r['thread_p50']:.0f}", f"{r['thread_p95']:.0f}", f"{r['text_p50']:.0f}",
                 f"{r['text_p95']:.0f}", f"{r['per_min']:.0f}", f"{r['wall']:.1f}", f"{r['rest_per_answer']:.1f}",
                 f"{r['edits_per_answer']:.1f}", r["parts"], r["longest"], f"{r['answered']}/{args.mentions}",
                 r["lost"], r["twice"])
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if any(r["lost"] or r["twice"] or r["answered"] != args.mentions or r["longest"] > 2000 for r in rows):
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
    p.add_argument("--replicas", type=int, default=2, help="bots on one database (1: single only)")
    p.add_argument("--data-dir", type=Path, default=None, help="where the real model is converted/cached")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
