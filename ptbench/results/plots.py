"""PNG plots for reports: lines with confidence bands, and annotated heatmaps.

The functions take plain numbers (means and interval ends already computed by `stats`), so
they know nothing about tasks or strategies and any report can use them. matplotlib is an
optional dependency (`pip install ptbench[plot]`): it is imported on first use, with the
file-only Agg backend, so that nothing here needs a display and the harness imports without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ptbench.errors import PtbenchError


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or a PtbenchError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise PtbenchError("plots need matplotlib: pip install 'ptbench[plot]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


@dataclass
class Line:
    """One line with its 95% band: y = mean, band from low to high (NaN: no band there)."""

    label: str
    x: Sequence[float]
    mean: Sequence[float]
    low: Sequence[float] | None = None
    high: Sequence[float] | None = None
    style: str = "-"
    marker: str | None = "o"


@dataclass
class LinePanel:
    title: str
    lines: list[Line]
    ylabel: str = ""
    hline: float | None = None  # a reference level (the baseline's accuracy, zero gain)


@dataclass
class HeatPanel:
    """values[i][j] is the cell at row label i, column label j (NaN: no data there).
    `marked` cells get a hatched outline (the negative-transfer region); `notes` is a second,
    smaller line of text per cell (the benign/harmful ratio, say); `split` is a boolean per
    cell, and a dashed line is drawn between cells on either side of it (a phase boundary)."""

    title: str
    values: np.ndarray
    marked: np.ndarray | None = None
    notes: list[list[str]] | None = None
    split: np.ndarray | None = None
    boundary: "Boundary | None" = None


BOUNDARY_COLORS = ("#111111", "#7a3b00")


@dataclass
class Boundary:
    """A fitted boundary drawn over a heatmap: the zero contour of `level` (and of `low` and
    `high`, its interval, dashed), all [len(ys), len(xs)] on a fine grid whose coordinates
    `xs`, `ys` are in cell units (column j spans j - 0.5 to j + 0.5)."""

    xs: np.ndarray
    ys: np.ndarray
    level: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    label: str = ""


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path


def line_panels(
    path: str | Path,
    panels: list[LinePanel],
    xlabel: str,
    title: str = "",
    columns: int | None = None,
    xticks: Sequence[float] | None = None,
    xscale: str = "linear",
    sharey: bool = True,
) -> Path:
    """Panels of lines with shaded 95% bands, one legend per panel."""
    plt = pyplot()
    columns = columns or len(panels)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows), sharey=sharey, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes.flat, panels):
        for i, line in enumerate(panel.lines):
            color = colors[i % len(colors)]
            x = np.asarray(line.x, dtype=float)
            ax.plot(x, np.asarray(line.mean, dtype=float), line.style, marker=line.marker, color=color, label=line.label, ms=4)
            if line.low is not None and line.high is not None:
                low, high = np.asarray(line.low, dtype=float), np.asarray(line.high, dtype=float)
                ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0)
        if panel.hline is not None:
            ax.axhline(panel.hline, color="0.4", lw=0.8, ls=":")
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_xscale(xscale)
        if xticks is not None:
            ax.set_xticks(list(xticks))
            if xscale == "log":  # the given ticks, written plainly, and no minor labels
                from matplotlib.ticker import NullFormatter, ScalarFormatter

                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(NullFormatter())
        if panel.ylabel:
            ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        if panel.lines:
            ax.legend(fontsize=7.5, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def heatmap_panels(
    path: str | Path,
    panels: list[HeatPanel],
    xlabel: str,
    ylabel: str,
    xticklabels: Sequence[str],
    yticklabels: Sequence[str],
    title: str = "",
    colorbar_label: str = "",
    mark_label: str = "",
    split_label: str = "",
) -> Path:
    """Annotated heatmaps on one diverging colour scale centred at zero (red: below zero)."""
    plt = pyplot()
    with plt.rc_context({"hatch.linewidth": 1.1}):  # hatching visible on dark cells too
        return _heatmaps(plt, path, panels, xlabel, ylabel, xticklabels, yticklabels, title, colorbar_label, mark_label, split_label)


def _heatmaps(plt, path, panels, xlabel, ylabel, xticklabels, yticklabels, title, colorbar_label, mark_label, split_label) -> Path:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    finite = [np.abs(p.values[np.isfinite(p.values)]) for p in panels]
    limit = 1.2 * (max((float(f.max()) for f in finite if f.size), default=1.0) or 1.0)  # no near-black extremes
    width = 1.0 * len(xticklabels) * len(panels) + 2.4
    height = 0.75 * len(yticklabels) + 2.2
    fig, axes = plt.subplots(1, len(panels), figsize=(width, height), squeeze=False, sharey=True, layout="constrained")
    image = None
    boundary_labels: list[str] = []
    for panel in panels:
        if panel.boundary is not None and panel.boundary.label not in boundary_labels:
            boundary_labels.append(panel.boundary.label)
    for k, (ax, panel) in enumerate(zip(axes.flat, panels)):
        values = np.asarray(panel.values, dtype=float)
        image = ax.imshow(np.ma.masked_invalid(values), cmap="RdBu", vmin=-limit, vmax=limit, origin="lower", aspect="auto")
        rows, cols = values.shape
        for i in range(rows):
            for j in range(cols):
                if not np.isfinite(values[i, j]):
                    ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="0.5")
                    continue
                marked = panel.marked is not None and bool(panel.marked[i, j])
                if marked:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="black", lw=1.8))
                strong = abs(values[i, j]) > 0.6 * limit
                box = dict(boxstyle="round,pad=0.15", facecolor="white", alpha=0.75, edgecolor="none") if marked else None
                color = "black" if marked or not strong else "white"
                ax.text(j, i + (0.13 if panel.notes else 0), f"{round(values[i, j], 1) + 0.0:+.1f}", ha="center", va="center",
                        fontsize=8.5, color=color, fontweight="bold", bbox=box)
                if panel.notes and panel.notes[i][j]:
                    ax.text(j, i - 0.22, panel.notes[i][j], ha="center", va="center", fontsize=6.5,
                            color="0.2" if marked or not strong else "white", bbox=box)
        if panel.boundary is not None:
            color = BOUNDARY_COLORS[boundary_labels.index(panel.boundary.label) % len(BOUNDARY_COLORS)]
            _draw_boundary(ax, panel.boundary, color)
        if panel.split is not None:
            split = np.asarray(panel.split, dtype=bool)
            for i in range(rows):
                for j in range(cols):
                    if j + 1 < cols and split[i, j] != split[i, j + 1]:
                        ax.plot([j + 0.5, j + 0.5], [i - 0.5, i + 0.5], color="0.1", ls="--", lw=2.2)
                    if i + 1 < rows and split[i, j] != split[i + 1, j]:
                        ax.plot([j - 0.5, j + 0.5], [i + 0.5, i + 0.5], color="0.1", ls="--", lw=2.2)
        ax.set_xlim(-0.5, cols - 0.5)
        ax.set_ylim(-0.5, rows - 0.5)
        ax.set_xticks(range(len(xticklabels)), list(xticklabels))
        ax.set_yticks(range(len(yticklabels)), list(yticklabels))
        ax.set_xlabel(xlabel)
        if k == 0:
            ax.set_ylabel(ylabel)
        ax.set_title(panel.title, fontsize=10)
    if image is not None:
        bar = fig.colorbar(image, ax=list(axes.flat), shrink=0.9, pad=0.02)
        bar.set_label(colorbar_label)
    handles = []
    if mark_label:
        handles.append(Patch(facecolor="none", edgecolor="black", hatch="//", label=mark_label))
    if split_label:
        handles.append(Line2D([0], [0], color="0.1", ls="--", lw=2.2, label=split_label))
    for i, label in enumerate(boundary_labels):
        if label:
            handles.append(Line2D([0], [0], color=BOUNDARY_COLORS[i % len(BOUNDARY_COLORS)], lw=2.4, label=label))
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 2), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)



def _draw_boundary(ax: Any, boundary: Boundary, color: str = BOUNDARY_COLORS[0]) -> None:
    """The zero contour of boundary.level (solid) and of its interval ends (dotted)."""
    X, Y = np.meshgrid(np.asarray(boundary.xs, dtype=float), np.asarray(boundary.ys, dtype=float))
    for z, style, width in ((boundary.level, "-", 2.4), (boundary.low, ":", 1.6), (boundary.high, ":", 1.6)):
        if z is None:
            continue
        z = np.asarray(z, dtype=float)
        if np.isfinite(z).any() and np.nanmin(z) < 0 < np.nanmax(z):
            ax.contour(X, Y, z, levels=[0.0], colors=[color], linestyles=[style], linewidths=[width])


@dataclass
class Point:
    """One estimate with its interval, at x (a position on the panel's axis)."""

    x: float
    y: float
    low: float
    high: float
    label: str = ""  # the series it belongs to (one legend entry per label)
    filled: bool = True  # False: drawn hollow (say, not significant)


@dataclass
class PointPanel:
    title: str
    points: list[Point]
    ylabel: str = ""
    xticks: Sequence[float] | None = None
    xticklabels: Sequence[str] | None = None
    hline: float | None = 0.0
    vlines: Sequence[float] = ()  # reference positions on x (a fitted threshold, say)


def point_panels(path: str | Path, panels: list[PointPanel], xlabel: str, title: str = "", columns: int | None = None,
                 xscale: str = "linear", sharey: bool = True, label_order: Sequence[str] | None = None) -> Path:
    """Estimates with error bars, one colour per label (the same in every panel, in
    `label_order` if given), hollow markers where not filled."""
    plt = pyplot()
    order = list(label_order) if label_order is not None else list(dict.fromkeys(p.label for panel in panels for p in panel.points))
    columns = columns or len(panels)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.8 * columns, 3.8 * rows), sharey=sharey, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes.flat, panels):
        present = {p.label for p in panel.points}
        labels = [label for label in order if label in present] + sorted(present - set(order))
        for label in labels:  # one errorbar call per (label, filled): fast with many points
            for filled in (True, False):
                pts = [p for p in panel.points if p.label == label and p.filled == filled]
                if not pts:
                    continue
                color = colors[(order.index(label) if label in order else len(order)) % len(colors)]
                err = [[max(p.y - p.low, 0.0) for p in pts], [max(p.high - p.y, 0.0) for p in pts]]
                ax.errorbar([p.x for p in pts], [p.y for p in pts], yerr=err, fmt="o", color=color,
                            mfc=color if filled else "white", ms=5, capsize=2.5, lw=1.1)
        for label in labels:
            ax.plot([], [], "o", color=colors[(order.index(label) if label in order else len(order)) % len(colors)], label=label)
        if panel.hline is not None:
            ax.axhline(panel.hline, color="0.4", lw=0.8, ls=":")
        for v in panel.vlines:
            ax.axvline(v, color="0.2", lw=1.2, ls="--")
        ax.set_xscale(xscale)
        if panel.xticks is not None:
            ax.set_xticks(list(panel.xticks))
            if panel.xticklabels is not None:
                ax.set_xticklabels(list(panel.xticklabels), fontsize=7.5, rotation=45 if len(panel.xticks) > 6 else 0)
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(xlabel)
        if panel.ylabel:
            ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3)
        if labels and any(labels):
            ax.legend(fontsize=7.5, loc="best")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


@dataclass
class Bar:
    label: str
    value: float
    low: float
    high: float
    hatched: bool = False  # e.g. the interval excludes 0 after correction


@dataclass
class BarPanel:
    title: str
    bars: list[Bar]
    ylabel: str = ""


def bar_panels(path: str | Path, panels: list[BarPanel], title: str = "", sharey: bool = True) -> Path:
    """Bars with error bars, one panel per group; the same label keeps its colour across panels."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(1.1 * max(len(p.bars) for p in panels) * len(panels) + 2.5, 4.2),
                             sharey=sharey, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    order = list(dict.fromkeys(b.label for p in panels for b in p.bars))
    for ax, panel in zip(axes.flat, panels):
        for i, bar in enumerate(panel.bars):
            color = colors[order.index(bar.label) % len(colors)]
            ax.bar(i, bar.value, color=color, alpha=0.85, hatch="//" if bar.hatched else None, edgecolor="black", lw=0.6)
            ax.errorbar([i], [bar.value], yerr=[[max(bar.value - bar.low, 0.0)], [max(bar.high - bar.value, 0.0)]],
                        fmt="none", color="black", capsize=3, lw=1)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xticks(range(len(panel.bars)), [b.label for b in panel.bars], rotation=35, ha="right", fontsize=8)
        ax.set_title(panel.title, fontsize=10)
        if panel.ylabel:
            ax.set_ylabel(panel.ylabel)
        ax.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save(fig, path)
