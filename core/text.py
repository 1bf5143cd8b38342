"""Text as it enters Kaizen: made valid once at the edge, so the engine, the store and the exports only ever see
clean Unicode.

Front ends and the CLI call `clean_text` on every user-supplied string (message text, reasons, corrections,
command-line questions); `is_blank` says whether what is left shows anything at all.
"""

from __future__ import annotations

import unicodedata

__all__ = ["clean_text", "is_blank"]

_KEEP_CONTROLS = {"\n", "\t"}


def clean_text(text: str | bytes | None) -> str:
    """Valid, storable Unicode from whatever arrived.

    - bytes are decoded as UTF-8 with invalid sequences replaced by U+FFFD;
    - lone surrogates (from `surrogateescape` command-line arguments or broken JSON escapes) become the bytes they
      stood for when those decode, else U+FFFD;
    - NUL and the other C0/C1 control characters except newline and tab are dropped (PostgreSQL rejects NUL in
      text; the rest only confuse tokenizers and terminals); CR LF and lone CR become LF.
    """
    if text is None:
        return ""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", "replace")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        try:  # argv bytes that were not UTF-8 arrive as U+DC80..U+DCFF
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:
            text = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(c for c in text if c in _KEEP_CONTROLS or unicodedata.category(c) != "Cc")


def is_blank(text: str) -> bool:
    """True when nothing would be visible: only whitespace and format characters (zero-width space U+200B,
    joiners U+200C/U+200D, BOM U+FEFF, bidi marks — Unicode categories Z*, Cc and Cf)."""
    return all(c.isspace() or unicodedata.category(c) in ("Cf", "Cc", "Zs", "Zl", "Zp") for c in text)
