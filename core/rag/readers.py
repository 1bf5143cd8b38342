"""Find document files and read them into llama-index Documents.

Markdown, HTML and reStructuredText come out as heading-marked text (`# Title`, `## Section`), so one
heading-aware splitter cuts all three into sections. PDF and DOCX go through llama-index's file readers
(pypdf, docx2txt). A file that cannot be read raises `UnreadableFile` with a one-line reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from llama_index.core.schema import Document

__all__ = ["SUPPORTED_SUFFIXES", "UnreadableFile", "discover", "read_file"]

MARKDOWN = (".md", ".markdown")
HTML = (".html", ".htm")
SUPPORTED_SUFFIXES = frozenset({*MARKDOWN, *HTML, ".txt", ".text", ".rst", ".pdf", ".docx"})

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
            docs = [_doc(text, _first_heading(text) or _title_from_name(path), HEADED)]
        elif suffix in HTML:
            title, text = _html_to_headed_text(text)
            docs = [_doc(text, title or _first_heading(text) or _title_from_name(path), HEADED)]
        elif suffix == ".rst":
            text = _rst_to_headed_text(text)
            docs = [_doc(text, _first_heading(text) or _title_from_name(path), HEADED)]
        else:
            docs = [_doc(text, _title_from_name(path), PLAIN)]
    docs = [d for d in docs if d.text.strip()]
    if not docs:
        raise UnreadableFile("no text in file")
    return docs


def _doc(text: str, title: str, kind: str, page: int = 0) -> Document:
    return Document(text=text, metadata={"title": title, "page": page, "kind": kind})


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        # utf-8-sig drops the byte-order mark some editors write.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UnreadableFile(f"not UTF-8 text (invalid byte at offset {e.start})") from None
    if not text.strip():
        raise UnreadableFile("empty file")
    return text


def _title_from_name(path: Path) -> str:
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
    title = _title_from_name(path)
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
    return [_doc(d.text, _title_from_name(path), PLAIN) for d in docs]


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
