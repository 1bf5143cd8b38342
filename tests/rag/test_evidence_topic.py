"""The evidence sentence answers the question's ask, not just its subject (core/rag/evidence.py, topic term).

The case kept: on bench/quality.py's docs set, "Who was the captain of the Titanic?" was answered right, but the
answer opened with the article's introduction "RMS Titanic was a British passenger liner …" cited [n], and the
captain's name came from the model's continuation: a citation of an excerpt that does not hold the fact.
"""

import re
from pathlib import Path

import pytest

from core.rag import Retriever, ingest
from core.rag import evidence as evidence_module
from core.rag.evidence import cite, rank_evidence

TITANIC_MD = Path(__file__).resolve().parents[2] / "bench" / "data" / "docs" / "titanic.md"
EIFFEL_MD = TITANIC_MD.with_name("eiffel_tower.md")
PLANETS_MD = [TITANIC_MD.with_name(name) for name in ("jupiter.md", "mercury.md", "venus.md")]


@pytest.fixture(scope="module")
def articles(tmp_path_factory: pytest.TempPathFactory, embedder) -> Retriever:
    from core.config import Settings

    base = tmp_path_factory.mktemp("topic")
    folder = base / "articles"
    folder.mkdir()
    for path in (TITANIC_MD, EIFFEL_MD, *PLANETS_MD):
        (folder / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    settings = Settings(_env_file=None, data_dir=base / "data", vector_store="lancedb")
    ingest(settings, [folder], source="articles", public=True, embedder=embedder)
    retriever = Retriever(settings, embedder=embedder)
    yield retriever
    retriever.close()


def _lead(retriever: Retriever, embedder, question: str) -> tuple[str, list]:
    sources = retriever.search(question, channel=None, k=4)
    ranked = rank_evidence(question, sources, embed_query=embedder.get_query_embedding,
                           embed_texts=embedder.get_text_embedding_batch)
    return cite(ranked[0].sentence, ranked[0].source + 1), sources


@pytest.mark.parametrize(("question", "fact", "introduction"), [
    ("Who was the captain of the Titanic?", "Edward Smith", "RMS Titanic was a British passenger liner"),
    ("For which event was the Eiffel Tower built?", "Exposition Universelle", "The Eiffel Tower is a wrought-iron"),
])
def test_the_cited_excerpt_holds_the_fact_not_only_the_subject(articles, embedder, monkeypatch, question, fact,
                                                                introduction):
    lead, sources = _lead(articles, embedder, question)
    [n] = [int(m) for m in re.findall(r"\[(\d+)\]", lead)]
    assert fact in lead and fact in sources[n - 1].text
    # Without the topic term the subject's introduction was the lead (the bug this guards against).
    monkeypatch.setattr(evidence_module, "TOPIC_WEIGHT", 0.0)
    old, _ = _lead(articles, embedder, question)
    assert old.startswith(introduction) and fact not in old


def test_a_sentence_that_does_not_name_its_subject_does_not_win_another_subjects_question(articles, embedder):
    # Mercury's "The planet turns on its axis very slowly, once every 59 Earth days" is far from its title "Mercury";
    # without the question's own closeness to the title given back, it led the answer about Jupiter.
    lead, sources = _lead(articles, embedder, "How long does Jupiter take to rotate once?")
    assert "10 hours" in lead and "59 Earth days" not in lead


def test_excerpts_without_a_title_are_ranked_as_before(embedder, monkeypatch):
    from core.types import Source

    sources = [Source(id="a", text="Mercury is the smallest planet. It has no moons."),
               Source(id="b", text="Mercury is closest to the Sun. A year on Mercury lasts 88 days.")]

    def ranked() -> list:
        return rank_evidence("How long does Mercury take to orbit the Sun?", sources,
                             embed_query=embedder.get_query_embedding, embed_texts=embedder.get_text_embedding_batch)

    with_term = ranked()
    monkeypatch.setattr(evidence_module, "TOPIC_WEIGHT", 0.0)
    assert ranked() == with_term and "88 days" in with_term[0].sentence
