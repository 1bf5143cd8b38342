"""Small helpers shared by the CLI's command modules."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from core.config import ConfigError, Settings, load_settings

__all__ = ["fail", "parse_since", "print_error", "settings_or_exit"]


def print_error(message: str) -> None:
    """`error: <message>` on stderr, on one line (newlines in the message are folded)."""
    typer.secho(f"error: {' '.join(message.split())}", fg=typer.colors.RED, err=True)


def fail(message: str, code: int = 2) -> None:
    """Print one clear error line and exit (inside a command); never a stack trace for user mistakes."""
    print_error(message)
    raise typer.Exit(code)


def settings_or_exit(config: Path | None = None) -> Settings:
    try:
        settings = load_settings(config)
    except ConfigError as e:
        fail(str(e))
    from bot.observability import setup_logging

    setup_logging(settings)
    return settings


def parse_since(value: str | None) -> datetime | None:
    """`--since`: an ISO date or date-time; without a zone it is UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--since {value!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+ZONE]")
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
