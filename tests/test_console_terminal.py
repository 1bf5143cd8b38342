"""`kaizen chat` in a real terminal (a pty), with the real default model: keys typed while an answer streams do not
land inside it, and Ctrl-C stops the answer, not the program."""

import fcntl
import os
import pty
import re
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

KAIZEN = str(Path(sys.executable).with_name("kaizen"))
pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a POSIX terminal")


class Terminal:
    def __init__(self, args, env, cwd):
        self.master, slave = pty.openpty()
        # Its own session with the pty as controlling terminal, so Ctrl-C reaches it as SIGINT.
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                     start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.out = ""

    def read_until(self, pattern: str, timeout: float = 240, start: int = 0) -> int:
        """Wait until `pattern` (a regex) appears in the output after `start`; returns where it ends."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.out[start:])
            if m:
                return start + m.end()
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {pattern!r}; output so far:\n{self.out[-2000:]}"
            if select.select([self.master], [], [], min(left, 1.0))[0]:
                try:
                    self.out += os.read(self.master, 4096).decode("utf-8", "replace")
                except OSError:  # the program closed the terminal
                    raise AssertionError(f"program ended; output:\n{self.out[-2000:]}") from None

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        try:
            return self.proc.wait(60)
        finally:
            os.close(self.master)


@pytest.fixture
def terminal(model_data_dir, default_model, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
    env.update(KAIZEN_DATA_DIR=str(model_data_dir), TERM="xterm", COLUMNS="200")
    term = Terminal([KAIZEN, "chat", "--preset", "precise", "--mode", "chat"], env, tmp_path)
    yield term
    if term.proc.poll() is None:
        term.proc.kill()
        term.close()


def test_typing_during_an_answer_waits_and_ctrl_c_stops_only_the_answer(terminal):
    t = terminal
    at = t.read_until(r"you> ")
    # 1. Keys typed while the answer streams are held back; Ctrl-C stops the answer, and the chat goes on with
    #    the half-typed line in the new prompt, ready to edit or send.
    t.send("Write a long story about a dragon who learns to fly, with many details.\r")
    at = t.read_until(r"kaizen> \S", start=at)
    t.send("hello there")
    time.sleep(0.5)
    t.send("\x03")
    stopped = t.read_until(r"\[stopped\]\s*\r?\n", start=at)
    assert "hello there" not in t.out[at:stopped], t.out[at:stopped]
    at = t.read_until(r"you> hello there", start=stopped)
    t.send("\x15")  # Ctrl-U: clear that line
    # 2. A whole line typed during an answer is answered after it, shown as if typed at the prompt.
    t.send("Write a long story about a knight and a castle, with many details.\r")
    at = t.read_until(r"kaizen> \S", start=at)
    t.send("/help\r")
    time.sleep(0.5)
    t.send("\x03")
    stopped = t.read_until(r"\[stopped\]\s*\r?\n", start=at)
    assert "/help" not in t.out[at:stopped] and "Commands:" not in t.out[at:stopped]
    t.read_until(r"you> /help\s+Commands:", start=stopped)
    t.send("/quit\r")
    assert t.close() == 0, t.out[-2000:]
