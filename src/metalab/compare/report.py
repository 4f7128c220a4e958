"""What metalab-compare writes: one self-contained, interactive HTML report (sortable tables,
Plotly figures with hover, zoom and legend toggles), which opens offline: Plotly's JavaScript is
embedded once in the page."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1240px; }}
h1 {{ font-size: 1.4em; word-break: break-all; }} h2 {{ font-size: 1.15em; margin-top: 1.6em; }}
p.summary {{ margin: 0.3em 0; }} p.warning {{ color: #a40; font-weight: bold; }}
div.scroll {{ overflow-x: auto; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }}
th {{ background: #f0f0f0; white-space: normal; max-width: 9em; vertical-align: bottom;
     cursor: pointer; user-select: none; }}
th[data-order=asc]::after {{ content: " ▲"; }} th[data-order=desc]::after {{ content: " ▼"; }}
td.label {{ text-align: left; }} td[title] {{ text-decoration: underline dotted; cursor: help; }}
tr.chosen td {{ background: #e8f4e8; font-weight: 600; }}
tbody tr:nth-child(even):not(.chosen) td {{ background: #fafafa; }}
ul.notes li {{ margin: 0.2em 0; }}
div.figures > div {{ display: inline-block; vertical-align: top; margin: 0 8px 8px 0; }}
</style>
<script>{plotly}</script>
</head>
<body>
{body}
<script>
// sortable tables: click a header to sort by it (numbers by value, text alphabetically)
function cellKey(cell) {{
  const text = cell.textContent.trim();
  const number = parseFloat(text.replace(/^[<>~≈]/, ""));
  return isNaN(number) ? text : number;
}}
document.querySelectorAll("table.sortable th").forEach((th, column) => {{
  th.addEventListener("click", () => {{
    const body = th.closest("table").tBodies[0];
    const ascending = th.dataset.order !== "asc";
    th.closest("tr").querySelectorAll("th").forEach(h => delete h.dataset.order);
    th.dataset.order = ascending ? "asc" : "desc";
    const rows = Array.from(body.rows).sort((a, b) => {{
      const x = cellKey(a.cells[column]), y = cellKey(b.cells[column]);
      const order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0)
                                           : (typeof x === "number" ? -1 : 1);
      return ascending ? order : -order;
    }});
    rows.forEach(row => body.appendChild(row));
  }});
}});
</script>
</body></html>
"""


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    hover: list[str] = field(default_factory=list)  # per row: full name of the row's label
    label_columns: tuple[int, ...] = (1,)  # left-aligned: the names of runs and groups
    highlight: int | None = None  # the row of the chosen group


@dataclass
class Section:
    heading: str
    figures: list  # plotly figures
    text: str = ""


def write_html(
    path: Path,
    title: str,
    summary: list[str],
    tables: list[Table],
    notes: list[str],
    sections: list[Section],
) -> None:
    from plotly.offline import get_plotlyjs

    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [
        f'<p class="{"warning" if line.startswith("WARNING") else "summary"}">'
        f"{html.escape(line)}</p>"
        for line in summary
    ]
    body += [table_html(t) for t in tables]
    if notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        body.append(f'<h2>Notes</h2><ul class="notes">{items}</ul>')
    for section in sections:
        if not section.figures:
            continue
        body.append(f"<h2>{html.escape(section.heading)}</h2>")
        if section.text:
            body.append(f"<p>{html.escape(section.text)}</p>")
        figures = [
            fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
            for fig in section.figures
        ]
        body.append(
            '<div class="figures">' + "".join(f"<div>{f}</div>" for f in figures) + "</div>"
        )
    # "</script" inside Plotly's code would end the script element early
    plotly = get_plotlyjs().replace("</script", "<\\/script")
    path.write_text(PAGE.format(title=html.escape(title), plotly=plotly, body="\n".join(body)))


def header_html(name: str) -> str:
    # long config keys and metric names wrap at their dots and slashes
    return html.escape(name).replace(".", ".<wbr>").replace("/", "/<wbr>")


def table_html(table: Table) -> str:
    head = "".join(f"<th>{header_html(h)}</th>" for h in table.header)
    rows = []
    for i, row in enumerate(table.rows):
        cells = []
        for j, cell in enumerate(row):
            attrs = ' class="label"' if j in table.label_columns else ""
            if j == table.label_columns[0] and i < len(table.hover):
                attrs += f' title="{html.escape(table.hover[i])}"'
            cells.append(f"<td{attrs}>{html.escape(cell)}</td>")
        chosen = ' class="chosen"' if i == table.highlight else ""
        rows.append(f"<tr{chosen}>{''.join(cells)}</tr>")
    return (
        f"<h2>{html.escape(table.title)}</h2>"
        f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
