"""`python -m kaizen_testing.serve serve --no-console`: the real `kaizen` CLI in its own process, with the scripted
model (configured by $KAIZEN_TESTING_MODEL) instead of loading weights. Tests start replicas this way."""

from __future__ import annotations

import sys

import core.models
from kaizen_testing.scripted import from_env

__all__ = ["main"]


def main() -> None:
    core.models.load_model = lambda settings, **kw: from_env()  # type: ignore[assignment]
    from bot.cli import main as kaizen

    kaizen(sys.argv[1:])


if __name__ == "__main__":
    main()
