"""Benchmark scripts write their tables into marked sections of shared Markdown files, so several scripts can
own parts of one file (``bundle/docs/results.md``) without overwriting each other."""

from __future__ import annotations

from pathlib import Path


def replace_marked_section(path: str | Path, name: str, text: str) -> Path:
    """Put ``text`` between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in ``path``.

    The markers are appended at the end when absent (the file is created if needed); everything outside
    them is kept byte for byte.
    """
    path = Path(path)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    doc = path.read_text() if path.is_file() else ""
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in doc and end in doc and doc.index(begin) < doc.index(end):
        head, rest = doc.split(begin, 1)
        doc = head + block + rest.split(end, 1)[1]
    else:
        doc = (doc.rstrip() + "\n\n" if doc.strip() else "") + block + "\n"
    path.write_text(doc)
    return path
