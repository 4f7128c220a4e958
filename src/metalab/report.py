"""What metalab-compare writes: learning-curve plots (PNG) and one self-contained HTML report
(tables, notes and the plots embedded), readable in a browser offline."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402

from metalab.records import RunRecord  # noqa: E402

CURVES = ("val/acc", "val/mse", "val/loss", "train/acc", "train/mse", "train/loss")
MAX_LEGEND = 12  # runs; a legend of more hides the curves

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0 2em; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; white-space: nowrap; }}
th {{ background: #f0f0f0; }} td.name {{ text-align: left; }}
div.scroll {{ overflow-x: auto; }}
tr:nth-child(even) td {{ background: #fafafa; }}
img {{ max-width: 100%; }} figure {{ display: inline-block; margin: 0 1em 1em 0; }}
</style></head>
<body>
{body}
</body></html>
"""


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]


def plot_curves(records: list[RunRecord], out_dir: Path) -> list[Path]:
    """One PNG per learning curve that some run has, one line per run."""
    paths = []
    for metric in CURVES:
        runs = [r for r in records if r.curves.get(metric)]
        if not runs:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for run in runs:
            steps, values = zip(*run.curves[metric])
            ax.plot(steps, values, marker="o" if len(steps) <= 20 else None, label=run.name)
        ax.set(xlabel="step", ylabel=metric, title=metric)
        ax.grid(alpha=0.3)
        if len(runs) <= MAX_LEGEND:
            ax.legend(fontsize="small")
        path = out_dir / f"curves_{metric.replace('/', '_')}.png"
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def write_html(path: Path, title: str, tables: list[Table], notes: list[str],
               images: list[Path]) -> None:
    body = [f"<h1>{html.escape(title)}</h1>", *(table_html(t) for t in tables)]
    if notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        body.append(f"<h2>Notes</h2><ul>{items}</ul>")
    if images:
        body.append("<h2>Learning curves</h2>")
    for image in images:
        data = base64.b64encode(image.read_bytes()).decode("ascii")
        body.append(f'<figure><img alt="{html.escape(image.stem)}" '
                    f'src="data:image/png;base64,{data}"></figure>')
    path.write_text(PAGE.format(title=html.escape(title), body="\n".join(body)))


def table_html(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    kinds = ['class="name"' if h.endswith("run") else "" for h in table.header]  # run names
    rows = "".join("<tr>" + "".join(f"<td {k}>{html.escape(c)}</td>" for k, c in zip(kinds, row))
                   + "</tr>" for row in table.rows)
    return (f'<h2>{html.escape(table.title)}</h2>'
            f'<div class="scroll"><table><tr>{head}</tr>{rows}</table></div>')
