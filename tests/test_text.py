"""core.text.clean_text: every kind of broken text that reaches an edge comes out valid and storable."""

import pytest

from core.text import clean_text, is_blank

CASES = [
    ("plain", "hello world", "hello world"),
    ("none", None, ""),
    ("NUL dropped (PostgreSQL rejects it)", "hello\x00world", "helloworld"),
    ("other C0 controls dropped, newline and tab kept", "a\x01b\x07c\td\ne\x1b[31m", "abc\td\ne[31m"),
    ("DEL and C1 controls dropped", "a\x7fb\x85c\x9fd", "abcd"),
    ("CR LF and lone CR become LF", "a\r\nb\rc", "a\nb\nc"),
    ("invalid UTF-8 bytes", b"\xff\xfe", "\ufffd\ufffd"),
    ("valid UTF-8 bytes", "café 👍".encode(), "café 👍"),
    ("argv bytes that were not UTF-8 (surrogateescape)", "\udcff\udcfe", "\ufffd\ufffd"),
    ("argv bytes that were UTF-8 after all", "caf\udcc3\udca9", "café"),
    ("lone high surrogate (broken JSON escape)", "a\ud800b", "a\ufffdb"),
    ("surrogate pair as two code points", "ok \ud83d\udc4d", "ok 👍"),
    ("emoji, CJK and RTL text untouched", "日本語 مرحبا 👍🏽", "日本語 مرحبا 👍🏽"),
    ("zero-width and bidi marks kept (not controls)", "a\u200bb\u200fc", "a\u200bb\u200fc"),
]


@pytest.mark.parametrize(("why", "given", "expected"), CASES, ids=[c[0] for c in CASES])
def test_clean_text(why, given, expected):
    out = clean_text(given)
    assert out == expected
    out.encode("utf-8")  # always encodable: no lone surrogates left
    assert "\x00" not in out


@pytest.mark.parametrize(("text", "blank"), [("", True), (" \n\t", True), ("\u200b\ufeff\u200d", True),
                                              ("\x00", True), ("a", False), ("\ufffd", False)])
def test_is_blank(text, blank):
    assert is_blank(text) is blank
