"""Find document files and read them into llama-index Documents.

Markdown, HTML and reStructuredText come out as heading-marked text (`# Title`, `## Section`), so one
heading-aware splitter cuts all three into sections. PDF and DOCX go through llama-index's file readers
(pypdf, docx2txt). A file that cannot be read raises `UnreadableFile` with a one-line reason.

Text is decoded by its byte-order mark (UTF-8/16/32), then an HTML file's declared charset
(`<meta charset>`), then as UTF-8, then by charset-normalizer's detection; only bytes none of these can
decode (binary data) are rejected. Large text files are read as a stream of blocks (`stream_text`), so
memory stays bounded whatever the file's size.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from llama_index.core.schema import Document

from core.text import clean_text

__all__ = ["STREAMABLE_SUFFIXES", "SUPPORTED_SUFFIXES", "UnreadableFile", "decode", "discover", "read_file",
           "stream_text", "title_from_name"]

MARKDOWN = (".md", ".markdown")
HTML = (".html", ".htm")
SUPPORTED_SUFFIXES = frozenset({*MARKDOWN, *HTML, ".txt", ".text", ".rst", ".pdf", ".docx"})
# Formats whose text can be cut anywhere between paragraphs, so a large file can be chunked block by block.
STREAMABLE_SUFFIXES = frozenset({*MARKDOWN, ".txt", ".text", ".rst"})
# Longest run of BOM first: the UTF-32 LE mark starts with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
# Share of control characters (other than whitespace) above which decoded "text" is really binary data.
_MAX_CONTROL_SHARE = 0.05
_SAMPLE_BYTES = 1 << 20

# Documents of these kinds carry '#' headings that the section splitter understands.
HEADED = "headed"
PLAIN = "plain"


class UnreadableFile(Exception):
    """A file skipped at ingest; the message is the reason, fit for one line."""


@dataclass(frozen=True)
class Found:
    path: Path
    # Shown to users and matched by evaluation files: the path below the folder that was ingested.
    display: str


def discover(paths: list[Path]) -> tuple[list[Found], list[tuple[str, str]]]:
    """Supported files under `paths` (hidden folders skipped) and explicitly named files we can't read."""
    found: dict[Path, Found] = {}
    rejected: list[tuple[str, str]] = []
    for root in paths:
        root = root.resolve()
        if root.is_file():
            if root.suffix.lower() in SUPPORTED_SUFFIXES:
                found.setdefault(root, Found(root, root.name))
            else:
                rejected.append((str(root), f"unsupported file type {root.suffix or '(none)'}"))
            continue
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            if path.suffix.lower() in SUPPORTED_SUFFIXES:
                found.setdefault(path, Found(path, f"{root.name}/{relative.as_posix()}"))
    return list(found.values()), rejected


def read_file(path: Path) -> list[Document]:
    """The file's text as Documents with `title`, `page` and `kind` metadata."""
    if path.stat().st_size == 0:
        raise UnreadableFile("empty file")
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        docs = _read_pdf(path)
    elif suffix == ".docx":
        docs = _read_docx(path)
    else:
        text = _decode(path)
        if suffix in MARKDOWN:
            docs = [_doc(text, _first_heading(text) or title_from_name(path), HEADED)]
        elif suffix in HTML:
            title, text = _html_to_headed_text(text)
            docs = [_doc(text, title or _first_heading(text) or title_from_name(path), HEADED)]
        elif suffix == ".rst":
            text = _rst_to_headed_text(text)
            docs = [_doc(text, _first_heading(text) or title_from_name(path), HEADED)]
        else:
            docs = [_doc(text, title_from_name(path), PLAIN)]
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise UnreadableFile("no text in file")
    return docs


def _doc(text: str, title: str, kind: str, page: int = 0) -> Document:
    # NUL and other control characters never reach the store (PostgreSQL rejects NUL in a recorded reply's sources).
    return Document(text=clean_text(text), metadata={"title": clean_text(title), "page": page, "kind": kind})


def _decode(path: Path) -> str:
    text = decode(path.read_bytes(), html=path.suffix.lower() in HTML)
    if not text.strip():
        raise UnreadableFile("empty file")
    return text


def decode(data: bytes, *, html: bool = False) -> str:
    """`data` as text: byte-order mark, then (HTML) the declared charset, then UTF-8, then charset-normalizer's
    best guess. Raises UnreadableFile with the reason when none of them gives text."""
    encoding, start = _bom(data)
    if encoding is not None:
        try:
            return _checked(data[start:].decode(encoding))
        except UnicodeDecodeError as e:
            raise UnreadableFile(f"not valid {encoding} text although it starts with a {encoding} byte-order mark "
                                 f"(invalid bytes at offset {start + e.start})") from None
    if html and (declared := _declared_charset(data)) is not None:
        try:
            return _checked(data.decode(declared))
        except UnicodeDecodeError:
            pass  # the declaration is wrong: fall back to UTF-8 and detection
    try:
        text = data.decode("utf-8")
        if _is_text(text):  # UTF-16 without a BOM is valid UTF-8 too, full of NULs
            return text
    except UnicodeDecodeError:
        pass
    return _checked(data.decode(_detect(data)))


def _bom(data: bytes) -> tuple[str | None, int]:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding, len(bom)
    return None, 0


def _declared_charset(data: bytes) -> str | None:
    """The charset an HTML file declares in its first kilobytes, if Python knows that codec."""
    match = _META_CHARSET.search(data[:4096])
    if match is None:
        return None
    try:
        return codecs.lookup(match.group(1).decode("ascii")).name
    except (LookupError, UnicodeDecodeError):
        return None


def _detect(sample: bytes) -> str:
    from charset_normalizer import from_bytes

    best = from_bytes(sample).best()
    if best is None:
        raise UnreadableFile("cannot decode: not UTF-8, no byte-order mark and no text encoding detected "
                             "(binary data?)")
    return best.encoding


def _is_text(text: str) -> bool:
    """False when (the start of) `text` is mostly control characters: binary data, or a wrong encoding."""
    controls = sum(1 for c in text[:_SAMPLE_BYTES] if c < " " and c not in "\n\r\t\f\v")
    return controls <= _MAX_CONTROL_SHARE * min(len(text), _SAMPLE_BYTES)


def _checked(text: str) -> str:
    if not _is_text(text):
        raise UnreadableFile("cannot decode: it holds binary data (control bytes), not text")
    return text


def stream_text(path: Path, *, block_chars: int = 1 << 20) -> Iterator[str]:
    """The text of a large file in blocks of about `block_chars` characters, each cut after a paragraph break
    (else a line break, else a space), so no sentence is split between two blocks unless a line is longer than
    a block. The whole file is checked to decode before the first block is returned: UnreadableFile is raised
    here, not half-way through."""
    if path.stat().st_size == 0:
        raise UnreadableFile("empty file")
    with path.open("rb") as f:
        head = f.read(_SAMPLE_BYTES)
    encoding, start = _bom(head)
    if encoding is None:
        utf8 = _is_text(head.decode("utf-8", "ignore")) and _decodes(path, "utf-8", 0)
        encoding = "utf-8" if utf8 else _detect(head)
    if not _decodes(path, encoding, start):
        raise UnreadableFile(f"cannot decode: not valid {encoding} text throughout")
    _checked(head[start:].decode(encoding, "ignore"))
    return _blocks(path, encoding, start, block_chars)


def _decodes(path: Path, encoding: str, start: int) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    with path.open("rb") as f:
        f.seek(start)
        try:
            for block in iter(lambda: f.read(_SAMPLE_BYTES), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
    return True


def _blocks(path: Path, encoding: str, start: int, block_chars: int) -> Iterator[str]:
    with path.open("rb") as raw:
        raw.seek(start)
        reader = io.TextIOWrapper(raw, encoding=encoding, newline=None)  # CR LF and CR become LF
        carry = ""
        while True:
            piece = reader.read(block_chars)
            if not piece:
                break
            text = carry + piece
            cut = _cut(text, block_chars)
            carry = text[cut:]
            if text[:cut].strip():
                yield clean_text(text[:cut])
        if carry.strip():
            yield clean_text(carry)


def _cut(text: str, block_chars: int) -> int:
    """Where to end a block of `text`: after its last paragraph break, line break or space past half a block."""
    half = min(block_chars // 2, len(text) // 2)
    for separator in ("\n\n", "\n", " "):
        at = text.rfind(separator, half)
        if at != -1:
            return at + len(separator)
    return len(text)


def title_from_name(path: Path) -> str:
    """A document title from a file name: `vpn-guide_v2.md` -> "vpn guide v2"."""
    return re.sub(r"[-_]+", " ", path.stem).strip() or path.name


def _first_heading(text: str) -> str:
    match = re.search(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.MULTILINE)
    return match.group(1) if match else ""


def _read_pdf(path: Path) -> list[Document]:
    import pypdf
    from llama_index.readers.file import PDFReader
    from tenacity import RetryError

    try:
        pages = PDFReader().load_data(path)
    except RetryError as e:
        # The reader retries three times; the last error is the one to report.
        raise UnreadableFile(_pdf_reason(e.last_attempt.exception())) from None
    except (pypdf.errors.PyPdfError, ValueError, KeyError, OSError) as e:
        raise UnreadableFile(_pdf_reason(e)) from None
    title = title_from_name(path)
    return [_doc(page.text or "", title, PLAIN, page=number) for number, page in enumerate(pages, start=1)]


def _pdf_reason(error: BaseException | None) -> str:
    import pypdf

    if isinstance(error, pypdf.errors.FileNotDecryptedError | pypdf.errors.DependencyError):
        return "encrypted PDF (needs a password)"
    return f"unreadable PDF ({type(error).__name__}: {error})"


def _read_docx(path: Path) -> list[Document]:
    from llama_index.readers.file import DocxReader

    try:
        docs = DocxReader().load_data(path)
    except Exception as e:  # docx2txt surfaces zip, missing-part and XML parser errors of several types
        raise UnreadableFile(f"unreadable DOCX ({type(e).__name__}: {e})") from None
    return [_doc(d.text, title_from_name(path), PLAIN) for d in docs]


_BLOCK_TAGS = (
    "p", "div", "li", "tr", "br", "pre", "blockquote", "section", "article", "table", "ul", "ol",
    "dd", "dt", "main", "figure", "figcaption", "header", "footer", "aside",
)  # fmt: skip


def _html_to_headed_text(html: str) -> tuple[str, str]:
    """(title, text) with headings as '#' lines and block elements as paragraphs; markup dropped."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    # Scripts, styles and navigation are page furniture, not document text.
    for tag in soup(["script", "style", "noscript", "template", "svg", "head", "nav"]):
        tag.decompose()
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            heading.replace_with(f"\n\n{'#' * level} {heading.get_text(' ', strip=True)}\n\n")
    for block in soup.find_all(_BLOCK_TAGS):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    lines = [re.sub(r"[ \t\r\f\v\xa0]+", " ", line).strip() for line in soup.get_text().splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    return title, text


_RST_ADORNMENT = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}\s*$")


def _rst_to_headed_text(text: str) -> str:
    """reStructuredText section titles (underlined, optionally overlined) become '#' headings.

    RST has no fixed adornment per level: the order in which styles first appear sets the levels.
    """
    lines = text.splitlines()
    styles: list[tuple[str, bool]] = []
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        overline = bool(_RST_ADORNMENT.match(line)) and i + 2 < len(lines)
        if overline and lines[i + 1].strip() and _RST_ADORNMENT.match(lines[i + 2]):
            title, style, step = lines[i + 1].strip(), (line.strip()[0], True), 3
        elif (
            line.strip()
            and not _RST_ADORNMENT.match(line)
            and i + 1 < len(lines)
            and _RST_ADORNMENT.match(lines[i + 1])
            and len(lines[i + 1].strip()) >= min(len(line.strip()), 3)
        ):
            title, style, step = line.strip(), (lines[i + 1].strip()[0], False), 2
        else:
            out.append(line)
            i += 1
            continue
        if style not in styles:
            styles.append(style)
        out.extend(["", f"{'#' * min(styles.index(style) + 1, 6)} {title}", ""])
        i += step
    return "\n".join(out)
