"""`kaizen feedback export|stats` and `kaizen vote`: the feedback loop driven from a terminal."""

from __future__ import annotations

import getpass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bot.cli_common import fail, parse_since, settings_or_exit
from core.text import clean_text
from feedback import FeedbackError, FeedbackStats, FeedbackStore, StatsRow

__all__ = ["correct", "feedback_app", "vote"]

feedback_app = typer.Typer(
    help="Export training data from the feedback store and show its stats.", no_args_is_help=True
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="kaizen.toml to read (default: ./kaizen.toml)")]
SinceOpt = Annotated[
    str | None, typer.Option(help="only feedback (votes, corrections) given from this date on (YYYY-MM-DD, UTC)")
]


class Format(StrEnum):
    sft = "sft"
    pairs = "pairs"
    kto = "kto"


class Direction(StrEnum):
    up = "up"
    down = "down"
    retract = "retract"




def _open(config: Path | None) -> FeedbackStore:
    settings = settings_or_exit(config)
    try:
        return FeedbackStore.open(settings)
    except (FeedbackError, ValueError) as e:
        fail(str(e))


@feedback_app.command()
def export(
    format: Annotated[
        Format, typer.Option("--format", "-f", help="sft (messages), pairs (prompt/chosen/rejected), kto")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write", dir_okay=False)],
    since: SinceOpt = None,
    audience: Annotated[
        str,
        typer.Option(
            help="who may talk to the trained model: 'public' leaves out answers that drew on restricted "
            "sources; a channel also includes those that channel may read"
        ),
    ] = "public",
    scrub: Annotated[
        bool, typer.Option("--scrub/--no-scrub", help="replace e-mails, phone numbers and user mentions")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Write the trl conversational dataset of one kind to a JSONL file."""
    when = parse_since(since)
    with _open(config) as store:
        try:
            count = store.export(kind=format.value, out=out, since=when, audience=audience, scrub=scrub)
        except FeedbackError as e:
            fail(str(e))
    typer.echo(f"wrote {count} {format.value} example(s) for audience {audience!r} to {out}")


def _rate(row: StatsRow) -> str:
    return "-" if row.like_rate is None else f"{row.like_rate:.0%}"


def _table(title: str, rows: list[StatsRow]) -> Table:
    table = Table(title=title)
    for name in (title.split()[-1], "interactions", "voted", "👍", "👎", "like rate"):
        table.add_column(name, justify="left" if name == title.split()[-1] else "right")
    for row in rows:
        table.add_row(row.key, str(row.interactions), str(row.voted), str(row.up), str(row.down), _rate(row))
    return table


def print_stats(stats: FeedbackStats, console: Console) -> None:
    t = stats.total
    console.print(f"interactions: {t.interactions}  votes: {t.votes} (👍 {t.up} / 👎 {t.down})  like rate: {_rate(t)}")
    console.print(_table("by channel", stats.by_channel))
    console.print(_table("by model", stats.by_model))
    console.print(
        f"available for audience {stats.audience!r}: {stats.pairs} pair(s), {stats.sft} sft, {stats.kto} kto example(s)"
    )


@feedback_app.command()
def stats(
    since: SinceOpt = None,
    audience: Annotated[
        str, typer.Option(help="count the examples an export for this audience would write")
    ] = "public",
    config: ConfigOpt = None,
) -> None:
    """Interactions, votes and like rate per channel and per model/adapter, and the pairs available."""
    when = parse_since(since)
    with _open(config) as store:
        try:
            result = store.stats(since=when, audience=audience)
        except FeedbackError as e:
            fail(str(e))
    print_stats(result, Console(width=120))


@feedback_app.command()
def triage(
    since: SinceOpt = None,
    examples: Annotated[int, typer.Option(min=0, help="examples shown per cause")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="every disliked answer with its cause, as JSON")] = False,
    config: ConfigOpt = None,
) -> None:
    """Why each 👎: disliked answers sorted by cause (retrieval miss, stale source, unsupported claim, refused or
    empty, style/length, other), with counts, examples and the action each calls for."""
    import dataclasses
    import json

    from core.rag.sources import SourceRegistry
    from feedback.triage import documents_from_registry, format_report
    from feedback.triage import triage as run_triage

    settings = settings_or_exit(config)
    when = parse_since(since)
    try:
        documents = documents_from_registry(SourceRegistry.for_settings(settings).sources())
    except (OSError, ValueError) as e:
        fail(f"cannot read the source registry: {e}")
    with _open(config) as store:
        try:
            report = run_triage(store.engine, since=when, documents=documents)
        except (FeedbackError, ValueError) as e:
            fail(str(e))
    if as_json:
        typer.echo(json.dumps({"counts": report.counts(), "items": [dataclasses.asdict(i) for i in report.items]},
                              default=str, ensure_ascii=False))
        return
    typer.echo(format_report(report, examples=examples))


def vote(
    id: Annotated[str, typer.Argument(help="the interaction id (shown with each answer)")],
    direction: Annotated[Direction, typer.Argument(help="up, down, or retract to remove your vote")],
    user: Annotated[str | None, typer.Option("--user", "-u", help="who votes (default: your login name)")] = None,
    reason: Annotated[str | None, typer.Option("--reason", "-r", help="why (kept with the vote)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Vote 👍/👎 on an answer, as a reaction would."""
    who = user or getpass.getuser()
    with _open(config) as store:
        try:
            if direction is Direction.retract:
                if reason is not None:
                    fail("--reason goes with an up or down vote, not with retract")
                status = store.retract_vote(interaction_id=id, user=who)
            else:
                value = 1 if direction is Direction.up else -1
                status = store.vote(interaction_id=id, user=who, value=value,
                                    reason=None if reason is None else clean_text(reason))
        except (FeedbackError, ValueError) as e:
            fail(str(e))
    where = "kept in the local spool (database unreachable)" if status == "spooled" else "recorded"
    typer.echo(f"{direction.value} vote by {who} on {id} {where}")


def correct(
    id: Annotated[str, typer.Argument(help="the interaction id (shown with each answer)")],
    text: Annotated[str, typer.Argument(help="what the answer should have said")],
    user: Annotated[str | None, typer.Option("--user", "-u", help="who corrects (default: your login name)")] = None,
    config: ConfigOpt = None,
) -> None:
    """Correct an answer: training takes your text as the answer to learn and the model's as the one to avoid."""
    who = user or getpass.getuser()
    with _open(config) as store:
        try:
            status = store.record_correction(interaction_id=id, user=who, text=clean_text(text), platform="cli")
        except (FeedbackError, ValueError) as e:
            fail(str(e))
    where = "kept in the local spool (database unreachable)" if status == "spooled" else "recorded"
    typer.echo(f"correction by {who} on {id} {where}")
