"""A local JSONL spool for writes the database could not take, replayed in order when it is back.

Every line is one write: `{"op": ..., "payload": {...}, "spooled_at": ...}`. The file is locked (flock) for
appends and replays, so a bot and a CLI sharing one data directory never interleave or replay twice.
A line the database refuses for a reason other than being unreachable moves to `rejected.jsonl` with the
error, and the log says so: nothing is dropped silently.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["Spool", "SpoolEntryRejected"]

logger = logging.getLogger(__name__)


class SpoolEntryRejected(Exception):
    """Raised by a replay function for an entry that can never be written (it goes to rejected.jsonl)."""


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.pending_path = self.directory / "pending.jsonl"
        self.rejected_path = self.directory / "rejected.jsonl"
        self._lock_path = self.directory / ".lock"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def has_pending(self) -> bool:
        try:
            return self.pending_path.stat().st_size > 0
        except FileNotFoundError:
            return False

    def pending(self) -> list[dict[str, Any]]:
        """The spooled entries, oldest first (for inspection and tests)."""
        if not self.pending_path.exists():
            return []
        with self._locked():
            return [json.loads(line) for line in self.pending_path.read_text("utf-8").splitlines() if line.strip()]

    def append(self, *, op: str, payload: dict[str, Any]) -> None:
        line = json.dumps({"op": op, "payload": payload, "spooled_at": datetime.now(UTC).isoformat()})
        with self._locked(), open(self.pending_path, "a", encoding="utf-8") as out:
            out.write(line + "\n")
            # The spool is the only copy of this write until the database is back.
            out.flush()
            os.fsync(out.fileno())

    def replay(self, apply: Callable[[str, dict[str, Any]], None]) -> int:
        """Apply every entry in order; stop (keeping the rest) at the first exception that is not a rejection.

        Returns the number of entries written. Entries must be idempotent: a crash between applying an entry
        and rewriting the file replays it again.
        """
        with self._locked():
            if not self.pending_path.exists():
                return 0
            lines = [line for line in self.pending_path.read_text("utf-8").splitlines() if line.strip()]
            done = 0
            for index, line in enumerate(lines):
                try:
                    entry = json.loads(line)
                    apply(entry["op"], entry["payload"])
                    done += 1
                except (SpoolEntryRejected, ValueError, KeyError, TypeError) as e:
                    self._reject(line, e)
                except BaseException:
                    # Still unreachable (or interrupted): keep this entry and everything after it, in order.
                    self._rewrite(lines[index:])
                    raise
            self.pending_path.unlink()
            return done

    def _reject(self, line: str, error: Exception) -> None:
        logger.error("spooled feedback write rejected (kept in %s): %s", self.rejected_path, error)
        record = {"line": line, "error": str(error), "rejected_at": datetime.now(UTC).isoformat()}
        with open(self.rejected_path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
            out.flush()
            os.fsync(out.fileno())

    def _rewrite(self, lines: list[str]) -> None:
        tmp = self.pending_path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines), "utf-8")
        os.replace(tmp, self.pending_path)
