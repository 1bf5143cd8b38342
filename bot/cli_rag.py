"""`kaizen ingest`, `kaizen sources list|remove`, `kaizen eval retrieval`: the documents RAG answers from."""

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
        str, typer.Option("--channels", help="comma-separated channels allowed to read it, e.g. eng,hr")
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


@sources_app.command("list")
def list_sources(config: ConfigOpt = None) -> None:
    """Each source: who may read it, files, chunks, last sync."""
    from core.rag import SourceRegistry

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
