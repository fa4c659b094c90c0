"""A tiny document model rendered twice, to Markdown and to standalone HTML, so both reports
hold the same content without a Markdown library."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str  # `code` spans and [text](link) are the only markup


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass
class Figure:
    path: str  # relative to the report's folder
    caption: str


@dataclass
class Bullets:
    items: list[str] = field(default_factory=list)


Block = Heading | Para | Table | Figure | Bullets


def to_markdown(blocks: list[Block]) -> str:
    parts = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Para):
            parts.append(b.text)
        elif isinstance(b, Table):
            table = b.frame.to_markdown(index=False, disable_numparse=True) if not b.frame.empty else "(none)"
            parts.append(f"{table}\n\n*{b.caption}*" if b.caption else table)
        elif isinstance(b, Figure):
            parts.append(f"![{b.caption}]({b.path})\n\n*{b.caption}*")
        elif isinstance(b, Bullets):
            parts.append("\n".join(f"- {item}" for item in b.items))
    return "\n\n".join(parts) + "\n"


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}
figcaption,.caption{color:#555;font-size:.9em;font-style:italic}
code,pre{background:#f5f5f5;border-radius:3px}pre{padding:.6em;overflow-x:auto}"""


def to_html(blocks: list[Block], title: str, *, base: Path | None = None) -> str:
    """Standalone HTML; with ``base`` (the report's folder) figures are embedded as data URIs."""
    body = [_html_block(b, base) for b in blocks]
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _html_block(b: Block, base: Path | None) -> str:
    if isinstance(b, Heading):
        return f"<h{b.level}>{_inline(b.text)}</h{b.level}>"
    if isinstance(b, Para):
        return f"<p>{_inline(b.text)}</p>"
    if isinstance(b, Table):
        table = b.frame.to_html(index=False, border=0, escape=True) if not b.frame.empty else "<p>(none)</p>"
        return table + (f"<p class=\"caption\">{_inline(b.caption)}</p>" if b.caption else "")
    if isinstance(b, Figure):
        src = _data_uri(base / b.path) if base is not None else html.escape(b.path)
        return (f"<figure><img src=\"{src}\" alt=\"{html.escape(b.caption)}\">"
                f"<figcaption>{_inline(b.caption)}</figcaption></figure>")
    return "<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>"


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', text)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
