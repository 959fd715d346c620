"""The paper report's analysis sections (5 to 10), the verdicts on the paper's claims, and
paper.json: rendered from what `paper_claims` and `paper_scalars` compute. Every sentence is
filled in from the numbers; an effect is stated only where Holm's correction over its family
rejects zero (and quoted with the Holm step-down interval), "no effect" only where a TOST
with the stated margin shows equivalence; otherwise the text says the data cannot tell."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from ptbench.results import plots

from . import paper_claims as pc
from . import paper_scalars as ps
from .paper_claims import MARGIN_GAIN, MARGIN_SCRATCH, NAMES, Tested, num, p_text, pp

PLOT_DIR = "plots"


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    def esc(value: Any) -> str:
        return str(value).replace("|", "\\|")

    return tabulate([[esc(v) for v in row] for row in rows], headers=[esc(h) for h in headers], tablefmt="pipe", disable_numparse=True)


def _pp_num(x: float) -> str:
    return f"{round(x * 100, 1) + 0.0:+.1f}"


def _shown(t: Tested) -> str:
    """'+1.2 pp [0.3, 2.1] (Holm p 0.01)' with the Holm interval."""
    return f"{pp(t.interval or t.raw)} (Holm p {p_text(t.p_holm)})"


# --------------------------------------------------------------------------- statistics note


def statistics_note(n_test: int) -> list[str]:
    return [
        "**How the numbers are tested.** Seeds are the replicates. Multiple testing is corrected by **Holm's step-down "
        "procedure** (family-wise error 5%) over the cells of each figure and over the contrasts of each claim; "
        "Benjamini-Hochberg q-values (false discovery rate) are given alongside in the heatmap tables and the claims table. An effect is stated only where Holm "
        "rejects zero, and the interval quoted with it is the Holm step-down interval (the t interval at the level that "
        "Holm's step used, so it excludes zero exactly when Holm rejects); tables show per-cell 95% t intervals. "
        f"\"No effect\" or \"equal\" is said only after a TOST (two one-sided t tests at 5%) with margin ±{MARGIN_GAIN * 100:g} pp "
        f"for gains (±{MARGIN_SCRATCH * 100:g} pp for scratch accuracies); where neither test decides, the text says so. "
        f"Incidence is below/tied/above: seeds more than one test example (of {n_test}) below scratch, within one, above.",
        "",
    ]


# --------------------------------------------------------------------------- 5. directional claims


def claims_section(claims: list[pc.Claim], number: int) -> list[str]:
    lines = [f"## {number}. The directional claims, contrast by contrast", ""]
    if not any(c.contrasts for c in claims):
        return lines + ["No grid in the store varies n_source, source noise, the fraction or |u| (target fixed) with the rest held.", ""]
    lines += [
        "A contrast is the paired per-seed change of the gain along one factor with everything else (task, fraction, mode) "
        "held. The primary test of a claim takes each such line from its lowest to its highest level (Holm over the claim's "
        "lines); the adjacent-level steps, with their own Holm family, say where along the axis the change happens. "
        "'Claimed direction' is the paper's.",
        "",
    ]
    body = []
    for claim in claims:
        if not claim.contrasts:
            continue
        bh_up = sum(t.q_bh < 0.05 and t.test.mean > 0 for t in claim.ends)
        bh_down = sum(t.q_bh < 0.05 and t.test.mean < 0 for t in claim.ends)
        body.append([claim.text, len(claim.ends), len(claim.supported), len(claim.reversed),
                     len(claim.ends) - len(claim.supported) - len(claim.reversed), f"{bh_up} / {bh_down}",
                     f"{len(claim.steps_supported)} / {len(claim.steps_reversed)} of {len(claim.steps)}"])
    lines += [_table(body, ["claim", "lines (lowest → highest)", "claimed direction (Holm)", "reversed (Holm)", "neither",
                            "BH 5%: claimed / reversed", "adjacent steps (Holm): claimed / reversed"]), ""]
    for claim in claims:
        if not claim.contrasts:
            continue
        lines += [claim_sentence(claim), ""]
        rev = claim.reversed + claim.steps_reversed
        if rev:
            varying = pc.claim_varying(claim)
            rows = [[("end to end" if t in claim.reversed else "step"), pc.contrast_where(t, varying),
                     f"{num(t.info['from'])} → {num(t.info['to'])}", pp(t.interval), p_text(t.p_holm)]
                    for t in sorted(claim.reversed, key=lambda t: t.test.mean) + sorted(claim.steps_reversed, key=lambda t: t.test.mean)]
            lines += [f"Every significant reversal of “{claim.text}” (change of the gain, Holm interval of its family):", "",
                      _table(rows, ["test", "where", NAMES.get(claim.axis, claim.axis), "change of the gain", "Holm p"]), ""]
    return lines


def claim_sentence(claim: pc.Claim) -> str:
    n, sup, rev = len(claim.ends), claim.supported, claim.reversed
    axis = NAMES.get(claim.axis, claim.axis)
    varying = pc.claim_varying(claim)
    text = f"**Result:** “{claim.text}”: of {n} lines along {axis} (lowest → highest level), {len(sup)} go the claimed way beyond chance"
    if sup:
        best = max(sup, key=lambda t: t.test.mean)
        text += f" (largest: {_shown(best)}, {pc.contrast_where(best, varying)}, {num(best.info['from'])} → {num(best.info['to'])})"
    if rev:
        worst = min(rev, key=lambda t: t.test.mean)
        text += (f" and {len(rev)} go significantly against it ({_summarise_where(rev, varying)}; the largest reversal is {_shown(worst)} at "
                 f"{pc.contrast_where(worst, varying)}, {num(worst.info['from'])} → {num(worst.info['to'])})")
    else:
        text += "; none goes significantly against it"
    srev = claim.steps_reversed
    text += (f". Of {len(claim.steps)} adjacent steps, {len(claim.steps_supported)} go the claimed way and {len(srev)} significantly against it"
             + (f" ({_summarise_where(srev, varying)})" if srev else "")
             + ("; every significant reversal is listed below" if rev or srev else ""))
    return text + "."


def _summarise_where(items: list[Tested], varying: list[str]) -> str:
    """Which values of the varying factors the reversals occur at, e.g. '|u| in {0.25, 0.5}'."""
    parts = []
    for col in varying:
        values = sorted({t.info["row"][col] for t in items if t.info["axis"] != col and col in t.info["row"]}, key=lambda v: (v is None, v))
        if values and col == "p_shared":
            parts.append(f"|u| in {{{', '.join(num(v) for v in values)}}}")
    modes = sorted({"frozen" if t.info["freeze"] else "fine-tuned" for t in items})
    parts.append(" and ".join(modes))
    return ", ".join(parts)


# --------------------------------------------------------------------------- 6. candidate scalars


def scalars_section(fits: dict, number: int, out: Path, written: list[Path]) -> list[str]:
    lines = [f"## {number}. Candidate scalars for the sign and size of the gain", ""]
    if not any(mf.fits for mf in fits.values()):
        return lines + ["Too few transfer cells in the store to fit a scalar.", ""]
    lines += [
        "Each candidate S is fitted to every seed's paired gain of the paper's transfer (`partial-filters`, fraction > 0; "
        "frozen fraction 1 trains nothing and is left out): the sign (ties of one test example dropped) by a binomial logistic "
        "regression on log S, the size by an isotonic regression on log S. A free constant c is fitted by profile likelihood on "
        f"a grid ({ps.C_GRID[0]:g} to {ps.C_GRID[-1]:g}) and refitted in every cross-validation fold. 'CV accuracy' is the "
        "share of seeds whose sign is predicted right when their cell (task, strategy) is left out of the fit. The ceiling "
        "is a logistic model with every factor as its own covariate; 'per-cell majority' is the best any function of the "
        "cell can do. The likelihood-ratio test compares the candidate with the model that adds every factor to it: a small "
        "p says the factors carry sign information the scalar does not. Threshold intervals: cluster bootstrap over cells "
        f"({ps.BOOTSTRAP} resamples, generator derived from (0, 'paper-threshold-MODE-KEY'), c held).",
        "",
    ]
    for frozen, mf in fits.items():
        if not mf.fits:
            continue
        c = mf.ceiling
        body = []
        for s in sorted(mf.fits, key=lambda s: -s.cv_accuracy):
            low, high = s.threshold_interval
            body.append([
                ("**" if s is mf.best else "") + s.candidate.key + ("**" if s is mf.best else ""), s.candidate.formula,
                f"{s.c:.3g}" if s.candidate.free else "–", f"{s.coef[1]:+.2f}",
                f"{s.threshold:.3g} [{low:.3g}, {high:.3g}]", f"{s.accuracy * 100:.1f}", f"{s.cv_accuracy * 100:.1f}",
                f"{s.lrt:.0f} ({s.lrt_df}), p {p_text(s.lrt_p)}", f"{s.r2:.2f} / {s.cv_r2:.2f}",
            ])
        if c is not None:
            body.append(["full factor", "every factor separately", "–", "–", "–", f"{c.accuracy * 100:.1f}", f"{c.cv_accuracy * 100:.1f}", "–",
                         f"{c.r2_cells:.2f} (cell means)"])
            body.append(["per-cell majority", "–", "–", "–", "–", f"{c.saturated_accuracy * 100:.1f}", "–", "–", "–"])
        lines += [f"**{mf.mode.capitalize()}** ({len(mf.cells)} cells, {int(mf.cells.n.sum())} seeds with a sign):", "",
                  _table(body, ["candidate", "S", "c", "slope on log S", "threshold S* [95%]", "sign acc. %", "CV acc. %",
                                "LRT vs +all factors (df)", "size R² / CV R²"]), ""]
        lines += [scalar_sentence(mf), ""]
    lines += [_candidate_notes(), ""]
    return lines


def scalar_sentence(mf: ps.ModeFits) -> str:
    best, c = mf.best, mf.ceiling
    r = mf.get("R")
    text = (f"**Result:** {mf.mode}, the best single scalar is {best.candidate.key} = {best.candidate.formula}"
            + (f" with c = {best.c:.3g}" if best.candidate.free else "")
            + f": it classifies {best.cv_accuracy * 100:.1f}% of seeds' signs right out of sample")
    if r is not None and r is not best:
        text += f", against {r.cv_accuracy * 100:.1f}% for Kou et al.'s source ratio R"
    if c is not None:
        text += (f"; every factor separately reaches {c.cv_accuracy * 100:.1f}% and no function of the cell more than "
                 f"{c.saturated_accuracy * 100:.1f}%")
        gap = c.saturated_accuracy - best.cv_accuracy
        text += (f", so one scalar leaves {gap * 100:.1f} points of the explainable sign accuracy on the table")
    if best.lrt_df:
        if best.lrt_p < 0.05:
            text += (f". The factors still carry sign information beyond it (likelihood ratio {best.lrt:.0f} on {best.lrt_df} df, "
                     f"p {p_text(best.lrt_p)}): no candidate is a sufficient statistic for the sign")
        else:
            text += f". The factors add nothing significant to it (likelihood ratio {best.lrt:.0f} on {best.lrt_df} df, p {p_text(best.lrt_p)})"
    text += (f". For the size of the gain, the isotonic fit on log {best.candidate.key} explains {best.cv_r2 * 100:.0f}% of the per-seed "
             f"variance out of sample" + (f" (cell means explain {c.r2_cells * 100:.0f}%)" if c is not None else ""))
    return text + "."


def _candidate_notes() -> str:
    rows = [f"{c.key}: {c.why}." for c in ps.CANDIDATES]
    return "Candidates: " + " ".join(rows) + " (|v1_perp|² = |v1|²(1 − overlap²); <μ₁, μ₂> = |u|² + overlap·|v1||v2|.)"


# --------------------------------------------------------------------------- 7. iso-scalar families


def families_section(df: pd.DataFrame, fits: dict, number: int, out: Path, written: list[Path]) -> tuple[list[str], dict]:
    title = f"## {number}. Iso-scalar families with the target held fixed"
    key, c = ps.DESIGN
    design = ps.BY_KEY[key]
    summary: dict[str, Any] = {}
    groups = []
    for frozen, mode in pc.MODES:
        mf = fits.get(frozen)
        others = {}
        if mf is not None and mf.best is not None:
            best = mf.best
            others[best.candidate.key] = (lambda b: (lambda f: b.scalar(f)))(best)
        fam = pc.build_families(df, frozen, lambda f: design(f, c), mode, ps.FAMILY_TOLERANCE, others=others)
        groups.append((f"{key} (c = {c:g}), {mode}", mode, fam, f"{key}"))
        if mf is not None and mf.best is not None and (mf.best.candidate.key != key or abs(mf.best.c - c) > 1e-9):
            best = mf.best
            fam_best = pc.build_families(df, frozen, best.scalar, mode, ps.FAMILY_TOLERANCE)
            groups.append((f"{best.candidate.key}" + (f" (c = {best.c:.3g})" if best.candidate.free else "") + f", {mode} (best fit)", mode, fam_best, best.candidate.key))
    all_fams = [f for _, _, fams, _ in groups for f in fams]
    if not all_fams:
        return [title, "", "No set of at least four cells with equal scalar, equal target and different |u| in the store.", ""], summary
    pc.correct_families(all_fams)
    lines = [title, "",
             f"A family is a set of cells with the same target (|μ₂|, n_target, σ_p2, label flip, d, overlap) whose scalar agrees within "
             f"{ps.FAMILY_TOLERANCE * 100:g}% (relative) while |u|, α, n_source and σ_p1 differ. The suite's designed families hold "
             f"{key} = {design.formula} at c = {c:g} fixed (the pilot's best for frozen transfer); families of the best fitted scalar of "
             "each mode are formed the same way from all cells. In each family: scratch accuracy must be equal (TOST, "
             f"±{MARGIN_SCRATCH * 100:g} pp), and if the scalar governs the gain, the gain must not vary (one-way random-effects F test; "
             f"equivalence of every pair by TOST at ±{MARGIN_GAIN * 100:g} pp), and the sign must flip at one threshold across families. "
             "Signs per cell: + / − Holm over all family cells, 0 equivalent to zero by TOST, ? neither.", ""]
    panels = []
    for index, (name, mode, fams, skey) in enumerate(groups):
        if not fams:
            lines += [f"**{name}**: no family of at least four cells.", ""]
            continue
        summary_rows = []
        for fam in fams:
            us = [c.row["p_shared"] for c in fam.cells]
            gains = [c.tested.test.mean for c in fam.cells]
            summary_rows.append([f"{fam.value:.3g}", len(fam.cells), f"{num(min(us))}–{num(max(us))}",
                                 f"{_pp_num(min(gains))} to {_pp_num(max(gains))}", "".join(fam.verdicts),
                                 p_text(fam.anova.p), f"{fam.anova.between_sd * 100:.1f}" if math.isfinite(fam.anova.between_sd) else "n/a",
                                 "yes" if fam.gain_equal else "no", "yes" if fam.scratch_equal else "no"])
        lines += [f"**{name}**:", "", _table(summary_rows, [skey, "cells", "|u|", "gains (pp)", "signs", "F test p",
                                                            "between-cell SD (pp)", "gains equal (TOST)", "scratch equal (TOST)"]), ""]
        designed = index < 2 * len(pc.MODES) and name.startswith(f"{key} (c = {c:g})")
        if designed:
            body = []
            for fam in fams:
                for cell in fam.cells:
                    row = cell.row
                    t = cell.tested
                    body.append([f"{fam.value:.3g}", num(row["p_shared"]), num(row["fraction"]), num(row["p_n_source"]),
                                 num(row["p_source_noise"]), num(row["p_specific"]), f"{cell.scratch.mean() * 100:.1f}",
                                 f"{pp(t.raw)}", pc.cell_verdict(t), t.inc.fmt()])
            lines += [f"<details><summary>every cell of the {name} families</summary>", "",
                      _table(body, [f"{skey}", "|u|", "α", "n_source", "σ_p1", "|v₁|", "scratch %", "Δ [95% CI]", "sign", "below/tied/above"]),
                      "", "</details>", ""]
        lines += [family_sentence(name, fams), ""]
        flips, why = pc.one_threshold(fams)
        summary[name] = {
            "families": [{"value": fam.value, "cells": len(fam.cells), "sign": fam.sign, "anova_p": fam.anova.p,
                          "between_sd_pp": fam.anova.between_sd * 100 if math.isfinite(fam.anova.between_sd) else None,
                          "gain_equal": fam.gain_equal, "scratch_equal": fam.scratch_equal} for fam in fams],
            "one_threshold": flips, "why": why,
        }
        points = []
        for i, fam in enumerate(fams):
            for j, cell in enumerate(fam.cells):
                t = cell.tested
                offset = (j - (len(fam.cells) - 1) / 2) * min(0.08, 0.7 / max(len(fam.cells), 1))
                points.append(plots.Point(i + offset, t.test.mean * 100, t.raw.low * 100, t.raw.high * 100,
                                          f"|u|={num(cell.row['p_shared'])}", filled=t.up or t.down))
        panels.append(plots.PointPanel(name, points, ylabel="gain over scratch (pp), 95% CI", xticks=list(range(len(fams))),
                                       xticklabels=[f"{fam.value:.3g}" for fam in fams]))
    if panels:
        path = plots.point_panels(out / PLOT_DIR / "paper-families.png", panels, "family (its scalar value)",
                                  "Iso-scalar families, target fixed: one point per cell (filled: Holm-significant gain)",
                                  columns=min(2, len(panels)), sharey=False,
                                  label_order=[f"|u|={num(u)}" for u in sorted(df["p_shared"].dropna().unique())])
        written.append(path)
        lines[2:2] = [f"![iso-scalar families]({PLOT_DIR}/{path.name})", ""]
    return lines, summary


def family_sentence(name: str, fams: list[pc.Family]) -> str:
    parts = []
    for fam in fams:
        gains = [c.tested.test.mean for c in fam.cells]
        scratch = (f"scratch equal within ±{MARGIN_SCRATCH * 100:g} pp (TOST; {fam.scratch_range[0] * 100:.1f} to {fam.scratch_range[1] * 100:.1f}%)"
                   if fam.scratch_equal else f"scratch not shown equal ({fam.scratch_range[0] * 100:.1f} to {fam.scratch_range[1] * 100:.1f}%)")
        if fam.gain_equal:
            gain = f"the gain is equal within ±{MARGIN_GAIN * 100:g} pp in every pair (TOST)"
        elif fam.anova.p < 0.05:
            gain = (f"the gain varies (F test p {p_text(fam.anova.p)}, between-cell SD {fam.anova.between_sd * 100:.1f} pp against "
                    f"{fam.anova.within_sd * 100:.1f} pp between seeds)")
        else:
            gain = f"the gain shows no significant variation (F test p {p_text(fam.anova.p)}) but equivalence is not shown either"
        others = "".join(f"; {k} spans {lo:.3g} to {hi:.3g} here" for k, (lo, hi) in fam.other_values.items() if k not in name)
        parts.append(f"at {fam.value:.3g} ({len(fam.cells)} cells, |u| {num(min(c.row['p_shared'] for c in fam.cells))} to "
                     f"{num(max(c.row['p_shared'] for c in fam.cells))}): gains {_pp_num(min(gains))} to {_pp_num(max(gains))} pp, "
                     f"signs {''.join(fam.verdicts)}; {scratch}; {gain}{others}")
    flips, why = pc.one_threshold(fams)
    verdict = "The sign flips at one threshold across these families" if flips else "The sign does not flip at one threshold across these families"
    return f"**Result:** {name}: " + "; ".join(parts) + f". {verdict} ({why})."


# --------------------------------------------------------------------------- 8. every other factor


def factors_section(sweeps: list[pc.FactorSweep], number: int, out: Path, written: list[Path]) -> list[str]:
    title = f"## {number}. Every other factor, one at a time"
    if not sweeps:
        return [title, "", "No sweep of |v₁|, n_target, σ_p2, label flip or overlap with three or more levels in the store.", ""]
    lines = [title, ""]
    panels = []
    for sweep in sweeps:
        name = NAMES.get(sweep.axis, sweep.axis)
        plot_lines = []
        for freeze, mode in pc.MODES:
            for u in sweep.shared:
                xs = [lv for lv in sweep.levels if (freeze, u, lv) in sweep.cells]
                if not xs:
                    continue
                ts = [sweep.cells[(freeze, u, lv)] for lv in xs]
                plot_lines.append(plots.Line(f"|u|={num(u)}, {mode}", xs, [t.test.mean * 100 for t in ts], [t.raw.low * 100 for t in ts],
                                             [t.raw.high * 100 for t in ts], style="--" if freeze else "-"))
        panels.append(plots.LinePanel(name, plot_lines, ylabel="gain over scratch (pp)", hline=0.0))
    path = plots.line_panels(out / PLOT_DIR / "paper-factors.png", panels, "factor level",
                             "Gain over scratch against each remaining factor (α = 0.5; 95% bands; dashed: frozen)",
                             columns=min(3, len(panels)), sharey=False)
    written.append(path)
    lines += [f"![gain against every other factor]({PLOT_DIR}/{path.name})", ""]
    for sweep in sweeps:
        name = NAMES.get(sweep.axis, sweep.axis)
        body = []
        for u in sweep.shared:
            for lv in sweep.levels:
                if (False, u, lv) not in sweep.cells and (True, u, lv) not in sweep.cells:
                    continue
                row = [num(u), num(lv), sweep.scratch[(u, lv)].fmt() if (u, lv) in sweep.scratch else "n/a"]
                for freeze, _ in pc.MODES:
                    t = sweep.cells.get((freeze, u, lv))
                    row.append("n/a" if t is None else f"{t.raw.fmt(signed=True)}{'*' if t.up or t.down else ''} ({t.inc.fmt()})")
                body.append(row)
        lines += [f"**{name}** (everything else at the base; Δ [95% CI], * Holm over the figure; below/tied/above):", "",
                  _table(body, ["|u|", name, "scratch acc %", "Δ fine-tuned (pp)", "Δ frozen (pp)"]), ""]
        lines += [factor_sentence(sweep), ""]
    return lines


def factor_sentence(sweep: pc.FactorSweep) -> str:
    name = NAMES.get(sweep.axis, sweep.axis)
    parts = []
    for (freeze, u), t in sorted(sweep.ends.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        mode = "frozen" if freeze else "fine-tuned"
        where = f"|u|={num(u)} {mode}"
        change = f"{name} {num(t.info['from'])} → {num(t.info['to'])}"
        if t.up or t.down:
            parts.append(f"at {where}, {change} {'raises' if t.up else 'lowers'} the gain by {_shown(t)}")
        elif sweep.ends_tost[(freeze, u)].shown():
            parts.append(f"at {where}, {change} leaves the gain unchanged within ±{MARGIN_GAIN * 100:g} pp (TOST p {p_text(sweep.ends_tost[(freeze, u)].p)})")
        else:
            parts.append(f"at {where}, {change} changes the gain by {pp(t.interval)}: not significant, and equivalence is not shown")
    signs = {}
    for (freeze, u, lv), t in sweep.cells.items():
        signs.setdefault((freeze, u), set()).add(pc.cell_verdict(t))
    flips = [(f, u) for (f, u), v in signs.items() if "+" in v and "−" in v]
    text = f"**Result:** {name} (end to end, Holm over the figure's end-to-end contrasts): " + "; ".join(parts) + "."
    if flips:
        text += " It flips the sign of the gain by itself at " + ", ".join(f"|u|={num(u)} {'frozen' if f else 'fine-tuned'}" for f, u in sorted(flips)) + "."
    else:
        text += " It flips the sign of the gain at no |u| of the sweep."
    return text


# --------------------------------------------------------------------------- 9. finite-size scaling


def scaling_section(lines_: list[pc.ScalingLine], number: int, out: Path, written: list[Path]) -> list[str]:
    title = f"## {number}. Finite-size scaling: d grows with n_source / d and n_target / d fixed"
    if not lines_:
        return [title, "", "No task family in the store varies d (three values or more) with n_source and n_target proportional to it.", ""]
    panels = []
    for mode in ("fine-tuned", "frozen"):
        here = [ln for ln in lines_ if ln.mode == mode]
        if not here:
            continue
        panels.append(plots.LinePanel(f"{mode}: mean gain", [
            plots.Line(ln.label, [p.d for p in ln.points], [p.tested.test.mean * 100 for p in ln.points],
                       [p.tested.raw.low * 100 for p in ln.points], [p.tested.raw.high * 100 for p in ln.points]) for ln in here],
            ylabel="gain over scratch (pp), 95% band", hline=0.0))
        panels.append(plots.LinePanel(f"{mode}: seed-to-seed SD of the gain", [
            plots.Line(ln.label, [p.d for p in ln.points], [p.sd * 100 for p in ln.points]) for ln in here], ylabel="SD over seeds (pp)"))
    path = plots.line_panels(out / PLOT_DIR / "paper-scaling.png", panels, "d (log scale)",
                             f"Finite-size scaling at fixed scalars ({lines_[0].ratios})", columns=2, xscale="log", sharey=False,
                             xticks=sorted({p.d for ln in lines_ for p in ln.points}))
    written.append(path)
    body = []
    for ln in lines_:
        for p in ln.points:
            body.append([ln.mode, ln.label, num(p.d), p.tested.raw.fmt(signed=True) + ("*" if p.tested.up or p.tested.down else ""),
                         f"{p.sd * 100:.2f}", p.tested.inc.fmt(), f"{p.agree * 100:.0f}%" if math.isfinite(p.agree) else "n/a"])
    lines = [title, "", f"![finite-size scaling]({PLOT_DIR}/{path.name})", "",
             f"Every candidate scalar sees d only through n/d, so along these lines ({lines_[0].ratios}, everything else at the base, "
             "α = 0.5) each one is constant. If the outcome is governed by such a scalar, the mean gain stays put as d grows, and "
             "the per-seed outcome concentrates (the split into helped and hurt seeds gets sharper).", "",
             _table(body, ["mode", "regime", "d", "Δ (pp) [95% CI]", "SD (pp)", "below/tied/above", "seeds with the majority sign"]), "",
             scaling_sentence(lines_), ""]
    return lines


def scaling_sentence(lines_: list[pc.ScalingLine]) -> str:
    parts = []
    for ln in lines_:
        first, last = ln.points[0], ln.points[-1]
        mean = ("its mean gain is unchanged within ±2 pp from d={0:g} to d={1:g} (TOST p {2})".format(first.d, last.d, p_text(ln.mean_test.p))
                if ln.mean_test is not None and ln.mean_test.shown() else
                ("its mean gain changes by {0} from d={1:g} to d={2:g}".format(_shown(ln.mean_diff), first.d, last.d)
                 if ln.mean_diff is not None and (ln.mean_diff.up or ln.mean_diff.down) else
                 "its mean gain from d={0:g} to d={1:g} changes by {2}, not significantly, and equivalence is not shown".format(
                     first.d, last.d, pp(ln.mean_diff.interval) if ln.mean_diff is not None else "n/a")))
        spread = (f"the SD over seeds falls from {first.sd * 100:.1f} to {last.sd * 100:.1f} pp (F test, Holm p {p_text(ln.spread_p_holm)})"
                  if ln.spread_p_holm < 0.05 else
                  f"the SD over seeds goes from {first.sd * 100:.1f} to {last.sd * 100:.1f} pp (not significantly smaller, Holm p {p_text(ln.spread_p_holm)})")
        agree = f"seeds with the majority sign {first.agree * 100:.0f}% → {last.agree * 100:.0f}%"
        parts.append(f"{ln.label} {ln.mode}: {mean}; {spread}; {agree}")
    sharper = sum(ln.spread_p_holm < 0.05 for ln in lines_)
    return (f"**Result:** " + "; ".join(parts) + f". The per-seed spread shrinks significantly in {sharper} of {len(lines_)} lines: "
            + ("the outcome splits more sharply as d grows." if sharper > len(lines_) / 2 else
               "the data do not show a sharper split with d on most lines."))


# --------------------------------------------------------------------------- 10. controls


def controls_section(regimes: list[pc.ControlRegime], number: int, out: Path, written: list[Path]) -> list[str]:
    title = f"## {number}. Mechanism controls: what part of an inherited filter carries the gain or the harm"
    if not regimes:
        return [title, "", "No `random-filters` or `project-out` runs in the store.", ""]
    panels = []
    for reg in regimes:
        bars = [plots.Bar(name, t.test.mean * 100, t.raw.low * 100, t.raw.high * 100, hatched=t.up or t.down) for name, t in reg.gains.items()]
        panels.append(plots.BarPanel(reg.label, bars, ylabel="gain over scratch (pp), 95% CI"))
    path = plots.bar_panels(out / PLOT_DIR / "paper-controls.png", panels,
                            "Inherited filters against the same filters with their direction replaced or a signal projected out (hatched: Holm-significant)")
    written.append(path)
    body = []
    for reg in regimes:
        for name, t in reg.gains.items():
            contrast = reg.contrasts.get(name)
            dg = reg.diagnostics.get(name, {})
            body.append([reg.label, name, t.raw.fmt(signed=True) + ("*" if t.up or t.down else ""), t.inc.fmt(),
                         "–" if contrast is None else pp(contrast.interval) + ("*" if contrast.up or contrast.down else ""),
                         f"{dg.get('noise_inherited', math.nan):.2f} / {dg.get('noise_fresh', math.nan):.2f}",
                         f"{dg.get('u_max_inherited', math.nan):.2f}", f"{dg.get('v1_max_inherited', math.nan):.2f}"])
    lines = [title, "", f"![mechanism controls]({PLOT_DIR}/{path.name})", "",
             "All fine-tuned, half the filters inherited (the same filters in every strategy). 'random direction': each inherited "
             "filter replaced by a random vector of its norm (scale kept, content gone); 'X removed': its component along X "
             "projected out (v₂, which the source never saw, is the placebo). The contrast is the paired per-seed difference to "
             "the unmodified inherited filters (Holm over the figure's contrasts; intervals Holm step-down).", "",
             _table(body, ["regime", "strategy", "Δ vs scratch (pp) [95% CI]", "below/tied/above", "minus inherited (pp) [Holm]",
                           "noise memorised: inherited / fresh", "inherited ⟨w,u⟩", "inherited ⟨w,v₁⟩"]), "",
             controls_sentence(regimes), ""]
    return lines


def _find(reg: pc.ControlRegime, prefix: str) -> tuple[str, Tested] | None:
    for name, t in reg.contrasts.items():
        if name.startswith(prefix):
            return name, t
    return None


def controls_sentence(regimes: list[pc.ControlRegime]) -> str:
    parts = []
    for reg in regimes:
        base = next((t for name, t in reg.gains.items() if name.startswith("inherited")), None)
        if base is None:
            continue
        sign = "helps" if base.up else "hurts" if base.down else "changes nothing detectable"
        text = f"at {reg.label} the inherited filters' transfer {sign} ({_shown(base)})"
        pieces = []
        for prefix, what in (("v1 removed", "removing v₁"), ("u removed", "removing u"), ("random direction", "a random direction of the same norm")):
            found = _find(reg, prefix)
            if found is None:
                continue
            _, t = found
            if t.up or t.down:
                pieces.append(f"{what} {'raises' if t.up else 'lowers'} the target by {_shown(t)}")
            else:
                pieces.append(f"{what} changes it by {pp(t.interval)} (not significant)")
        if reg.placebo is not None:
            pieces.append(("removing the placebo v₂ leaves it unchanged within ±2 pp (TOST p " + p_text(reg.placebo.p) + ")")
                          if reg.placebo.shown() else "the placebo v₂ is not shown equivalent")
        diag = reg.diagnostics.get(next((n for n in reg.gains if n.startswith("inherited")), ""), {})
        if diag:
            pieces.append(f"inherited filters end with noise memorisation {diag['noise_inherited']:.2f} against {diag['noise_fresh']:.2f} "
                          "for the fresh ones")
        parts.append(text + ": " + "; ".join(pieces))
    return "**Result:** " + ". ".join(p[0].upper() + p[1:] for p in parts) + "." + mechanism_reading(regimes)


def diag_less(reg: pc.ControlRegime) -> bool:
    name = next((n for n in reg.gains if n.startswith("inherited")), "")
    d = reg.diagnostics.get(name, {})
    return bool(d) and d.get("noise_inherited", math.nan) < d.get("noise_fresh", math.nan)


def mechanism_reading(regimes: list[pc.ControlRegime]) -> str:
    """Which part of the filter carries the gain and the harm, from the signs of the tests."""
    out = []
    for reg in regimes:
        base = next((t for name, t in reg.gains.items() if name.startswith("inherited")), None)
        u = _find(reg, "u removed")
        v1 = _find(reg, "v1 removed")
        rnd = next((t for name, t in reg.gains.items() if name.startswith("random direction")), None)
        if base is None:
            continue
        if base.up and u is not None and u[1].down:
            out.append(f" At {reg.label} the gain is carried by the u component: without it the filters "
                       + ("hurt" if reg.gains.get(u[0]) is not None and reg.gains[u[0]].down else "no longer help") + ".")
        if base.down and rnd is not None and v1 is not None:
            recovered = v1[1].test.mean / -base.test.mean if base.test.mean else math.nan
            content = base.test.mean - rnd.test.mean
            out.append(
                f" At {reg.label} removing v₁ recovers {recovered * 100:.0f}% of the loss"
                + (" (significant)" if v1[1].up else " (not significant)")
                + f", while a random direction of the same norm costs {_pp_num(rnd.test.mean)} pp: the inherited filters' content other "
                  f"than v₁ and u (what the source memorised of its own noise) accounts for {_pp_num(content)} pp of the harm beyond their scale."
                  + (" This sits with the noise-memorisation diagnostic (inherited filters memorise less of the target's training noise "
                     "than fresh ones, as in the table) because that diagnostic measures how much of the target's own training noise the "
                     "filters fit, whereas the harm is carried by directions the filters bring from the source, which respond to every "
                     "target input."
                     if diag_less(reg) else ""))
    return "".join(out)


# --------------------------------------------------------------------------- verdicts


def verdicts_section(claims: list[pc.Claim], fits: dict, regimes: list[pc.ControlRegime], fam_summary: dict,
                     negatives: tuple[int, int]) -> list[str]:
    lines = ["## The paper's claims, checked", ""]
    rows = []
    by = {c.key: c for c in claims}
    # inherited parameters carry the universal knowledge
    carried = [r for r in regimes if _find(r, "u removed") is not None and next((t for n, t in r.gains.items() if n.startswith("inherited")), None) is not None]
    if carried:
        pos = [r for r in carried if next(t for n, t in r.gains.items() if n.startswith("inherited")).up]
        held = [r for r in pos if _find(r, "u removed")[1].down]
        rows.append(["inherited parameters carry the universal knowledge (u)",
                     ("supported" if pos and len(held) == len(pos) else "not shown") +
                     f": removing u from the inherited filters lowers the target significantly in {len(held)} of {len(pos)} regimes where transfer helps (§10)"])
    for key in ("fraction", "n_source", "source_noise", "shared"):
        claim = by.get(key)
        if claim is None or not claim.contrasts:
            continue
        n, s, r = len(claim.contrasts), len(claim.supported), len(claim.reversed)
        verdict = "supported" if s and not r else ("fails in part" if s and r else ("fails" if r else "not shown"))
        rows.append([claim.text, f"{verdict}: {s} of {n} contrasts go its way beyond chance, {r} significantly against it (§5)"])
    neg, total = negatives
    rows.append(["negative transfer exists", ("supported" if neg else "not shown") + f": {neg} of {total} heatmap cells have a Holm-significant negative gain (§2, §3)"])
    for frozen, mf in fits.items():
        if mf.best is None or mf.ceiling is None:
            continue
        best, c = mf.best, mf.ceiling
        r = mf.get("R")
        fams = [v for k, v in fam_summary.items() if k.startswith(best.candidate.key) and (k.endswith(mf.mode) or k.endswith(f"{mf.mode} (best fit)"))]
        flips = bool(fams) and all(v["one_threshold"] for v in fams)
        equal = all(f["gain_equal"] for v in fams for f in v["families"]) if fams else False
        if flips and best.lrt_p >= 0.05 and equal:
            verdict = "supported"
        elif flips:
            verdict = "in part (the sign, not the size, and not all of the sign)" if best.lrt_p < 0.05 else "in part (the sign, not the size)"
        else:
            verdict = "fails"
        rows.append([f"one scalar separates beneficial from negative transfer ({mf.mode})",
                     f"{verdict}: the best candidate, {best.candidate.key}, predicts {best.cv_accuracy * 100:.1f}% of signs out of sample "
                     + (f"(R: {r.cv_accuracy * 100:.1f}%; " if r is not None else "(")
                     + f"ceiling {c.saturated_accuracy * 100:.1f}%), the factors add to it (LRT p {p_text(best.lrt_p)}), "
                     + ("its iso-families show a single sign threshold" if flips else "its iso-families show no single sign threshold")
                     + (" and constant gains" if equal else " but gains that are not constant within a family") + " (§6, §7)"])
    neg_regimes = [r for r in regimes if next((t for n, t in r.gains.items() if n.startswith("inherited")), None) is not None
                   and next(t for n, t in r.gains.items() if n.startswith("inherited")).down]
    for reg in neg_regimes:
        v1 = _find(reg, "v1 removed")
        rnd = next((t for n, t in reg.gains.items() if n.startswith("random direction")), None)
        base = next(t for n, t in reg.gains.items() if n.startswith("inherited"))
        if v1 is None or rnd is None:
            continue
        share = v1[1].test.mean / -base.test.mean if base.test.mean else math.nan
        rows.append([f"negative transfer: inherited filters amplify what the tasks do not share ({reg.label})",
                     f"{'supported' if base.down and not rnd.down else 'in part'}: " + (
                         f"the harm is in the filters' content, not their scale (random direction {_pp_num(rnd.test.mean)} pp, "
                         f"{'not significant' if not rnd.down else 'significant'}, against {_pp_num(base.test.mean)} pp inherited)")
                     + (f"; the source-specific signal v₁ accounts for {share * 100:.0f}% of it"
                        + (" (its removal is significant)" if v1[1].up else " (its removal is not significant)"))
                     + ("; the rest lies in what else the filters carry from the source (by elimination, the source's memorised noise)"
                        if share < 0.5 else "") + " (§10)"])
    lines += [_table(rows, ["claim", "verdict under these tests"]), ""]
    return lines
