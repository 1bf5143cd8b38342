"""Documents as people really have them: other encodings, a very large text file, an ingest cut short.
Real embedding model, real LanceDB store; inputs kept small (the streaming path is tested with a low threshold,
its memory and time on a 50 MB file are measured by bench/ingest_large.py)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from core.rag import SourceRegistry, ingest, open_store
from core.rag.readers import UnreadableFile, decode, stream_text


def _texts(settings) -> dict[str, list[str]]:
    """Chunk texts per file path, straight from the store."""
    rows = open_store(settings)._table.search().limit(10_000).select(["text", "metadata"]).to_list()
    out: dict[str, list[str]] = {}
    for row in rows:
        meta = row["metadata"]
        out.setdefault(Path(meta["file"]).name, []).append(row["text"])
    return out


DECODE_CASES = [
    ("utf-16-le with BOM (Notepad 'Unicode')", b"\xff\xfe" + "Caf\xe9 \u2192 ok".encode("utf-16-le"), False,
     "Caf\xe9 \u2192 ok"),
    ("utf-16-be with BOM", b"\xfe\xff" + "Caf\xe9".encode("utf-16-be"), False, "Caf\xe9"),
    ("utf-32-le with BOM", b"\xff\xfe\x00\x00" + "\u65e5\u672c".encode("utf-32-le"), False, "\u65e5\u672c"),
    ("utf-16-le without BOM, detected", "Visitors park in lot P7 next to the gate.".encode("utf-16-le"), False,
     "lot P7"),
    ("utf-8 with BOM", b"\xef\xbb\xbfna\xc3\xafve", False, "na\xefve"),
    ("html declaring windows-1252", b'<meta charset="windows-1252"><p>\x93quoted\x94 caf\xe9</p>', True,
     "\u201cquoted\u201d caf\xe9"),
    ("html http-equiv latin-1", b'<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">\xe9t\xe9',
     True, "\xe9t\xe9"),
    ("html with a wrong declaration falls back to UTF-8", b'<meta charset="ascii"><p>caf\xc3\xa9</p>', True,
     "caf\xe9"),
    ("undeclared cp1252 prose, detected",
     ("Le caf\xe9 est servi \xe0 la cantine apr\xe8s midi. " * 20).encode("cp1252"), False, "caf\xe9 est servi"),
]


@pytest.mark.parametrize(("data", "html", "expected"), [c[1:] for c in DECODE_CASES], ids=[c[0] for c in DECODE_CASES])
def test_decode(data, html, expected):
    assert expected in decode(data, html=html)


@pytest.mark.parametrize("data", [bytes((i * 7919 + 13) % 256 for i in range(3000)), b"\x00" * 200,
                                  b"\xff\xfe" + b"\x00\xd8" * 10])
def test_only_undecodable_bytes_are_rejected_with_a_reason(data):
    with pytest.raises(UnreadableFile, match=r"cannot decode|not valid utf-16-le"):
        decode(data)


def test_stream_blocks_cut_between_paragraphs_and_lose_nothing(tmp_path):
    text = "".join(f"Paragraph {i} has a sentence.\r\nAnd a second line.\r\n\r\n" for i in range(500))
    path = tmp_path / "long.txt"
    path.write_bytes(b"\xff\xfe" + text.encode("utf-16-le"))
    blocks = list(stream_text(path, block_chars=2048))
    assert len(blocks) > 10 and all(len(b) <= 2 * 2048 for b in blocks)
    assert all(b.endswith("\n\n") for b in blocks[:-1])
    assert "".join(blocks) == text.replace("\r\n", "\n")


def _rules(n: int, start: int = 0) -> str:
    return "".join(f"Rule {i} says that form F-{1000 + i} is filed by team {i % 7}.\n\n" for i in range(start, n))


def test_large_text_file_is_streamed_and_other_files_and_encodings_ingest(settings, tmp_path, embedder, monkeypatch):
    settings.rag.stream_above_mb = 4096 / 2**20  # 4 KB: the big file below goes through the streaming path
    settings.rag.chunk_size, settings.rag.chunk_overlap = 128, 16
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "big.txt").write_text(_rules(180), encoding="utf-8")  # ~10 KB: three blocks
    (docs / "notepad.txt").write_bytes(b"\xff\xfe" + "Badge office: room 4.12,\x00 caf\xe9 level.".encode("utf-16-le"))
    (docs / "legacy.html").write_bytes(b'<html><head><meta charset="windows-1252"><title>Caf\xe9</title></head>'
                                       b"<body><p>\x93Lunch\x94 is served at noon.</p></body></html>")
    (docs / "blob.txt").write_bytes(bytes((i * 7919 + 13) % 256 for i in range(3000)))
    (docs / "huge.html").write_text("<html><body>" + "<p>Too big to parse at once.</p>" * 200 + "</body></html>")
    ingest_module = importlib.import_module("core.rag.ingest")  # the package re-exports the function's name
    read = ingest_module.read_file

    def no_whole_read_of_big_files(path):
        assert path.name != "big.txt", "a large text file must not be read whole"
        return read(path)

    monkeypatch.setattr(ingest_module, "read_file", no_whole_read_of_big_files)
    report = ingest(settings, [docs], source="docs", public=True, embedder=embedder)

    assert sorted(report.added) == ["docs/big.txt", "docs/legacy.html", "docs/notepad.txt"]
    reasons = dict(report.skipped)
    assert sorted(reasons) == ["docs/blob.txt", "docs/huge.html"]
    assert reasons["docs/blob.txt"].startswith("cannot decode")
    assert reasons["docs/huge.html"] == ("HTML file of 0.0 MB is larger than rag.stream_above_mb (0.00390625 MB): "
                                         "save it as text, or raise the limit")
    texts = _texts(settings)
    big = texts["big.txt"]
    assert len(big) == report.chunks - 2 and len(big) >= 5
    assert set(re.findall(r"Rule (\d+) says", " ".join(big))) == {str(i) for i in range(180)}  # nothing lost
    assert all("\x00" not in t for chunks in texts.values() for t in chunks)  # PostgreSQL-safe sources
    assert "caf\xe9" in texts["notepad.txt"][0] and "\u201cLunch\u201d" in texts["legacy.html"][0]

    # Changed and re-ingested: the streamed file's chunks are replaced, not added to.
    (docs / "big.txt").write_text(_rules(100), encoding="utf-8")
    again = ingest(settings, [docs], source="docs", public=True, embedder=embedder)
    assert again.updated == ["docs/big.txt"]
    assert len(_texts(settings)["big.txt"]) == again.chunks < len(big)


def test_interrupted_ingest_run_again_stores_every_chunk_once(settings, handbook, embedder, monkeypatch):
    settings.rag.stream_above_mb = 2048 / 2**20
    (handbook / "rules.txt").write_text(_rules(120), encoding="utf-8")  # streamed
    save = SourceRegistry.save

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt  # killed after the chunks were written, before the registry was saved

    monkeypatch.setattr(SourceRegistry, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)
    first = open_store(settings).count()
    assert first > 0 and SourceRegistry.for_settings(settings).get("handbook") is None

    monkeypatch.setattr(SourceRegistry, "save", save)
    report = ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)
    assert len(report.added) == 7 and report.chunks == first
    assert open_store(settings).count() == first
