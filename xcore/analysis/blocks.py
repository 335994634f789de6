"""Report blocks: how a job's summary and its reports reach people, whatever shows them.

A block is a line of text or a table ``{"title": str, "rows": [dict, ...]}`` (rows with the same keys). The CLI
renders blocks with rich; the Prefect artifact is :func:`markdown` of the same blocks. Blocks are plain values, so
they cross process boundaries.
"""

from __future__ import annotations

from typing import Any

Block = str | dict[str, Any]


def table(title: str, rows: list[dict[str, Any]]) -> Block:
    """A table block."""
    return {"title": title, "rows": rows}


def cell(v: Any) -> str:
    """One table cell as text: floats to 4 decimals, bytes as their length, long text cut at 80 characters."""
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    text = str(v)
    return text if len(text) <= 80 else text[:77] + "..."


def fmt(v: float | None) -> str:
    """A score to 3 decimals, ``n/a`` when absent."""
    return "n/a" if v is None else f"{v:.3f}"


def markdown(blocks: list[Block]) -> str:
    """The blocks as markdown: lines as list items, tables as pipe tables under a bold title."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, str):
            out.append(f"- {b}")
            continue
        rows = b.get("rows") or []
        out += ["", f"**{b.get('title', '')}**", ""]
        if not rows:
            out.append("(no rows)")
            continue
        cols = list(rows[0])
        out += ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"
