"""Regenerate the articles here from Debian's sqlite3-doc package (public domain, see README.md).

    cd /tmp && apt-get download sqlite3-doc && dpkg -x sqlite3-doc_*.deb /tmp/sqlite-doc
    .venv/bin/python bench/data/sqlite_docs/convert.py /tmp/sqlite-doc/usr/share/doc/sqlite3

Each page's navigation, table of contents and scripts are dropped; headings become '#' lines (section
numbers removed), code blocks fenced, the page title the first heading. Uses the project's own HTML reader for the rest.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from bs4 import BeautifulSoup

from core.rag.readers import _html_to_headed_text

PAGES = """
atomiccommit autoinc backup cpu datatype3 dbstat deterministic eqp expridx fasterthanfs flextypegood
floatingpoint foreignkeys gencol howtocorrupt inmemorydb isolation json1 lang_analyze lang_conflict
lang_datefunc lang_explain lang_indexedby lang_mathfunc lang_savepoint lang_transaction lang_vacuum limits
loadext lockingv3 mmap np1queryprob nulls printf psow queryplanner quirks recovery rowvalue rtree
serverless sharedcache sqlar sqldiff stricttables tempfiles threadsafe uri useovernet wal whentouse
withoutrowid zipfile csv series amalgamation howtocompile lang_keywords versionnumbers
""".split()


def convert(html: str) -> str:
    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup.select("div.nosearch, div.fancy_toc, script, style, button"):
        tag.decompose()
    for heading in soup.find_all(re.compile(r"^h[1-6]$")):
        for number in heading.find_all("span"):
            if re.fullmatch(r"\s*[\d.]+\s*", number.get_text()):
                number.decompose()
    for pre in soup.find_all("pre"):  # code: a fenced block, so '#include' is not taken for a heading
        pre.insert_before("\n```\n")
        pre.insert_after("\n```\n")
    _, text = _html_to_headed_text(str(soup))
    return f"# {title}\n\n{text}\n"


def main() -> None:
    source = Path(sys.argv[1])
    here = Path(__file__).resolve().parent / "articles"
    for page in PAGES:
        text = convert((source / f"{page}.html").read_text(encoding="utf-8"))
        (here / f"{page}.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
