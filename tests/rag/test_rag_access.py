"""Per-channel access: restricted chunks never reach a channel without access, filtered inside the store."""

from __future__ import annotations

import os
import uuid

import pytest
from llama_index.core.vector_stores.types import FilterCondition

from core.config import Settings
from core.rag import Retriever, SourceRegistry, access_filters, ingest, open_store, remove_source

NIGHTINGALE = "What is the budget of Project Nightingale?"


def _restricted(hits) -> list:
    return [h for h in hits if h.source == "hr" or "Nightingale" in h.text]


@pytest.mark.parametrize("channel", ["general", "eng", "", "hr-archive", "HR"])
def test_restricted_source_never_reaches_a_channel_without_access(corpus, channel):
    _, retriever = corpus
    for question in (
        NIGHTINGALE,
        "Nightingale",
        "salaries.md salary bands compensation",
        "3.2 million euros",
    ):
        assert _restricted(retriever.search(question, channel=channel, k=50)) == []


@pytest.mark.parametrize("channel", ["hr", "#hr", " hr "])
def test_a_channel_with_access_finds_it(corpus, channel):
    _, retriever = corpus
    hit = retriever.search(NIGHTINGALE, channel=channel)[0]
    assert hit.source == "hr" and hit.channels == ("hr",) and "3.2 million" in hit.text


def test_the_filter_is_applied_inside_the_store_query(corpus, embedder):
    settings, _ = corpus
    store = open_store(settings)
    query = embedder.get_query_embedding(NIGHTINGALE)
    public_only = access_filters([])
    # Unfiltered, the HR chunk is the nearest; a filter applied after the search would leave k=1 empty.
    assert store.dense(query, k=1, filters=None)[0].node.metadata["source"] == "hr"
    dense = store.dense(query, k=1, filters=public_only)
    lexical = store.lexical("Nightingale budget", k=50, filters=public_only)
    assert len(dense) == 1 and dense[0].node.metadata["access"] == "public"
    assert all(hit.node.metadata["source"] != "hr" for hit in lexical)
    hr_hits = store.lexical("Nightingale", k=5, filters=access_filters(["hr"]))
    assert [h.node.metadata["source"] for h in hr_hits] == ["hr"]


def test_a_filter_that_matches_nothing_returns_nothing(settings, tmp_path, embedder):
    folder = tmp_path / "hr"
    folder.mkdir()
    (folder / "salaries.md").write_text("# Pay\n\nProject Nightingale has a budget of 3.2 million euros.\n")
    ingest(settings, [folder], source="hr", channels=["hr"], embedder=embedder)
    store = open_store(settings)

    # Only restricted chunks exist: the public-only filter matches no row at all.
    assert store.dense(embedder.get_query_embedding("budget"), k=5, filters=access_filters([])) == []
    assert store.lexical("Nightingale", k=5, filters=access_filters([])) == []
    assert Retriever(settings, embedder=embedder).search(NIGHTINGALE, channel="general") == []


def test_removing_a_source_revokes_nothing_else(corpus):
    # The access filter names sources from the registry; an unknown channel still sees public chunks.
    _, retriever = corpus
    assert retriever.search("E-4471", channel="brand-new-channel")[0].source == "handbook"


def test_access_filter_is_an_or_of_equality_filters():
    filters = access_filters(["hr", "eng", "hr"])
    assert filters.condition == FilterCondition.OR
    assert [(f.key, f.operator.value, f.value) for f in filters.filters] == [
        ("access", "==", "public"), ("source", "==", "eng"), ("source", "==", "hr"),
    ]  # fmt: skip


def test_lancedb_filter_translation():
    from llama_index.vector_stores.lancedb.base import _to_lance_filter

    assert (
        _to_lance_filter(access_filters(["hr"]), None)
        == "metadata.access = 'public' OR metadata.source = 'hr'"
    )


def test_weaviate_filter_translation():
    from llama_index.vector_stores.weaviate.base import _to_weaviate_filter
    from weaviate.collections.classes.filters import Filter, _FilterOr

    translated = _to_weaviate_filter(access_filters(["hr", "eng"]))

    assert isinstance(translated, _FilterOr)
    assert translated.filters == [
        Filter.by_property("access").equal("public"),
        Filter.by_property("source").equal("eng"),
        Filter.by_property("source").equal("hr"),
    ]
    assert _to_weaviate_filter(access_filters([])) == Filter.by_property("access").equal("public")


WEAVIATE_URL = os.environ.get("KAIZEN_WEAVIATE_URL", "")


@pytest.mark.skipif(
    not WEAVIATE_URL, reason="KAIZEN_WEAVIATE_URL is not set: no Weaviate server to test against"
)
def test_weaviate_store_syncs_and_filters_like_lancedb(tmp_path, embedder, handbook):
    collection = f"KaizenTest{uuid.uuid4().hex[:8]}"
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        vector_store="weaviate",
        weaviate_url=WEAVIATE_URL,
        rag={"weaviate_collection": collection},
    )
    hr = tmp_path / "hr"
    hr.mkdir()
    (hr / "salaries.md").write_text("# Pay\n\nProject Nightingale has a budget of 3.2 million euros.\n")
    store = open_store(settings)
    try:
        ingest(settings, [handbook], source="handbook", public=True, embedder=embedder, store=store)
        ingest(settings, [hr], source="hr", channels=["hr"], embedder=embedder, store=store)
        retriever = Retriever(settings, embedder=embedder, store=store)

        assert retriever.search("E-4471", channel="general")[0].uri.endswith("vpn.md")
        assert _restricted(retriever.search(NIGHTINGALE, channel="general", k=50)) == []
        assert retriever.search(NIGHTINGALE, channel="hr")[0].source == "hr"

        (handbook / "lunch.txt").unlink()
        report = ingest(settings, [handbook], source="handbook", public=True, embedder=embedder, store=store)
        assert report.removed == ["handbook/lunch.txt"]
        remove_source(settings, "hr", store=store)
        assert store.count() == SourceRegistry.for_settings(settings).get("handbook").chunks
        assert retriever.search(NIGHTINGALE, channel="hr") == []
    finally:
        store._client.collections.delete(collection)
        store.close()


def test_a_channel_known_by_id_and_name_reads_what_either_may(corpus):
    _, retriever = corpus
    assert retriever.search(NIGHTINGALE, channel=("C0123ABC", "#hr"))[0].source == "hr"
    assert _restricted(retriever.search(NIGHTINGALE, channel=("C0123ABC", "general"), k=50)) == []
