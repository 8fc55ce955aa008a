"""What every report page shares: the page itself, key figures, tables (plots are in :mod:`.plots`)."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from mithridate.data import atomic_path

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:3px 6px;text-align:left}
th{background:#f4f4f4}.kpi{display:inline-block;margin:0 2em .5em 0}.kpi b{font-size:1.5em;display:block}
.flag{color:#c0392b}img{max-width:100%}
"""


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def kpis(items: dict[str, object]) -> str:
    return "".join(f"<div class='kpi'><b>{html.escape(str(v))}</b>{html.escape(k)}</div>" for k, v in items.items())


def table(frame: pd.DataFrame, max_rows: int = 50) -> str:
    return frame.head(max_rows).to_html(index=False, escape=True, border=0)


def write_page(path: str | Path, text: str) -> Path:
    """Write a rendered page atomically (nothing half-written)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
