"""The report's figures, drawn with matplotlib's Agg backend and returned as PNG bytes."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt
from matplotlib import colors as mcolors

DPI = 100


def _png(fig) -> bytes:
    buf = io.BytesIO()
    # No metadata: the same numbers give the same bytes.
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _edge_label(edges: list[float], clipped: bool) -> str:
    return f"(last bin: >= {edges[-2]:g})" if clipped else ""


def histograms(
    title: str,
    panels: list[tuple[str, list[float], list[tuple[str, list[int]]]]],
    *,
    xlabel: str,
    shares: bool = False,
    tail: bool = False,
) -> bytes:
    """One row of histogram panels. Each panel: (title, bin edges, [(series label, counts)]).

    A single series is drawn as bars; several are overlaid as step lines (as shares of each series'
    total when ``shares``, so that datasets of different sizes compare).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    for ax, (name, edges, series) in zip(axes[0], panels, strict=True):
        for k, (label, counts) in enumerate(series):
            total = sum(counts)
            values = [c / total for c in counts] if shares and total else counts
            if len(series) == 1:
                ax.hist(edges[:-1], bins=edges, weights=values, color="C0", edgecolor="white", linewidth=0.5)
            else:
                ax.stairs(values, edges, label=label, color=f"C{k % 10}", linewidth=1.6)
        ax.set_title(name, fontsize=11)
        ax.set_xlabel(f"{xlabel} {_edge_label(edges, tail)}".strip(), fontsize=9)
        ax.set_ylabel("share" if shares and len(series) > 1 else "count", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    return _png(fig)


def _lighter(color, amount: float) -> tuple:
    r, g, b, _ = mcolors.to_rgba(color)
    return (r + (1 - r) * amount, g + (1 - g) * amount, b + (1 - b) * amount, 1.0)


def _label_wedges(ax, wedges, labels: list[str], radius: float, min_degrees: float, fontsize: float) -> None:
    """Write each label along its wedge's middle, upright, when the wedge is wide enough."""
    for wedge, label in zip(wedges, labels, strict=True):
        span = wedge.theta2 - wedge.theta1
        if not label or span < min_degrees:
            continue
        angle = (wedge.theta1 + wedge.theta2) / 2
        x, y = radius * math.cos(math.radians(angle)), radius * math.sin(math.radians(angle))
        rotation = angle if -90 <= ((angle + 180) % 360) - 180 <= 90 else angle + 180
        ax.text(
            x,
            y,
            label,
            rotation=rotation,
            ha="center",
            va="center",
            fontsize=fontsize,
            rotation_mode="anchor",
        )


def verb_noun_sunburst(top: list[dict], title: str) -> bytes:
    """Two rings: the top verbs inside, each verb's top nouns outside (the rest of the verb's pairs
    are left as a pale gap, so each noun sits over its verb)."""
    fig, ax = plt.subplots(figsize=(9, 9))
    cmap = plt.get_cmap("tab20")
    inner_sizes, inner_colors, inner_labels = [], [], []
    outer_sizes, outer_colors, outer_labels = [], [], []
    for k, verb in enumerate(top):
        base = cmap(k % 20)
        inner_sizes.append(verb["count"])
        inner_colors.append(base)
        inner_labels.append(verb["verb"])
        shown = 0
        for j, noun in enumerate(verb["nouns"]):
            outer_sizes.append(noun["count"])
            outer_colors.append(_lighter(base, 0.25 + 0.12 * j))
            outer_labels.append(noun["noun"])
            shown += noun["count"]
        if verb["count"] > shown:
            outer_sizes.append(verb["count"] - shown)
            outer_colors.append((0.95, 0.95, 0.95, 1.0))
            outer_labels.append("")
    props = {"edgecolor": "white", "linewidth": 0.8}
    inner, _ = ax.pie(
        inner_sizes, radius=0.62, colors=inner_colors, startangle=90, counterclock=False,
        wedgeprops={**props, "width": 0.37},
    )  # fmt: skip
    outer, _ = ax.pie(
        outer_sizes, radius=1.0, colors=outer_colors, startangle=90, counterclock=False,
        wedgeprops={**props, "width": 0.38},
    )  # fmt: skip
    _label_wedges(ax, inner, inner_labels, 0.435, 4.0, 9)
    _label_wedges(ax, outer, outer_labels, 0.81, 2.5, 7.5)
    ax.set(aspect="equal")
    ax.set_title(title, fontsize=12)
    return _png(fig)


def margin_histogram(
    seed_margins: list[float], seed_labels: list[bool], run_margins: list[float], threshold: float
) -> bytes:
    """The seeds' yes-no margins by label, the run's margins, and the fitted threshold."""
    values = seed_margins + run_margins
    lo, hi = math.floor(min(values)), math.ceil(max(values))
    bins = max(10, min(40, int((hi - lo) * 4)))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    seeds_yes = [m for m, y in zip(seed_margins, seed_labels, strict=False) if y]
    seeds_no = [m for m, y in zip(seed_margins, seed_labels, strict=False) if not y]

    def step(margins: list[float], label: str, color: str, linestyle: str = "-") -> None:
        ax.hist(
            margins, bins=bins, range=(lo, hi), density=True, histtype="step", linewidth=1.6,
            label=label, color=color, linestyle=linestyle,
        )  # fmt: skip

    if seed_labels:
        step(seeds_yes, "seeds: classification", "C1")
        step(seeds_no, "seeds: other", "C0")
    else:
        step(seed_margins, "seeds", "C0")
    if run_margins:
        step(run_margins, "this run", "C2", "--")
    ax.axvline(threshold, color="black", linewidth=1.2, label=f"threshold {threshold:.2f}")
    ax.set_xlabel("log P(yes) - log P(no), first answer token", fontsize=9)
    ax.set_ylabel("density", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)
