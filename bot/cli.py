"""`kaizen`: the one command-line door to everything. Heavy packages are imported inside the commands."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from bot.cli_common import fail, print_error, settings_or_exit

__all__ = ["app", "main"]

app = typer.Typer(
    help="Kaizen — a self-hosted team assistant that answers from your docs and learns from 👍/👎.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="kaizen.toml to read (default: ./kaizen.toml)")]
ChannelOpt = Annotated[str, typer.Option(
    "--channel", "-c", help="ask as this channel (profile, access): a profile name, or an identity such as "
    "slack:<team id>:<channel id> to read what that channel may")]
PresetOpt = Annotated[str | None, typer.Option("--preset", "-p", help="decoding preset (precise, balanced, …)")]
ModeOpt = Annotated[str | None, typer.Option("--mode", "-m", help="chat, rag, agent or auto")]


def _engine(settings, *, record: bool = True):
    """Engine with the model, the ingested documents (if any) and the feedback store (answers are recorded)."""
    from bot.runtime import build_engine, open_retriever_if_any, open_store
    from core.models import ModelNotFoundError

    store = open_store(settings) if record else None
    try:
        return build_engine(settings, store=store, retriever=open_retriever_if_any(settings)), store
    except ModelNotFoundError as e:
        fail(str(e))


def _check_channel(settings, channel: str) -> None:
    # A channel named on the command line must have a profile when profiles are configured at all (an identity,
    # slack:T0123:C0456, is a channel's own: its profile is looked up by id, else the default applies).
    from core.types import is_qualified

    if channel and settings.channels and not is_qualified(channel):
        from core.config import ConfigError

        try:
            settings.channel_profile(channel)
        except ConfigError as e:
            fail(str(e))


@app.command()
def ask(
    text: Annotated[str, typer.Argument(help="the question")],
    channel: ChannelOpt = "",
    preset: PresetOpt = None,
    mode: ModeOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the whole reply as one JSON object")] = False,
    config: ConfigOpt = None,
) -> None:
    """Ask one question and print the answer."""
    from core.decoding import DecodingError
    from core.text import clean_text
    from core.types import Turn

    # Arguments that were not UTF-8 arrive as lone surrogates: made valid here, before anything else sees them.
    text, channel = clean_text(text), clean_text(channel)
    settings = settings_or_exit(config)
    _check_channel(settings, channel)
    if preset is not None and preset not in settings.presets:
        fail(f"unknown preset {preset!r}; valid presets: {', '.join(sorted(settings.presets))}")
    engine, store = _engine(settings)
    turn = Turn(text=text, platform="console", channel=channel, channel_name=channel, thread="",
                user=clean_text(os.environ.get("USER", "console")), preset=preset, mode=mode)

    async def run():
        try:
            return await engine.answer(turn)
        finally:
            await engine.aclose()

    try:
        reply = asyncio.run(run())
    except (DecodingError, ValueError) as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(reply.to_dict(), ensure_ascii=False, default=str))
        return
    typer.echo(reply.answer)
    for i, s in enumerate(reply.sources, 1):
        typer.echo(f"[{i}] {s.title or s.uri} ({s.uri})")
    if reply.called_model:
        typer.secho(f"(answer {reply.id} — vote with `kaizen vote {reply.id} up|down`)", dim=True, err=True)


@app.command()
def chat(
    channel: ChannelOpt = "",
    preset: PresetOpt = None,
    mode: ModeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Interactive chat in the terminal (/help inside for commands)."""
    from core.text import clean_text

    channel = clean_text(channel)
    settings = settings_or_exit(config)
    _check_channel(settings, channel)
    if preset is not None and preset not in settings.presets:
        fail(f"unknown preset {preset!r}; valid presets: {', '.join(sorted(settings.presets))}")
    from bot.console import ConsoleChat

    engine, store = _engine(settings)

    async def run():
        try:
            await ConsoleChat(engine, channel=channel, preset=preset, mode=mode, store=store).run()
        finally:
            await engine.aclose()

    asyncio.run(run())


@app.command()
def serve(
    config: ConfigOpt = None,
    console: Annotated[bool, typer.Option(help="with no Slack/Discord tokens, open the console chat")] = True,
) -> None:
    """Run the configured front ends (Slack, Discord) with /healthz and /metrics; with no tokens, the console chat."""
    from bot.serve import configured_platforms
    from bot.serve import serve as run_serve
    from core.config import ConfigError
    from core.models import ModelNotFoundError

    settings = settings_or_exit(config)
    if not configured_platforms(settings) and console:
        print("No Slack or Discord tokens configured: opening the console chat.", file=sys.stderr)
    try:
        asyncio.run(run_serve(settings, console=console))
    except (ModelNotFoundError, ConfigError) as e:  # e.g. a token the platform rejects
        fail(str(e))
    except KeyboardInterrupt:
        pass


def _mount() -> None:
    # Command modules of the other packages; each imports its heavy parts inside its commands.
    from bot.cli_feedback import correct, feedback_app, vote
    from bot.cli_rag import eval_app, ingest, sources_app
    from bot.cli_train import model_app, train_app

    app.command()(ingest)
    app.add_typer(sources_app, name="sources")
    app.command()(vote)
    app.command()(correct)
    app.add_typer(feedback_app, name="feedback")
    app.add_typer(eval_app, name="eval")
    app.add_typer(train_app, name="train")
    app.add_typer(model_app, name="model")


_mount()


def _operator_error(error: Exception) -> str | None:
    """The one line to show for a mistake in what the operator gave (config, paths, data files), else None:
    a bug keeps its traceback. Commands catch their own errors; this is the net under all of them."""
    from core.config import ConfigError
    from core.rag.sources import RagError
    from feedback import FeedbackError
    from training.common import RecipeError
    from training.data import DatasetError

    if isinstance(error, ConfigError | RagError | FeedbackError | RecipeError | DatasetError):
        return str(error)
    if isinstance(error, OSError) and error.filename is not None:
        # An output path that cannot be written, an input that cannot be read.
        return (f"cannot use {error.filename}: {error.strerror or error}; "
                "give a path in a folder that exists and that you may read and write")
    return None


def _report(error: Exception) -> int:
    """Print what went wrong as one `error:` line and return the exit code; re-raise a bug (its traceback is needed)."""
    if type(error).__name__ == "NoArgsIsHelpError":  # `kaizen` alone: the help is printed (typer tests it so too)
        return error.exit_code
    if callable(getattr(error, "format_message", None)) and isinstance(getattr(error, "exit_code", None), int):
        # Click's usage errors (an unknown option, a bad value, a missing argument), on one line.
        ctx = getattr(error, "ctx", None)
        print_error(error.format_message() + (f" (see `{ctx.command_path} --help`)" if ctx is not None else ""))
        return error.exit_code
    message = _operator_error(error)
    if message is None:
        raise error
    print_error(message)
    return 2


def main(argv: list[str] | None = None) -> None:
    """The `kaizen` console script: operator errors end as one `error:` line and exit code 2, never a traceback.
    `argv` defaults to the process arguments (tests pass their own)."""
    # Typed or piped input that is not UTF-8 must not end a chat: undecodable bytes arrive as surrogates, which
    # core.text.clean_text turns into U+FFFD where the text enters.
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="surrogateescape")
    try:
        code = app(args=argv, prog_name="kaizen", standalone_mode=False)
    except typer.Abort:  # Ctrl-D at a prompt
        typer.echo("Aborted.", err=True)
        code = 1
    except Exception as e:
        code = _report(e)
    # Without standalone mode typer returns the exit code of `raise typer.Exit(n)` (None when a command returns).
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
