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
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)
