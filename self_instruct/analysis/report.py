"""The report: one list of blocks (headings, paragraphs, tables, figures) rendered twice, as one
self-contained HTML page (figures inline as base64 PNG data URIs, no external reference) and as
markdown (figures as PNG files next to it, linked by relative name), so both show the same numbers.
Both escape every text they hold: it includes the model's words, which must never be read as HTML."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..store import write_bytes_atomic, write_json_atomic, write_text_atomic


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    align: str = ""  # one letter a column: "l" text, "r" number; default: first column text, others numbers

    def aligns(self) -> str:
        return (self.align or "l").ljust(len(self.headers), "r")


@dataclass
class Figure:
    name: str  # file name of the PNG next to report.md
    png: bytes
    alt: str


@dataclass
class Report:
    title: str
    blocks: list = field(default_factory=list)

    def h(self, text: str, level: int = 2) -> None:
        self.blocks.append(Heading(text, level))

    def p(self, text: str) -> None:
        self.blocks.append(Para(text))

    def table(self, headers: list[str], rows: list[list], align: str = "") -> None:
        self.blocks.append(Table(headers, [[str(c) for c in r] for r in rows], align))

    def figure(self, name: str, png: bytes, alt: str) -> None:
        self.blocks.append(Figure(name, png, alt))

    @property
    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]


# ---------------------------------------------------------------- number formatting


def fmt_int(x) -> str:
    return "–" if x is None else f"{int(x):,}"


def fmt_float(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def fmt_pct(x, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def fmt_usd(x) -> str:
    return "–" if x is None else f"${x:.4f}"


FORMATS = {"int": fmt_int, "f1": lambda x: fmt_float(x, 1), "f3": fmt_float, "pct": fmt_pct, "usd": fmt_usd}


def fmt(x, kind: str) -> str:
    return FORMATS[kind](x)


# ---------------------------------------------------------------- rendering

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #eee; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 4px 9px; vertical-align: top; }
th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
img { max-width: 100%; height: auto; display: block; margin: .8em 0; }
.note { color: #555; font-size: 14px; }
"""


def to_html(report: Report) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(report.title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(report.title)}</h1>",
    ]
    for b in report.blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f'<p class="note">{html.escape(b.text)}</p>')
        elif isinstance(b, Table):
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in b.headers) + "</tr>")
            for row in b.rows:
                cells = "".join(
                    f"<td>{html.escape(c)}</td>" if a == "l" else f'<td class="num">{html.escape(c)}</td>'
                    for a, c in zip(b.aligns(), row, strict=True)
                )
                out.append(f"<tr>{cells}</tr>")
            out.append("</table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.png).decode("ascii")
            out.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(b.alt)}">')
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _md_text(text: str) -> str:
    """Text as markdown shows it, never as HTML: model text such as ``<img src=x onerror=...>`` would
    run in a viewer that renders the HTML in markdown. Entities, since every renderer reads them."""
    return html.escape(text, quote=False)


def _md_cell(text: str) -> str:
    text = _md_text(text)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def to_markdown(report: Report) -> str:
    out = [f"# {_md_text(report.title)}", ""]
    for b in report.blocks:
        if isinstance(b, Heading):
            out += ["#" * b.level + " " + _md_text(b.text), ""]
        elif isinstance(b, Para):
            out += [_md_text(b.text), ""]
        elif isinstance(b, Table):
            out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
            out.append("|" + "|".join("---" if a == "l" else "---:" for a in b.aligns()) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
        elif isinstance(b, Figure):
            out += [f"![{_md_cell(b.alt)}]({b.name})", ""]
    return "\n".join(out)


_OUR_FIGURE = re.compile(r"(?:compare-|\d+-)?(?:lengths|verbs|seed_rouge|margins)\.png")


def write_report(report: Report, stats: dict, out_dir: str | Path) -> dict[str, str | list[str]]:
    """Write the figures, report.md, report.html and stats.json (each through a temporary file and a
    rename); returns their paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for fig in report.figures:
        write_bytes_atomic(out / fig.name, fig.png)
    write_text_atomic(out / "report.md", to_markdown(report))
    write_text_atomic(out / "report.html", to_html(report))
    write_json_atomic(out / "stats.json", stats)
    # Figures an earlier report left here (e.g. one made from more inputs) would be linked from
    # nowhere and mislead: remove ours that this report did not write.
    written = {f.name for f in report.figures}
    for old in out.glob("*.png"):
        if old.name not in written and _OUR_FIGURE.fullmatch(old.name):
            old.unlink()
    return {
        "html": str(out / "report.html"),
        "markdown": str(out / "report.md"),
        "stats": str(out / "stats.json"),
        "figures": [str(out / f.name) for f in report.figures],
    }
