"""Text as it enters Kaizen: made valid once at the edge, so the engine, the store and the exports only ever see
clean Unicode.

Front ends and the CLI call `clean_text` on every user-supplied string (message text, reasons, corrections,
command-line questions); `is_blank` says whether what is left shows anything at all.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["clean_text", "is_blank", "read_jsonl"]

# Unicode category Cc is exactly U+0000-U+001F and U+007F-U+009F; newline and tab are kept.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# What `surrogateescape` makes of bytes that were not UTF-8 (command-line arguments, stdin): U+DC80..U+DCFF.
_ESCAPED_BYTES = re.compile("[\udc80-\udcff]+")
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str | bytes | None) -> str:
    """Valid, storable Unicode from whatever arrived (None -> "").

    - bytes are decoded as UTF-8 with invalid sequences replaced by U+FFFD;
    - surrogate pairs written as two code points (UTF-16 bridges, JSON escapes) become the character they encode;
      runs of U+DC80..U+DCFF (`surrogateescape` command-line arguments and stdin) become the bytes they stood for,
      decoded as UTF-8 where they are UTF-8, else U+FFFD; any other lone surrogate becomes U+FFFD;
    - NUL and the other C0/C1 control characters except newline and tab are dropped (PostgreSQL rejects NUL in
      text; the rest only confuse tokenizers and terminals); CR LF and lone CR become LF.
    """
    if text is None:
        return ""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", "replace")
    if _SURROGATE.search(text):
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        text = _ESCAPED_BYTES.sub(lambda m: m.group().encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                                  text)
        text = _SURROGATE.sub("\ufffd", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROLS.sub("", text)


def is_blank(text: str) -> bool:
    """True when nothing would be visible: only whitespace and format characters (zero-width space U+200B,
    joiners U+200C/U+200D, BOM U+FEFF, bidi marks — Unicode categories Z*, Cc and Cf)."""
    return all(c.isspace() or unicodedata.category(c) in ("Cf", "Cc", "Zs", "Zl", "Zp") for c in text)


def read_jsonl(path: Path, *, error: type[Exception]) -> Iterator[tuple[int, Any]]:
    """(line number from 1, parsed value) for each non-blank line of a JSONL file.
    Raises `error` when the file is missing ("… not found: PATH") or a line is not JSON ("PATH:N: not JSON (…)")."""
    if not path.is_file():
        raise error(f"evaluation file not found: {path}")
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield number, json.loads(raw)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{number}: not JSON ({e.msg})") from None
