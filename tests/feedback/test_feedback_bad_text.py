"""Broken text typed into the CLI (NUL, bytes that are not UTF-8) is answered and recorded, on SQLite and on
PostgreSQL (which rejects NUL in text): `kaizen ask $'\\xff\\xfe'`, `printf 'hello\\x00world\\n/quit\\n' | kaizen chat`.
The real console script in a subprocess, the real default model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from feedback.models import Interaction

KAIZEN = str(Path(sys.executable).with_name("kaizen"))


def _kaizen(args: list[str], env: dict[str, str], cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
    # Arguments are bytes, as a shell passes them: $'\xff\xfe' is not UTF-8.
    return subprocess.run([KAIZEN.encode(), *args], capture_output=True, env={**base, **env}, cwd=cwd, input=stdin,
                          timeout=300)


def test_bad_text_is_answered_and_recorded(pg_cluster, model_data_dir, default_model, tmp_path):
    # PostgreSQL is the backend that rejected NUL (SQLite stores anything); short answers keep the test fast.
    db_url = pg_cluster.create_database()
    (tmp_path / "kaizen.toml").write_text('[presets.short]\nstrategy = "greedy"\nmax_new_tokens = 8\n'
                                          '[default]\npreset = "short"\n', encoding="utf-8")
    env = {"KAIZEN_DATA_DIR": str(model_data_dir), "KAIZEN_DATABASE_URL": db_url}
    asked = _kaizen([b"ask", b"\xff\xfe"], env, tmp_path)
    assert asked.returncode == 0, asked.stderr.decode()
    assert b"Traceback" not in asked.stderr and asked.stdout.strip()

    chat = _kaizen([b"chat"], env, tmp_path, stdin=b"hello\x00world\ncaf\xe9 \xff?\n/quit\n")
    assert chat.returncode == 0, chat.stderr.decode()
    assert b"Traceback" not in chat.stderr and b"went wrong" not in chat.stdout

    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        questions = [q for (q,) in conn.execute(sa.select(Interaction.__table__.c.question))]
    engine.dispose()
    assert sorted(questions) == sorted(["\ufffd\ufffd", "helloworld", "caf\ufffd \ufffd?"])
