"""`kaizen ingest`, `kaizen sources list|remove`, `kaizen eval retrieval|answers`: the documents RAG answers from,
and how well answers come out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bot.cli_common import fail, settings_or_exit

__all__ = ["eval_app", "ingest", "sources_app"]

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="kaizen.toml to read (default: ./kaizen.toml)")
]

sources_app = typer.Typer(help="List or remove ingested document sources.", no_args_is_help=True)
eval_app = typer.Typer(help="Measure Kaizen's parts on your own data.", no_args_is_help=True)


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="files and folders (.md .txt .rst .html .pdf .docx)")],
    source: Annotated[str, typer.Option("--source", "-s", help="name of the source; re-running syncs it")],
    channels: Annotated[
        str,
        typer.Option(
            "--channels",
            help="comma-separated channel identities allowed to read it: slack:<team id>:<channel id>, "
            "discord:<server id>:<channel id>",
        ),
    ] = "",
    public: Annotated[bool, typer.Option("--public", help="every channel may read it")] = False,
    config: ConfigOpt = None,
) -> None:
    """Ingest documents as a named source; only new or changed files are embedded again."""
    from core.rag import RagError
    from core.rag import ingest as run_ingest

    settings = settings_or_exit(config)
    allowed = [c for c in channels.split(",") if c.strip()]
    try:
        report = run_ingest(
            settings, paths, source=source, channels=allowed, public=public, show_progress=True
        )
    except RagError as e:
        fail(str(e))
    for file, reason in report.skipped:
        typer.secho(f"skipped {file}: {reason}", fg=typer.colors.YELLOW, err=True)
    typer.echo(report.summary())
    _warn_bare(settings, source)


def _warn_bare(settings, name: str) -> None:
    from core.rag import SourceRegistry

    record = SourceRegistry.for_settings(settings).get(name)
    if record is not None and record.bare_audiences:
        typer.secho(
            f"warning: {name}: {', '.join(record.bare_audiences)} is a bare name, so no Slack or Discord channel can "
            f"read it (only `--channel NAME` on this console); qualify it: kaizen sources qualify {name} "
            "--channels slack:<team id>:<channel id>",
            fg=typer.colors.YELLOW,
            err=True,
        )


@sources_app.command("list")
def list_sources(config: ConfigOpt = None) -> None:
    """Each source: who may read it (each audience resolved to platform, workspace/server and channel), files,
    chunks, last sync. Bare-name audiences are flagged: no Slack or Discord channel can read them."""
    from core.rag import SourceRegistry
    from core.rag.sources import describe_audience

    settings = settings_or_exit(config)
    records = SourceRegistry.for_settings(settings).sources()
    if not records:
        typer.echo("no sources yet; add one with `kaizen ingest PATH --source NAME --public`")
        return
    for record in sorted(records.values(), key=lambda r: r.name):
        access = "public" if record.public else "channels: " + ",".join(record.channels)
        typer.echo(
            f"{record.name}\t{access}\t{len(record.files)} files\t{record.chunks} chunks\t"
            f"updated {record.updated_at[:19].replace('T', ' ')} UTC\t{' '.join(record.paths)}"
        )
        for audience in record.channels:
            typer.echo(f"  {describe_audience(audience)}")
        if record.bare_audiences:
            typer.secho(
                f"  warning: bare name(s) {', '.join(record.bare_audiences)}: qualify with `kaizen sources qualify "
                f"{record.name} --channels platform:workspace:channel`",
                fg=typer.colors.YELLOW,
            )


@sources_app.command("qualify")
def qualify_source(
    name: Annotated[str, typer.Argument(help="source whose audiences to replace")],
    channels: Annotated[
        str,
        typer.Option(
            "--channels",
            help="the channel identities that replace its audiences: slack:<team id>:<channel id>, "
            "discord:<server id>:<channel id> (comma-separated)",
        ),
    ],
    config: ConfigOpt = None,
) -> None:
    """Replace a source's audiences (e.g. bare names) by channel identities; its recorded paths are synced again
    so every chunk carries the new access."""
    from core.rag import RagError, SourceRegistry
    from core.rag import ingest as run_ingest
    from core.rag.sources import describe_audience, normalize_channel

    settings = settings_or_exit(config)
    record = SourceRegistry.for_settings(settings).get(name)
    if record is None:
        fail(f"unknown source {name!r}; see `kaizen sources list`")
    try:
        allowed = [normalize_channel(c) for c in channels.split(",") if c.strip()]
        bare = [c for c in allowed if ":" not in c]
        if bare or not allowed:
            raise RagError(
                f"give channel identities, not names ({', '.join(bare) or 'none given'}): "
                "slack:<team id>:<channel id> or discord:<server id>:<channel id>"
            )
        report = run_ingest(settings, [Path(p) for p in record.paths], source=name, channels=allowed)
    except RagError as e:
        fail(str(e))
    typer.echo(report.summary())
    for audience in SourceRegistry.for_settings(settings).get(name).channels:
        typer.echo(f"  {describe_audience(audience)}")


@sources_app.command("remove")
def remove_source(
    name: Annotated[str, typer.Argument(help="source to delete with all its chunks")],
    config: ConfigOpt = None,
) -> None:
    """Delete a source and every chunk it added."""
    from core.rag import RagError
    from core.rag import remove_source as run_remove

    settings = settings_or_exit(config)
    try:
        record = run_remove(settings, name)
    except RagError as e:
        fail(str(e))
    typer.echo(f"removed {record.name} ({len(record.files)} files, {record.chunks} chunks)")


@eval_app.command("retrieval")
def eval_retrieval(
    file: Annotated[
        Path, typer.Argument(help='JSONL: {"question", "source_file"} or {"question", "answer"}')
    ],
    channel: Annotated[
        str | None, typer.Option("--channel", "-c", help="ask as this channel (default: search every source)")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Recall@1/5/10 and MRR of document retrieval, then the questions that missed."""
    from core.rag import RagError, Retriever, evaluate, load_eval_set

    settings = settings_or_exit(config)
    try:
        items = load_eval_set(file)
        result = evaluate(Retriever(settings), items, channel=channel)
    except RagError as e:
        fail(str(e))
    for line in result.lines():
        typer.echo(line)
    if result.misses:
        typer.echo(f"missed {len(result.misses)} of {result.questions}:")
        for item in result.misses:
            typer.echo(f"  line {item.line}: {item.question}")


@eval_app.command("answers")
def eval_answers(
    file: Annotated[
        Path, typer.Argument(help='JSONL: {"question", "expect": [accepted answers], "mode"?, "channel"?}')
    ],
    preset: Annotated[
        list[str] | None, typer.Option("--preset", "-p", help="preset to measure (repeatable; default: the profile's)")
    ] = None,
    mode: Annotated[str | None, typer.Option("--mode", "-m", help="mode for questions that name none")] = None,
    samples: Annotated[int, typer.Option(min=1, max=50, help="runs of each sampling preset")] = 3,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="questions in flight (batched)")] = 16,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=4096, help="answer length cap")] = 96,
    misses: Annotated[int, typer.Option(min=0, help="missed questions to list per preset")] = 10,
    config: ConfigOpt = None,
) -> None:
    """Answer accuracy per mode and preset (mean ± spread over sample runs), then the misses."""
    import asyncio

    from bot.runtime import build_engine, open_retriever_if_any
    from core.answer_eval import AnswerEvalError, evaluate_answers, load_answer_set, report_lines
    from core.decoding import DecodingError
    from core.models import ModelNotFoundError
    from core.rag import RagError

    settings = settings_or_exit(config)
    presets = preset or [settings.default.preset]
    unknown = [p for p in presets if p not in settings.presets]
    if unknown:
        fail(f"unknown preset {unknown[0]!r}; valid presets: {', '.join(sorted(settings.presets))}")
    if mode is not None and mode not in ("chat", "rag", "agent", "auto"):
        fail(f"unknown mode {mode!r}; valid modes: chat, rag, agent, auto")
    try:
        items = load_answer_set(file)
    except AnswerEvalError as e:
        fail(str(e))
    # Concurrent questions are batched by the model: let the batch hold them all.
    settings.model.max_batch_size = max(settings.model.max_batch_size, min(concurrency, 64))
    try:
        engine = build_engine(settings, retriever=open_retriever_if_any(settings))  # answers are not recorded
    except (ModelNotFoundError, RagError) as e:
        fail(str(e))

    async def run():
        try:
            return await evaluate_answers(engine, items, presets=presets, mode=mode, samples=samples,
                                          concurrency=concurrency, overrides={"max_new_tokens": max_new_tokens})
        finally:
            await engine.aclose()

    try:
        results = asyncio.run(run())
    except (DecodingError, RagError, ValueError) as e:
        fail(str(e))
    for line in report_lines(results, misses=misses):
        typer.echo(line)
