"""Ingest of every supported type, bad files, and incremental sync against the real embedded store."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from core.rag import RagError, Retriever, SourceRegistry, ingest, open_store, remove_source


def _sources(retriever: Retriever, question: str, channel: str | None = "general", k: int = 10):
    return retriever.search(question, channel=channel, k=k)


def test_every_type_is_read_with_title_section_file_and_page(settings, handbook, embedder):
    report = ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)

    assert sorted(report.added) == [
        "handbook/expenses.html", "handbook/it/vpn.md", "handbook/lunch.txt",
        "handbook/onboarding.rst", "handbook/security.pdf", "handbook/travel.docx",
    ]  # fmt: skip
    assert report.skipped == [] and report.chunks >= 6
    retriever = Retriever(settings, embedder=embedder)

    vpn = _sources(retriever, "What does error E-4471 mean?")[0]
    assert vpn.title == "VPN guide"
    assert vpn.metadata["section"] == "VPN guide > Error codes > E-4471"
    assert vpn.uri == str(handbook / "it" / "vpn.md") and vpn.source == "handbook" and vpn.channels == ()

    html = _sources(retriever, "meal reimbursement per day on business trips")[0]
    assert html.title == "Expense policy" and "45 euros" in html.text
    # Tag-aware: no markup, no script or navigation text.
    assert "<" not in html.text and "tracking" not in html.text and "Intranet" not in html.text

    rst = _sources(retriever, "When are badge photos taken?")[0]
    assert rst.title == "Onboarding" and rst.metadata["section"] == "Onboarding > First week"

    pdf = _sources(retriever, "Where do I report phishing emails?")[0]
    assert pdf.uri.endswith("security.pdf") and pdf.metadata["page"] == 2

    docx = _sources(retriever, "Which portal do I book flights in?")[0]
    assert docx.uri.endswith("travel.docx") and "Globetrek" in docx.text

    txt = _sources(retriever, "Where is the cafeteria?")[0]
    assert txt.uri.endswith("lunch.txt") and txt.metadata["page"] is None


def test_long_documents_are_cut_into_overlapping_token_sized_chunks(settings, tmp_path, embedder):
    sentences = [f"Rule {i} says that form F-{1000 + i} is filed by team {i % 7}." for i in range(120)]
    (tmp_path / "rules.txt").write_text(" ".join(sentences))
    # Above 128 on purpose: the model's tokenizer truncates at 128 unless counting switches that off.
    settings.rag.chunk_size, settings.rag.chunk_overlap = 160, 24

    report = ingest(settings, [tmp_path / "rules.txt"], source="rules", public=True, embedder=embedder)

    table = open_store(settings)._table
    texts = [row["text"] for row in table.search().limit(1000).select(["text"]).to_list()]
    tokenizer = embedder._model.tokenizer
    sizes = [len(tokenizer.encode(t, add_special_tokens=False)) for t in texts]
    assert report.chunks == len(texts) >= 10
    assert max(sizes) <= 160 and sum(sizes) / len(sizes) > 100
    # Neighbouring chunks share their boundary sentence (the overlap).
    rules = sorted([{int(n) for n in re.findall(r"Rule (\d+)", t)} for t in texts], key=min)
    assert all(a & b for a, b in zip(rules, rules[1:], strict=False))
    assert set().union(*rules) == set(range(120))


def test_bad_files_are_skipped_with_a_reason_and_the_rest_ingests(settings, tmp_path, embedder, pdf_writer):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.md").write_text("# Parking\n\nVisitors park in lot P7 next to the gate.\n")
    (folder / "empty.md").write_bytes(b"")
    (folder / "blank.txt").write_text("   \n\n")
    (folder / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"))  # detected, read
    (folder / "garbage.txt").write_bytes(bytes((i * 7919 + 13) % 256 for i in range(3000)))  # binary
    (folder / "corrupt.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    (folder / "broken.docx").write_bytes(b"not a zip archive")
    plain = pdf_writer(tmp_path / "plain.pdf", [["Secret merger plans"]])
    writer = PdfWriter(clone_from=PdfReader(plain))
    writer.encrypt(user_password="hunter2", algorithm="RC4-128")
    with (folder / "locked.pdf").open("wb") as f:
        writer.write(f)
    (folder / "image.png").write_bytes(b"\x89PNG")  # unsupported types inside folders are not documents

    report = ingest(settings, [folder], source="mixed", public=True, embedder=embedder)

    assert report.added == ["mixed/good.md", "mixed/latin1.txt"]
    reasons = dict(report.skipped)
    assert reasons["mixed/empty.md"] == "empty file"
    assert reasons["mixed/blank.txt"] == "empty file"
    assert reasons["mixed/garbage.txt"].startswith("cannot decode")
    assert reasons["mixed/corrupt.pdf"].startswith("unreadable PDF")
    assert reasons["mixed/broken.docx"].startswith("unreadable DOCX")
    assert reasons["mixed/locked.pdf"] == "encrypted PDF (needs a password)"
    assert len(report.skipped) == 6
    assert "6 skipped" in report.summary()
    assert (
        Retriever(settings, embedder=embedder).search("where do visitors park", channel="x")[0].title
        == "Parking"
    )


def test_explicit_file_of_unsupported_type_is_reported(settings, tmp_path, embedder):
    (tmp_path / "notes.xlsx").write_bytes(b"PK")
    report = ingest(settings, [tmp_path / "notes.xlsx"], source="x", public=True, embedder=embedder)
    assert report.skipped == [(str(tmp_path / "notes.xlsx"), "unsupported file type .xlsx")]


def test_a_missing_path_is_an_error_and_changes_nothing(settings, handbook, tmp_path, embedder):
    ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)
    registry = SourceRegistry.for_settings(settings)
    before, rows = registry.path.read_text(), open_store(settings).count()
    (handbook / "lunch.txt").unlink()

    with pytest.raises(RagError, match="path does not exist: .*nowhere"):
        ingest(settings, [handbook, tmp_path / "nowhere"], source="handbook", public=True, embedder=embedder)

    assert registry.path.read_text() == before
    assert open_store(settings).count() == rows


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"public": True, "channels": ["eng"]}, "either"),
        ({}, "either"),
        ({"public": True, "source": "bad name!"}, "invalid source name"),
    ],
)
def test_bad_arguments_are_refused(settings, handbook, embedder, kwargs, message):
    kwargs = {"source": "handbook", **kwargs}
    with pytest.raises(RagError, match=message):
        ingest(settings, [handbook], embedder=embedder, **kwargs)
    assert not SourceRegistry.for_settings(settings).path.exists()


def test_resync_embeds_only_changes_and_leaves_nothing_stale(settings, handbook, embedder):
    ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)
    retriever = Retriever(settings, embedder=embedder)
    assert "E-4471" in _sources(retriever, "E-4471")[0].text

    # Change one file, delete one, add one.
    vpn = handbook / "it" / "vpn.md"
    vpn.write_text(vpn.read_text().replace("E-4471", "E-5582"))
    (handbook / "lunch.txt").unlink()
    (handbook / "parking.txt").write_text("Visitors park in lot P7 next to the main gate.\n")
    report = ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)

    assert report.updated == ["handbook/it/vpn.md"]
    assert report.removed == ["handbook/lunch.txt"]
    assert report.added == ["handbook/parking.txt"]
    assert sorted(report.unchanged) == [
        "handbook/expenses.html", "handbook/onboarding.rst", "handbook/security.pdf", "handbook/travel.docx",
    ]  # fmt: skip
    every = [s for q in ("E-4471", "E-5582", "cafeteria lunch noon", "parking lot P7")
             for s in _sources(retriever, q, k=50)]  # fmt: skip
    assert not any("E-4471" in s.text for s in every)
    assert any("E-5582" in s.text for s in every)
    assert not any(s.uri.endswith("lunch.txt") for s in every)
    assert any(s.uri.endswith("parking.txt") for s in every)
    # The store holds exactly the chunks the registry accounts for.
    record = SourceRegistry.for_settings(settings).get("handbook")
    assert open_store(settings).count() == record.chunks

    again = ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)
    assert (again.added, again.updated, again.removed, again.chunks) == ([], [], [], 0)
    assert len(again.unchanged) == 6


def test_a_file_that_turns_bad_keeps_its_previous_version(settings, handbook, embedder):
    ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)
    (handbook / "lunch.txt").write_bytes(b"\xff\xfe broken")

    report = ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)

    assert report.skipped[0][0] == "handbook/lunch.txt" and "previous version stays" in report.skipped[0][1]
    hits = Retriever(settings, embedder=embedder).search("cafeteria lunch", channel="x")
    assert hits and hits[0].uri.endswith("lunch.txt")


def test_changing_access_rewrites_every_chunk(settings, handbook, embedder):
    ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)
    retriever = Retriever(settings, embedder=embedder)
    assert _sources(retriever, "E-4471", channel="general")

    report = ingest(settings, [handbook], source="handbook", channels=["it"], embedder=embedder)

    assert len(report.updated) == 6 and report.unchanged == []
    assert _sources(retriever, "E-4471", channel="general") == []
    hit = _sources(retriever, "E-4471", channel="it")[0]
    assert hit.channels == ("it",)


def test_remove_source_deletes_its_chunks(settings, handbook, tmp_path, embedder):
    other = tmp_path / "other"
    other.mkdir()
    (other / "parking.txt").write_text("Visitors park in lot P7 next to the main gate.\n")
    ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)
    ingest(settings, [other], source="other", public=True, embedder=embedder)

    record = remove_source(settings, "handbook")

    assert len(record.files) == 6
    assert open_store(settings).count() == 1
    assert set(SourceRegistry.for_settings(settings).sources()) == {"other"}
    with pytest.raises(RagError, match="unknown source 'handbook'; sources: other"):
        remove_source(settings, "handbook")


def test_duplicate_files_collapse_to_one_result(settings, handbook, embedder):
    shutil.copytree(handbook / "it", handbook / "it-copy")
    ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)

    hits = _sources(Retriever(settings, embedder=embedder), "What does error E-4471 mean?")

    assert sum("E-4471 means" in h.text for h in hits) == 1


def test_hidden_folders_are_not_ingested(settings, handbook, embedder):
    (handbook / ".git").mkdir()
    (handbook / ".git" / "notes.md").write_text("# Hidden\n\nnot a document\n")
    report = ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)
    assert not any("notes.md" in f for f in report.added)


def test_store_path_is_under_data_dir(settings, handbook, embedder):
    ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)
    assert (Path(settings.data_dir) / "lancedb" / "chunks.lance").is_dir()


def test_files_chunked_the_old_way_are_chunked_again(settings, handbook, embedder):
    import dataclasses

    ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)
    registry = SourceRegistry.for_settings(settings)
    record = registry.get("handbook")
    # As an earlier Kaizen recorded them: the content hash alone, chunks without their heading line.
    old = {k: dataclasses.replace(f, sha256=f.sha256.split("+")[0]) for k, f in record.files.items()}
    registry.save(dataclasses.replace(record, files=old), embedding_model=registry.embedding_model())

    report = ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)

    assert len(report.updated) == 6 and report.unchanged == [] and report.chunks > 0
    again = ingest(settings, [handbook], source="handbook", public=True, embedder=embedder)
    assert len(again.unchanged) == 6
