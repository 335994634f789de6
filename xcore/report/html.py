"""Page assembly for ``xai report``: escaped text, tables from report blocks, images as base64 data URIs.

The page is one self-contained HTML file: a small inline style sheet, every image embedded as a ``data:`` URI, no
external URL and no JavaScript, so it opens offline and can be mailed or archived as it is. Table cells are
formatted as everywhere else (:func:`xcore.analysis.blocks.cell`: floats to 4 decimals) and carry their column
name in ``data-col``, so a reader (or a test) finds a column without parsing the header.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from xcore.analysis.blocks import Block, cell

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1200px;
       padding: 0 1em; color: #222; background: #fff; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd;
       padding-bottom: .2em; margin-top: 1.6em; } h3 { font-size: 1em; margin: 1em 0 .3em; }
table { border-collapse: collapse; margin: .4em 0 1em; } caption { text-align: left; font-weight: 600;
       padding: .2em 0; }
th, td { border: 1px solid #ddd; padding: .25em .55em; text-align: left; vertical-align: middle; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
dl.run { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1em; } dl.run dt { font-weight: 600; }
dl.run dd { margin: 0; word-break: break-all; }
table.grid td, table.grid th { text-align: center; padding: .2em; }
table.grid img { width: 128px; display: block; margin: auto; }
figure { display: inline-block; margin: .5em 1em .5em 0; vertical-align: top; } figure img { max-width: 100%; }
figcaption { font-size: .85em; color: #555; } p.note { color: #8a5a00; } ul.lines { padding-left: 1.2em; }
"""


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML elements and quoted attributes (``&``, ``<``, ``>``, quotes)."""
    return html.escape(str(value), quote=True)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    """``data:<mime>;base64,<data>``: the bytes embedded in the page."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def img(data: bytes, mime: str = "image/png", alt: str = "", title: str = "", cls: str = "") -> str:
    """An ``<img>`` whose source is ``data`` as a data URI."""
    extra = (f' title="{esc(title)}"' if title else "") + (f' class="{esc(cls)}"' if cls else "")
    return f'<img src="{data_uri(data, mime)}" alt="{esc(alt)}"{extra}>'


def figure(data: bytes, caption: str, mime: str = "image/png") -> str:
    """An embedded image with a caption."""
    return f"<figure>{img(data, mime, alt=caption)}<figcaption>{esc(caption)}</figcaption></figure>"


def _numeric(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def table_html(title: str, rows: Sequence[Mapping[str, Any]], cls: str = "") -> str:
    """One table block as ``<table>``: a caption, a header from the first row's keys, cells formatted by
    :func:`xcore.analysis.blocks.cell` (``None`` as an empty cell) with their column in ``data-col``."""
    klass = f' class="{esc(cls)}"' if cls else ""
    if not rows:
        return f"<p><strong>{esc(title)}</strong>: (no rows)</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f'<td data-col="{esc(c)}"{" class=num" if _numeric(r.get(c)) else ""}>'
                         f'{"" if r.get(c) is None else esc(cell(r.get(c)))}</td>' for c in cols) + "</tr>"
        for r in rows)
    return f"<table{klass}><caption>{esc(title)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def blocks_html(blocks: Iterable[Block], cls: str = "") -> str:
    """Report blocks (:mod:`xcore.analysis.blocks`) as HTML: consecutive lines as one list, tables as tables."""
    out: list[str] = []
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, str):
            lines.append(f"<li>{esc(b)}</li>")
            continue
        if lines:
            out.append(f'<ul class="lines">{"".join(lines)}</ul>')
            lines = []
        out.append(table_html(str(b.get("title", "")), b.get("rows") or [], cls))
    if lines:
        out.append(f'<ul class="lines">{"".join(lines)}</ul>')
    return "\n".join(out)


def definition_list(items: Mapping[str, Any]) -> str:
    """``<dl>`` of the non-empty ``items`` (the run's essentials)."""
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items.items() if v not in (None, "", [], {}))
    return f'<dl class="run">{rows}</dl>'


def note(text: str) -> str:
    """A one-line note (a section that could not be drawn, and why)."""
    return f'<p class="note">{esc(text)}</p>'


def section(title: str, body: str, ident: str = "") -> str:
    """A titled ``<section>`` (``id`` = ``ident`` when given)."""
    attr = f' id="{esc(ident)}"' if ident else ""
    return f"<section{attr}><h2>{esc(title)}</h2>\n{body}\n</section>"


def page(title: str, subtitle: str, sections: Iterable[str]) -> str:
    """The whole document: UTF-8, the inline style sheet, the title and the sections in order."""
    body = "\n".join(s for s in sections if s)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{esc(title)}</h1>\n<p>{esc(subtitle)}</p>\n{body}\n</body>\n</html>\n")
