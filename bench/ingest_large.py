"""Peak memory (RSS) and time of `kaizen ingest` for one large text file beside a small one.

Each ingest runs in a fresh child process (its peak RSS is the kernel's ru_maxrss for that child); a watchdog kills a
child whose RSS passes --max-rss-gb, so the "whole file" mode (the old way: read, chunk and embed the file as one
document) cannot take the machine down.

    python bench/ingest_large.py                       # 1 MB and 50 MB, streamed, embedding compute stubbed
    python bench/ingest_large.py --sizes 1 --embed real --modes stream whole

`--embed stub` (default) keeps the real tokenizer, chunking, LanceDB writes and index build, and replaces only the
MiniLM forward pass by seeded random unit vectors: on a CPU the forward pass is ~99% of the time (tens of minutes
for 50 MB) and its memory is bounded by `rag.embed_batch_size` whatever the file size. `--embed real` measures it.
Last line: `ingest_large: 1MB stream peak_rss=...MB [read/chunk/embed/write ...MB, index build ...MB] time=...s; ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WORDS = ("the of and to in is for that on with as by at from this be are it or an was we can will not have "
         "policy laptop badge office expense travel portal token printer kitchen review budget team").split()


def make_text(path: Path, megabytes: float, seed: int = 0) -> None:
    """Prose-like paragraphs (sentences of 8-20 words, 2-6 sentences) up to `megabytes` MB."""
    rng = random.Random(seed)
    vocabulary = WORDS + [f"term{i}" for i in range(5000)]
    target = int(megabytes * 2**20)
    written = 0
    with path.open("w", encoding="utf-8") as f:
        while written < target:
            sentences = (" ".join(rng.choices(vocabulary, k=rng.randint(8, 20))).capitalize() + "."
                         for _ in range(rng.randint(2, 6)))
            paragraph = " ".join(sentences) + "\n\n"
            f.write(paragraph)
            written += len(paragraph)


def child(args: argparse.Namespace) -> None:
    """One ingest of `args.folder` in this process; prints a JSON result line."""
    import numpy as np

    from core.config import load_settings
    from core.rag import ingest
    from core.rag.embeddings import load_embedder

    settings = load_settings(data_dir=Path(args.data_dir))
    if args.mode == "whole":
        settings.rag.stream_above_mb = 1e6  # never stream: the file is one Document, as before
    embedder = load_embedder(settings)
    if args.embed == "stub":
        rng = np.random.default_rng(0)

        def encode(sentences, **kwargs):
            vectors = rng.standard_normal((len(sentences), 384)).astype(np.float32)
            return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

        embedder._model.encode = encode
    # Peak RSS while reading, chunking, embedding and writing, apart from the index build at the end (LanceDB's
    # full-text and vector indexes grow with the whole table, however its files arrived).
    import psutil

    from core.rag import store_lancedb

    me, peak, phase = psutil.Process(), {"write": 0, "index": 0}, ["write"]

    def sample() -> None:
        while True:
            peak[phase[0]] = max(peak[phase[0]], me.memory_info().rss)
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    optimize = store_lancedb.LanceStore.optimize

    def timed_optimize(self) -> None:
        phase[0] = "index"
        optimize(self)

    store_lancedb.LanceStore.optimize = timed_optimize
    started = time.perf_counter()
    report = ingest(settings, [Path(args.folder)], source="bench", public=True, embedder=embedder)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "chunks": report.chunks, "added": report.added, "skipped": report.skipped,
                      "write_peak_rss_mb": peak["write"] / 2**20, "index_peak_rss_mb": peak["index"] / 2**20}))


def measure(script: Path, folder: Path, mode: str, embed: str, max_rss_gb: float) -> dict:
    import psutil

    with tempfile.TemporaryDirectory(prefix="kaizen-bench-") as data_dir:
        cmd = [sys.executable, str(script), "--child", "--folder", str(folder), "--data-dir", data_dir,
               "--mode", mode, "--embed", embed]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        killed = threading.Event()

        def watch() -> None:
            ps = psutil.Process(proc.pid)
            while proc.poll() is None:
                try:
                    if ps.memory_info().rss > max_rss_gb * 2**30:
                        killed.set()
                        proc.kill()
                        return
                except psutil.NoSuchProcess:
                    return
                time.sleep(0.2)

        threading.Thread(target=watch, daemon=True).start()
        started = time.perf_counter()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.returncode = os.waitstatus_to_exitcode(status)
    result = {"mode": mode, "peak_rss_mb": usage.ru_maxrss / 1024, "wall_s": wall}
    if killed.is_set():
        result["error"] = f"killed: RSS passed {max_rss_gb} GB"
    elif proc.returncode != 0:
        result["error"] = (err.strip().splitlines() or ["?"])[-1]
    else:
        result.update(json.loads(out.strip().splitlines()[-1]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 50], help="large file sizes in MB")
    parser.add_argument("--modes", nargs="+", default=["stream"], choices=["stream", "whole"])
    parser.add_argument("--embed", default="stub", choices=["stub", "real"])
    parser.add_argument("--max-rss-gb", type=float, default=3.0, help="kill a run whose RSS passes this")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="stream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    summary = []
    with tempfile.TemporaryDirectory(prefix="kaizen-bench-docs-") as tmp:
        for size in args.sizes:
            folder = Path(tmp) / f"docs-{size:g}mb"
            folder.mkdir()
            make_text(folder / "large.txt", size)
            (folder / "small.md").write_text("# Parking\n\nVisitors park in lot P7 next to the gate.\n")
            for mode in args.modes:
                r = measure(Path(__file__).resolve(), folder, mode, args.embed, args.max_rss_gb)
                print(json.dumps({"size_mb": size, "embed": args.embed, **r}), flush=True)
                status = r.get("error") or f"{r['chunks']} chunks, {len(r['added'])} files added"
                seconds = r.get("seconds", r["wall_s"])  # the ingest itself, without process start and model load
                phases = (f" [read/chunk/embed/write {r['write_peak_rss_mb']:.0f}MB, index build "
                          f"{r['index_peak_rss_mb']:.0f}MB]" if "write_peak_rss_mb" in r else "")
                summary.append(f"{size:g}MB {mode} peak_rss={r['peak_rss_mb']:.0f}MB{phases} time={seconds:.1f}s "
                               f"({status})")
            (folder / "large.txt").unlink()
    print("ingest_large: " + "; ".join(summary))


if __name__ == "__main__":
    main()
