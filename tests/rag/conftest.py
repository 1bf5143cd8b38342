"""Fixtures for the RAG tests: generated documents of every supported type and the real embedding model."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from core.config import Settings
from core.rag import Retriever, ingest
from core.rag.embeddings import load_embedder

VPN_MD = """\
# VPN guide

Company laptops connect through the corporate VPN.

## Error codes

### E-4471

Error E-4471 means your VPN token expired. Re-enroll your device at the self-service portal.

## Travel

When travelling abroad, ask the IT desk for a temporary travel profile two weeks in advance.
"""

EXPENSES_HTML = """\
<html><head><title>Expense policy</title><style>p { color: red }</style></head>
<body><nav>Home | Intranet</nav>
<h1>Expense policy</h1>
<p>Meals during business trips are reimbursed up to <b>45 euros</b> per day.</p>
<h2>Receipts</h2>
<p>Submit receipts within 30 days in the finance tool.</p>
<script>var tracking = "do-not-index";</script>
</body></html>
"""

ONBOARDING_RST = """\
==========
Onboarding
==========

Welcome aboard.

First week
----------

Your buddy is assigned by the team lead. Badge photos are taken on Tuesday.
"""

LUNCH_TXT = "The cafeteria on the third floor serves lunch between noon and 2 pm. Vegetarian dishes daily.\n"

SECURITY_PDF = [
    ["Password policy", "Passwords are rotated every 90 days and must have 14 characters."],
    ["Phishing", "Report phishing emails to the security desk at extension 4242."],
]

TRAVEL_DOCX = [
    "Travel booking",
    "All flights and hotels are booked through the Globetrek portal under policy code TRV-118.",
]

SALARIES_MD = """\
# Compensation

## Salary bands

Project Nightingale has a confidential budget of 3.2 million euros for the salary review.
"""


def write_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A minimal, valid PDF with one text line per entry (Helvetica), written by hand."""

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    count = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, lines in enumerate(pages):
        body = "BT /F1 12 Tf 72 720 Td 16 TL " + " ".join(f"({escape(line)}) Tj T*" for line in lines) + " ET"
        stream = body.encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {5 + 2 * i} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def write_docx(path: Path, paragraphs: list[str]) -> Path:
    """A minimal .docx (Office Open XML zip) with one paragraph per entry."""
    ns = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(
            "[Content_Types].xml",
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/word/document.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
            "</Types>",
        )
        z.writestr(
            "word/document.xml",
            f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{ns}">'
            f"<w:body>{body}</w:body></w:document>",
        )
    return path


def write_handbook(root: Path) -> Path:
    """One public folder with a document of every supported type."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "it").mkdir(exist_ok=True)
    (root / "it" / "vpn.md").write_text(VPN_MD)
    (root / "expenses.html").write_text(EXPENSES_HTML)
    (root / "onboarding.rst").write_text(ONBOARDING_RST)
    (root / "lunch.txt").write_text(LUNCH_TXT)
    write_pdf(root / "security.pdf", SECURITY_PDF)
    write_docx(root / "travel.docx", TRAVEL_DOCX)
    return root


@pytest.fixture(scope="session")
def embedder():
    # One model load for the whole session; the CLI's loader shares the same cached instance.
    return load_embedder(Settings(_env_file=None, vector_store="lancedb"))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", vector_store="lancedb")


@pytest.fixture
def handbook(tmp_path: Path) -> Path:
    return write_handbook(tmp_path / "handbook")


@pytest.fixture
def pdf_writer() -> Callable[[Path, list[list[str]]], Path]:
    return write_pdf


@pytest.fixture
def docx_writer() -> Callable[[Path, list[str]], Path]:
    return write_docx


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory, embedder) -> tuple[Settings, Retriever]:
    """A read-only store shared by the retrieval tests: the public handbook and a restricted HR source."""
    base = tmp_path_factory.mktemp("corpus")
    settings = Settings(_env_file=None, data_dir=base / "data", vector_store="lancedb")
    handbook = write_handbook(base / "handbook")
    hr = base / "hr"
    hr.mkdir()
    (hr / "salaries.md").write_text(SALARIES_MD)
    ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)
    ingest(settings, [hr], source="hr", channels=["hr"], embedder=embedder)
    return settings, Retriever(settings, embedder=embedder)
