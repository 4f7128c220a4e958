"""The report's interactive figures (Plotly): learning curves by group (the mean over seeds with
a band for its 95% CI across seeds), per-episode scatter of the chosen group against each other
group, and an Optuna study's history and parameter-versus-objective plots."""

from __future__ import annotations

import warnings
from pathlib import Path

import plotly.graph_objects as go

from metalab.compare.groups import Comparison, Group, Pairing
from metalab.compare.statistics import t_ci95

CURVES = (
    "val/acc",
    "val/mse",
    "val/return",
    "val/loss",
    "train/acc",
    "train/mse",
    "train/return",
    "train/loss",
)
COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
LAYOUT = dict(
    width=600,
    height=400,  # two side by side at 1280 px
    margin=dict(l=60, r=20, t=40, b=100),
    template="plotly_white",
    hovermode="closest",
    title_font_size=14,  # the legend below: plots keep their width
    legend=dict(font=dict(size=11), orientation="h", yanchor="top", y=-0.22),
)


def color(i: int, alpha: float = 1.0) -> str:
    r, g, b = (int(COLORS[i % len(COLORS)][k : k + 2], 16) for k in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def seed_curve(group: Group, metric: str) -> tuple[list[float], list[float], list[float]]:
    """Steps every run of the group logged, the mean over seeds there and its 95% CI (t)."""
    points = [dict(r.curves.get(metric, [])) for r in group.runs]
    steps = sorted(set.intersection(*(set(p) for p in points)))
    stats = [t_ci95([p[s] for p in points]) for s in steps]
    return steps, [m for m, _ in stats], [h for _, h in stats]


def curve_figures(comparison: Comparison) -> list[go.Figure]:
    """One figure per learning curve some run has; one line per group (a band across seeds for
    groups of several seeds); click a legend entry to hide a group, drag to zoom."""
    figures = []
    for metric in CURVES:
        groups = [
            (i, g)
            for i, g in enumerate(comparison.groups)
            if all(r.curves.get(metric) for r in g.runs)
        ]
        if not groups:
            continue
        fig = go.Figure()
        for i, g in groups:
            steps, mean, half = seed_curve(g, metric)
            if g.seeds > 1:
                fig.add_trace(
                    go.Scatter(
                        x=steps,
                        y=[m + h for m, h in zip(mean, half)],
                        mode="lines",
                        line=dict(width=0),
                        legendgroup=g.label,
                        showlegend=False,
                        hoverinfo="skip",
                    )
                )
                fig.add_trace(
                    go.Scatter(
                        x=steps,
                        y=[m - h for m, h in zip(mean, half)],
                        mode="lines",
                        line=dict(width=0),
                        fill="tonexty",
                        fillcolor=color(i, 0.2),
                        legendgroup=g.label,
                        showlegend=False,
                        hoverinfo="skip",
                    )
                )
            name = f"{g.label} ({g.seeds} seeds)" if g.seeds > 1 else g.label
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=mean,
                    mode="lines+markers" if len(steps) <= 30 else "lines",
                    name=name,
                    legendgroup=g.label,
                    line=dict(color=color(i)),
                    customdata=[[h] for h in half],
                    hovertemplate=f"{g.label}<br>step %{{x}}<br>{metric} %{{y:.4g}}"
                    + (" ± %{customdata[0]:.2g}" if g.seeds > 1 else "")
                    + "<extra></extra>",
                )
            )
        fig.update_layout(title=metric, xaxis_title="step", yaxis_title=metric, **LAYOUT)
        figures.append(fig)
    return figures


def scatter_figures(comparison: Comparison) -> list[go.Figure]:
    """Per test episode, the chosen group's metric against each other group's (seed-averaged):
    dots above the diagonal are episodes where the chosen group did better (for accuracy)."""
    by_chosen: dict[int, list[Pairing]] = {}
    for pair in comparison.pairs:
        by_chosen.setdefault(id(pair.chosen), []).append(pair)
    index = {id(g): i for i, g in enumerate(comparison.groups)}
    figures = []
    for pairs in by_chosen.values():
        chosen, metric = pairs[0].chosen, pairs[0].metric
        fig = go.Figure()
        values = list(chosen.episodes)
        for pair in pairs:
            values += pair.other.episodes
            fig.add_trace(
                go.Scatter(
                    x=pair.other.episodes,
                    y=chosen.episodes,
                    mode="markers",
                    name=pair.other.label,
                    marker=dict(color=color(index[id(pair.other)], 0.75), size=7),
                    text=[f"episode {e}" for e in range(len(chosen.episodes))],
                    hovertemplate=f"%{{text}}<br>{pair.other.label}: %{{x:.4g}}<br>"
                    f"{chosen.label}: %{{y:.4g}}<extra></extra>",
                )
            )
        low, high = min(values), max(values)
        fig.add_trace(
            go.Scatter(
                x=[low, high],
                y=[low, high],
                mode="lines",
                name="equal",
                line=dict(color="#999", dash="dash"),
                hoverinfo="skip",
            )
        )
        fig.update_layout(
            title=f"test {metric} per episode: {chosen.label} against the others",
            xaxis_title=f"other group's {metric}",
            yaxis_title=f"{chosen.label}'s {metric}",
            **LAYOUT,
        )
        pad = (high - low) * 0.05 or 0.01
        fig.update_xaxes(range=[low - pad, high + pad])  # same ranges: the diagonal at 45 degrees
        fig.update_yaxes(range=[low - pad, high + pad])
        figures.append(fig)
    return figures


# -- Optuna --------------------------------------------------------------------------------------
def study_storages(folders: list[Path]) -> list[Path]:
    """Optuna storages in the folders given (the sweep folder holds optuna.db, or an
    optuna.journal file)."""
    found = []
    for folder in folders:
        for name in ("optuna.db", "optuna.journal"):
            if (folder / name).is_file():
                found.append(folder / name)
    return found


def open_storage(path: Path):
    import optuna

    if path.suffix == ".journal":
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return optuna.storages.RDBStorage(
        f"sqlite:///{path}", skip_compatibility_check=True, skip_table_creation=True
    )


def study_figures(folders: list[Path]) -> tuple[list[go.Figure], list[str]]:
    """Each study's optimisation history and objective against each parameter, drawn by
    Optuna's own plotting functions; a storage Optuna cannot read is a note, not an error."""
    figures, notes = [], []
    storages = study_storages(folders)
    if not storages:
        return figures, notes
    try:
        import optuna
    except ImportError:
        return figures, [f"{storages[0]}: install optuna to plot the study"]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # deprecations in studies of older Optunas
        warnings.simplefilter("ignore")
        for path in storages:
            figures += study_plots(path, notes)
    return figures, notes


def study_plots(path: Path, notes: list[str]) -> list[go.Figure]:
    import optuna

    figures = []
    try:
        storage = open_storage(path)
        studies = [
            optuna.load_study(study_name=name, storage=storage)
            for name in optuna.study.get_all_study_names(storage)
        ]
    except Exception as err:  # an unreadable or foreign file: say so, go on
        notes.append(
            f"{path}: no Optuna study read ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        )
        return figures
    for study in studies:
        name = study.study_name
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done or len(study.directions) > 1:
            continue
        for fig in (
            optuna.visualization.plot_optimization_history(study),
            optuna.visualization.plot_slice(study),
        ):
            fig.update_layout(title=f"study {name}: {fig.layout.title.text}", **LAYOUT)
            figures.append(fig)
        others = len(study.trials) - len(done)
        if others:
            notes.append(
                f"study {name}: {len(done)} complete trials plotted, {others} "
                "failed, pruned or unfinished left out"
            )
    return figures
