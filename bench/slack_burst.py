"""A burst of @-mentions against the Slack front end, with a fake Slack on loopback.

    .venv/bin/python bench/slack_burst.py [--transport http|socket|both] [--model scripted|real]
                                         [--mentions 100] [--users 20] [--retries 20] [--replicas 2]

Sends `--mentions` app_mention events from `--users` users at once (plus `--retries` re-deliveries — by default
every fifth event — with the same event_id, as Slack does when an ack is late), through the real bolt app in HTTP
mode (signed requests) and/or Socket Mode (websocket envelopes). With `--replicas 2` the HTTP run is repeated with
two front ends (each its own dispatcher and feedback store) on one shared database, events spread over them and
every retry sent to the *other* replica, as a load balancer would. Prints one table: event-to-ack latency,
event-to-placeholder latency, answers per minute, and the lost / answered-twice counts (both must be 0).

The model: `scripted` (default) answers a fixed text token by token (`--tokens` tokens, `--token-ms` each,
at most `--model-batch` answers at once, like a batching server), so the front end, not the CPU, is measured;
`real` uses the default SmolLM2-135M model with greedy decoding of `--max-new-tokens` tokens.
Everything (fake Slack, bot, client) shares one process and event loop, so latencies include that contention.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bot.dispatcher import Dispatcher
from bot.slack.app import SlackFrontEnd
from core.config import load_settings
from core.engine import Engine
from feedback import FeedbackStore
from kaizen_testing.scripted import ScriptedModel
from kaizen_testing.slack import FakeSlack, signed_headers

SECRET = "bench-signing-secret"
def mention(fake: FakeSlack, i: int, users: int) -> dict[str, Any]:
    channel = f"C0BURST{i % 5}"
    user = f"U0USER{i % users:02d}"
    text = f"<@{fake.bot_user_id}> question {i}: how do I reset my VPN profile?"
    ts = fake.add_message(channel, user=user, text=text)
    return {
        "token": "x",
        "team_id": fake.team_id,
        "api_app_id": "A0KAIZEN",
        "type": "event_callback",
        "event_id": f"Ev0BURST{i:05d}",
        "event_time": int(time.time()),
        "event": {
            "type": "app_mention",
            "user": user,
            "text": text,
            "ts": ts,
            "event_ts": ts,
            "channel": channel,
            "team": fake.team_id,
        },
    }


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def run(transport: str, args: argparse.Namespace, model: Any, data_dir: Path, replicas: int = 1
              ) -> dict[str, Any]:
    fake = FakeSlack()
    await fake.start()
    settings = load_settings(
        data_dir=data_dir / f"{transport}-{replicas}",
        slack_bot_token=fake.bot_token,
        slack_app_token=fake.app_token if transport == "socket" else "",
        slack_signing_secret=SECRET,
        slack_api_url=fake.api_url,
        default={"preset": "precise"},
        presets={"precise": {"strategy": "greedy", "max_new_tokens": args.max_new_tokens}},
    )
    fronts: list[SlackFrontEnd] = []
    stores: list[FeedbackStore] = []
    for _ in range(replicas):  # each replica: its own store (connection pool), dispatcher and front end
        store = FeedbackStore.open(settings)
        engine = Engine(settings, model, on_reply=store.on_reply)
        # Each user asks mentions/users questions within the burst; the limit is set so none is rate-limited.
        dispatcher = Dispatcher(engine, store, rate_limit_per_minute=max(10, args.mentions // args.users + 1))
        front = SlackFrontEnd(settings, dispatcher, stream_interval_s=args.stream_interval)
        if transport == "http":
            await front.start_http(host="127.0.0.1", port=0)
        else:
            await front.start_socket_mode()
            await fake.wait_connected(1)
        fronts.append(front)
        stores.append(store)
    bodies = [mention(fake, i, args.users) for i in range(args.mentions)]
    retried = bodies[:: max(1, args.mentions // max(1, args.retries))][: args.retries]
    home = {b["event_id"]: i % replicas for i, b in enumerate(bodies)}  # the replica the original goes to
    sent_at: dict[str, float] = {}
    acks: list[float] = []
    failed_acks = 0
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.mentions + args.retries))
    async def deliver(body: dict[str, Any], retry: int | None) -> None:
        nonlocal failed_acks
        if retry is None:
            sent_at[body["event"]["ts"]] = time.monotonic()
        # A retry goes to the next replica (the load balancer's choice), the original to its home.
        target = fronts[(home[body["event_id"]] + (1 if retry else 0)) % replicas]
        url = f"http://127.0.0.1:{target.port}/slack/events"
        if transport == "http":
            raw = json.dumps(body)
            t0 = time.monotonic()
            async with session.post(
                url, data=raw, headers=signed_headers(SECRET, raw, retry_num=retry)
            ) as resp:
                await resp.read()
                acks.append(time.monotonic() - t0)
                failed_acks += resp.status != 200
        else:
            envelope = await fake.send_envelope(
                "events_api", body, retry_attempt=retry or 0, retry_reason="timeout" if retry else ""
            )
            acks.append((await fake.wait_ack(envelope, 30))[1])

    t_start = time.monotonic()
    first = [asyncio.create_task(deliver(b, None)) for b in bodies]
    await asyncio.sleep(0)  # originals first, then Slack's retries of some of them
    retries = [asyncio.create_task(deliver(b, 1)) for b in retried]
    await asyncio.gather(*first, *retries)
    for front in fronts:
        await front.idle()
    t_done = time.monotonic()

    # Check: every mention has exactly one answer (a placeholder turned into a final message with buttons).
    placeholders = [c for c in fake.calls if c.method == "chat.postMessage"]
    per_thread: dict[str, int] = {}
    to_placeholder = []
    for call in placeholders:
        ts = call.args.get("thread_ts", "")
        per_thread[ts] = per_thread.get(ts, 0) + 1
        if per_thread[ts] == 1 and ts in sent_at:
            to_placeholder.append(call.at - sent_at[ts])
    finals = 0
    for b in bodies:
        ev = b["event"]
        answers = fake.bot_messages(ev["channel"], ev["ts"])
        finals += sum(1 for m in answers if any(bl["type"] == "actions" for bl in m.get("blocks", [])))
    lost = sum(1 for b in bodies if per_thread.get(b["event"]["ts"], 0) == 0)
    twice = sum(1 for n in per_thread.values() if n > 1)
    updates = len([c for c in fake.calls if c.method == "chat.update"])
    await session.close()
    for front in fronts:
        await front.close()
    await fake.close()
    for store in stores:
        store.close()
    return {
        "transport": transport,
        "replicas": replicas,
        "events": len(bodies) + len(retried),
        "ack_p50": pct(acks, 0.5) * 1000,
        "ack_p95": pct(acks, 0.95) * 1000,
        "ack_max": max(acks) * 1000,
        "bad_acks": failed_acks,
        "ph_p50": pct(to_placeholder, 0.5) * 1000,
        "ph_p95": pct(to_placeholder, 0.95) * 1000,
        "per_min": finals / (t_done - t_start) * 60,
        "wall": t_done - t_start,
        "finals": finals,
        "lost": lost,
        "twice": twice,
        "updates": updates,
        "mean_ack": statistics.fmean(acks) * 1000,
    }


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "real":
            from core.models import load_model

            model = load_model(load_settings(data_dir=args.data_dir or Path(tmp) / "model"))
            label = f"{model.name}, greedy, {args.max_new_tokens} new tokens"
        else:
            model = ScriptedModel(tokens=args.tokens, token_s=args.token_ms / 1000, batch=args.model_batch)
            label = f"scripted: {args.tokens} tokens × {args.token_ms} ms, {args.model_batch} at a time"
        transports = ["http", "socket"] if args.transport == "both" else [args.transport]
        runs = [(t, 1) for t in transports]
        if args.replicas > 1 and "http" in transports:
            runs.append(("http", args.replicas))  # beside the single-process figure, in the same run
        rows = [await run(t, args, model, Path(tmp), n) for t, n in runs]
        if args.model == "real":
            model.close()
    print(
        f"\nSlack burst: {args.mentions} mentions from {args.users} users "
        f"(+{args.retries} retried deliveries); model: {label}; "
        f"stream updates every {args.stream_interval}s\n"
    )
    head = (
        "transport",
        "replicas",
        "events",
        "ack p50 ms",
        "ack p95 ms",
        "ack max ms",
        "placeholder p50 ms",
        "placeholder p95 ms",
        "answers/min",
        "wall s",
        "answered",
        "lost",
        "answered twice",
        "chat.update",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        cells = (
            r["transport"],
            r["replicas"],
            r["events"],
            f"{r['ack_p50']:.1f}",
            f"{r['ack_p95']:.1f}",
            f"{r['ack_max']:.1f}",
            f"{r['ph_p50']:.0f}",
            f"{r['ph_p95']:.0f}",
            f"{r['per_min']:.0f}",
            f"{r['wall']:.1f}",
            f"{r['finals']}/{args.mentions}",
            r["lost"],
            r["twice"],
            r["updates"],
        )
        print("| " + " | ".join(str(c) for c in cells) + " |")
    if any(r["lost"] or r["twice"] or r["bad_acks"] or r["finals"] != args.mentions for r in rows):
        raise SystemExit("FAILED: a mention was lost, answered twice, or not acknowledged")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--transport", choices=["http", "socket", "both"], default="both")
    p.add_argument("--model", choices=["scripted", "real"], default="scripted")
    p.add_argument("--mentions", type=int, default=100)
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--retries", type=int, default=None, help="re-deliveries (default: every fifth event)")
    p.add_argument("--replicas", type=int, default=2, help="HTTP replicas on one database (1: single only)")
    p.add_argument("--tokens", type=int, default=40)
    p.add_argument("--token-ms", type=float, default=25.0)
    p.add_argument("--model-batch", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--stream-interval", type=float, default=1.0)
    p.add_argument("--data-dir", type=Path, default=None, help="where the real model is converted/cached")
    args = p.parse_args()
    if args.retries is None:
        args.retries = args.mentions // 5
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
