"""Retrieval benchmark: prints one table.

1. Ingest throughput (chunks/s through read, split, embed and store) beside the raw sentence-transformers
   encode rate of the same chunk texts.
2. Query latency p50/p99 of the embedded store's dense search (LanceDB IVF index, channel access prefilter,
   chunk text and metadata read back) at 10k and 100k chunks, beside exact numpy search of the same
   vectors, with recall@10 against exact. Vectors are synthetic: 384-d, normalised, clustered like real
   embeddings; well-separated clusters make IVF routing easy, so recall on real embeddings can be lower.
3. recall@1/5/10 and MRR on an evaluation set over real text: the Python language reference topics that
   ship with every CPython (`pydoc_data.topics`, PSF licence), with questions written for this bench.

Run: .venv/bin/python bench/retrieval.py [--sizes 10000,100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import Settings  # noqa: E402
from core.rag import Retriever, access_filters, evaluate, ingest, open_store  # noqa: E402
from core.rag.chunking import splitters  # noqa: E402
from core.rag.embeddings import load_embedder, token_counter  # noqa: E402
from core.rag.eval import EvalItem  # noqa: E402
from core.rag.readers import read_file  # noqa: E402

DIM = 384

# (question, file the answer is in); paraphrased, not copied from the text. Topics whose text is repeated
# inside another topic (if, for, while, try, class... all appear in "compound") are left out: a hit on the
# copy would be collapsed as a near-duplicate and scored as a miss.
EVAL_SET = [
    ("How can I check that a condition holds while debugging and fail if it doesn't?", "assert.rst"),
    ("Can one statement bind the same value to several targets at once?", "assignment.rst"),
    ("How does a coroutine suspend until another awaitable completes?", "await.rst"),
    ("How do I leave the innermost loop early?", "break.rst"),
    ("How do I skip to the next iteration of a loop?", "continue.rst"),
    ("What do the left and right shift operators do to an integer?", "shifting.rst"),
    ("How are chained comparisons like a < b < c evaluated?", "comparisons.rst"),
    ("How do I remove the binding of a name?", "del.rst"),
    ("How are floating point literals written, for example with an exponent?", "floating.rst"),
    ("How does a format specification align and pad text in a replacement field?", "formatstrings.rst"),
    ("How do I make a name inside a function refer to the module-level variable?", "global.rst"),
    ("How can a nested function rebind a variable of the enclosing function?", "nonlocal.rst"),
    ("How are modules found and loaded when a program imports them?", "import.rst"),
    ("What is the syntax for small anonymous functions?", "lambda.rst"),
    ("Which statement does nothing and serves as a placeholder?", "pass.rst"),
    ("How do I raise an exception from another one so the cause is kept?", "raise.rst"),
    ("How does a function hand a value back to its caller?", "return.rst"),
    ("What is the single object that stands for the absence of a value?", "bltin-null-object.rst"),
    ("Which values count as false in a condition?", "truth.rst"),
    ("How does a generator function produce values one at a time?", "yield.rst"),
    ("What does raising a number to a negative exponent return?", "power.rst"),
    ("How does extended slicing with a step work?", "slicings.rst"),
    ("Which debugger command sets a breakpoint?", "debugger.rst"),
    ("Which methods do dictionaries offer for looking up keys with a default?", "typesmapping.rst"),
    ("How do I write integer literals in hexadecimal or binary?", "integers.rst"),
    ("Which operators bind more tightly than others?", "operator-summary.rst"),
    ("What special attributes do all module objects have?", "typesmodules.rst"),
    ("How do I write a complex number literal with an imaginary part?", "imaginary.rst"),
    ("How do bitwise and, or and exclusive or operate on integers?", "bitwise.rst"),
    ("What are the rules for bytes and string literal prefixes?", "strings.rst"),
]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def write_reference(folder: Path) -> Path:
    from pydoc_data.topics import topics

    folder.mkdir(parents=True)
    for name, text in topics.items():
        (folder / f"{name}.rst").write_text(text, encoding="utf-8")
    return folder


def bench_ingest_and_quality(work: Path, embedder) -> list[tuple[str, str]]:
    settings = Settings(_env_file=None, data_dir=work / "data", vector_store="lancedb")
    folder = write_reference(work / "pyref")

    started = time.perf_counter()
    report = ingest(settings, [folder], source="pyref", public=True, embedder=embedder)
    ingest_s = time.perf_counter() - started

    # The same chunk texts, as the model sees them (title and section prepended), encoded directly.
    docs = []
    for path in sorted(folder.iterdir()):
        for doc in read_file(path):
            doc.metadata.update(file=str(path), path=path.name, source="pyref", channels="", access="public")
            docs.append(doc)
    nodes = docs
    for step in splitters(settings.rag, token_counter(embedder)):
        nodes = step(nodes)
    from llama_index.core.schema import MetadataMode

    texts = [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    started = time.perf_counter()
    embedder._model.encode(texts, batch_size=settings.rag.embed_batch_size, normalize_embeddings=True)
    encode_s = time.perf_counter() - started

    items = [EvalItem(question=q, source_file=f, line=i) for i, (q, f) in enumerate(EVAL_SET, start=1)]
    result = evaluate(Retriever(settings, embedder=embedder), items, channel=None)
    rows = [
        ("ingest: files / chunks", f"{len(report.added)} / {report.chunks}"),
        ("ingest throughput (read+split+embed+store)", f"{report.chunks / ingest_s:.1f} chunks/s"),
        ("raw sentence-transformers encode, same chunks", f"{len(texts) / encode_s:.1f} chunks/s"),
        (f"eval ({result.questions} questions) recall@1", f"{result.recall[1]:.3f}"),
        ("eval recall@5", f"{result.recall[5]:.3f}"),
        ("eval recall@10", f"{result.recall[10]:.3f}"),
        ("eval MRR", f"{result.mrr:.3f}"),
    ]
    for miss in result.misses:
        rows.append(("  missed", miss.question))
    return rows


def synthetic_vectors(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    # Real embeddings cluster by topic; uniform random vectors would make every index look bad.
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def bench_latency(work: Path, size: int, queries: int) -> list[tuple[str, str]]:
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

    from core.rag.chunking import CHUNK_KEYS, doc_key

    rng = np.random.default_rng(size)
    centres = rng.standard_normal((max(size // 100, 10), DIM)).astype(np.float32)
    vectors = synthetic_vectors(rng, centres, size)
    query_vectors = synthetic_vectors(rng, centres, queries + 10)
    # Half the chunks public, the rest split over four restricted sources; the channel reads "s0".
    public = rng.random(size) < 0.5
    sources = rng.integers(0, 4, size)
    visible = public | (sources == 0)

    settings = Settings(_env_file=None, data_dir=work / f"lat{size}", vector_store="lancedb")
    store = open_store(settings, follow_writes=True)
    started = time.perf_counter()
    for start in range(0, size, 5000):
        batch = []
        for i in range(start, min(start + 5000, size)):
            source = f"s{sources[i]}"
            doc = i // 20
            meta = {
                "title": f"doc {doc}", "section": "", "file": f"/docs/{doc}.md", "path": f"{doc}.md",
                "page": 0, "source": source, "channels": "" if public[i] else "ch",
                "access": "public" if public[i] else "restricted",
            }  # fmt: skip
            assert tuple(meta) == CHUNK_KEYS
            node = TextNode(id_=str(i), text=f"chunk {i}", metadata=meta, embedding=vectors[i].tolist())
            link = RelatedNodeInfo(node_id=doc_key(source, meta["file"]))
            node.relationships[NodeRelationship.SOURCE] = link
            batch.append(node)
        store.add(batch)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    store.optimize()
    index_s = time.perf_counter() - started

    filters = access_filters(["s0"])
    rows = [(f"{size // 1000}k chunks: load / index build", f"{load_s:.1f} s / {index_s:.1f} s")]
    for label, flt, mask in (("channel filter", filters, visible), ("no filter", None, None)):
        store_ms, numpy_ms, recall = [], [], []
        for n, q in enumerate(query_vectors):
            t0 = time.perf_counter()
            hits = store.dense(q.tolist(), k=10, filters=flt)
            t1 = time.perf_counter()
            scores = vectors @ q
            if mask is not None:
                scores = np.where(mask, scores, -np.inf)
            top = np.argpartition(-scores, 10)[:10]
            t2 = time.perf_counter()
            if n < 10:  # warm-up: caches, index pages
                continue
            store_ms.append((t1 - t0) * 1000)
            numpy_ms.append((t2 - t1) * 1000)
            recall.append(len({int(h.node.node_id) for h in hits} & set(top.tolist())) / 10)
        rows += [
            (
                f"{size // 1000}k {label}: LanceDB IVF p50 / p99",
                f"{percentile(store_ms, 50):.1f} / {percentile(store_ms, 99):.1f} ms, "
                f"recall@10 {np.mean(recall):.3f}",
            ),
            (
                f"{size // 1000}k {label}: exact numpy p50 / p99",
                f"{percentile(numpy_ms, 50):.1f} / {percentile(numpy_ms, 99):.1f} ms",
            ),
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="store sizes for the latency part")
    parser.add_argument("--queries", type=int, default=200, help="queries per latency measurement")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    started = time.perf_counter()
    embedder = load_embedder(Settings(_env_file=None))
    rows: list[tuple[str, str]] = [
        ("machine", f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, {sys.platform}"),
    ]
    with tempfile.TemporaryDirectory(prefix="kaizen-bench-") as tmp:
        rows += bench_ingest_and_quality(Path(tmp), embedder)
        for size in (int(s) for s in args.sizes.split(",")):
            rows += bench_latency(Path(tmp), size, args.queries)
    rows.append(("bench wall time", f"{time.perf_counter() - started:.0f} s"))

    width = max(len(name) for name, _ in rows)
    print(f"{'measure'.ljust(width)}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
