"""The images report's paragraphs on filter transfer (`partial-filters` against scratch, the
trend over the fraction), the reversals of expected trends, and the caveats; and the sentence
on the fraction trends under the trend table. Each verdict comes from the tests (see
`images_prose.py`)."""

from __future__ import annotations

import math

from ptbench.results.stats import ALPHA

from .images_format import and_join, count_word, iv, p_fmt, pp, threshold_fmt
from .images_stats import ANB, ANB_PLUS, BNB, BNB_PLUS, MARGIN, Analysis, Tested
from .images_words import M, verdict

# --------------------------------------------------------------------------- 5. filter-wise transfer


def filter_name(c: Tested, long: bool = False) -> str:
    """'textures -> digits with 50% of the filters, fine-tuned' (long) or 'the frozen 75% 10/class cell'."""
    mode = "frozen" if c.info["freeze"] else "fine-tuned"
    task = c.info["task"]
    if long:
        where = "Textures -> digits" if task.kind == "textures" else f"Digits at {task.n_target} images per class"
        return f"{where} with {c.info['fraction'] * 100:g}% of the filters, {mode}"
    return f"the {mode} {c.info['fraction'] * 100:g}% {task.short} cell"


def filters(a: Analysis) -> str:
    cells = list(a.filter_cells.values())
    if not cells:
        return ""
    n = len(cells)
    significant = [c for c in cells if c.significant]
    head = (f"no cell differs from scratch after Holm over the {n} cells" if not significant else
            f"{len(significant)} of the {n} cells {'differs' if len(significant) == 1 else 'differ'} from scratch after Holm")
    parts = [f"**Filter-wise transfer: {head}.**"]
    if significant:
        parts.append("Significant: " + "; ".join(f"{filter_name(c, True)}, {iv(c.interval())} ({c.below} of {c.n} seeds below, "
                                                  f"p_H = {p_fmt(c.p_holm)})" for c in significant) + ".")
    rest = [c for c in cells if not c.significant]
    if rest:
        closest = min(rest, key=lambda c: c.p)
        text = (f"The closest {'other ' if significant else ''}cell is {filter_name(closest, True)[0].lower() + filter_name(closest, True)[1:]}: "
                f"{iv(closest.interval())} ({closest.below} of {closest.n} seeds below, raw p {p_fmt(closest.p)}, p_H = {p_fmt(closest.p_holm)})")
        if closest.nominal:
            text += (f"; its uncorrected interval excludes zero, but with {n} cells Holm needs raw p < "
                     f"{threshold_fmt(ALPHA / n)}, so it is not shown")
        parts.append(text + ".")
    parts.append(filter_inconclusive(a, cells))
    parts.append(filter_trend_text(a, cells))
    return " ".join(p for p in parts if p)


def filter_inconclusive(a: Analysis, cells: list[Tested]) -> str:
    inconclusive = [c for c in cells if verdict(c) == "inconclusive"]
    equivalent = [c for c in cells if c.equivalent]
    by_task: dict[str, list[Tested]] = {}
    for c in cells:
        by_task.setdefault(c.info["task"].name, []).append(c)
    narrowest = min(by_task.values(), key=lambda g: max(g, key=lambda c: c.interval().high).interval().high
                    - min(g, key=lambda c: c.interval().low).interval().low)
    task = narrowest[0].info["task"]
    hull = f"[{pp(min(c.interval().low for c in narrowest))}, {pp(max(c.interval().high for c in narrowest))}]"
    close = max(abs(c.interval().low) for c in narrowest) <= 2 * MARGIN and max(abs(c.interval().high) for c in narrowest) <= 2 * MARGIN
    near = f"the {count_word(len(narrowest))} {task.short} cells all lie within {hull} uncorrected" if close else ""
    if len(inconclusive) == len(cells):
        return "All cells are inconclusive (none TOST-equivalent after Holm" + (f", though {near})." if near else ").")
    return (f"{len(inconclusive)} of the {len(cells)} cells are inconclusive and {len(equivalent)} TOST-equivalent after Holm"
            + (f" ({near})." if near else "."))


def filter_trend_text(a: Analysis, cells: list[Tested]) -> str:
    trends = a.fraction_trends
    text = ""
    if trends:
        significant = [t for t in trends if t.slope.significant]
        if not significant:
            text = (f"There is no significant trend over the fraction of inherited filters in any column (per-seed slopes, Holm "
                    f"over {len(trends)}, all p_H ≥ {p_fmt(min(t.slope.p_holm for t in trends))}), so neither the paper's \"more "
                    "inherited filters help\" nor its reversal is shown; ")
        else:
            text = ("The trend over the fraction of inherited filters is significant in "
                    + and_join(f"{t.task.short}, {t.label} ({pp(t.slope.mean, 2)} pp per 25%, p_H = {p_fmt(t.slope.p_holm)})" for t in significant)
                    + "; ")
    worst = min(cells, key=lambda c: c.mean)
    tail = (f"the {pp(worst.mean)} pp of {filter_name(worst)} ({worst.below} of {worst.n} seeds below) is "
            f"{'' if worst.significant else 'not '}significant (p_H = {p_fmt(worst.p_holm)}).")
    return text + tail if text else tail[0].upper() + tail[1:]


def fraction_trend_sentence(a: Analysis) -> str:
    """Under the trend table: the filter-fraction slopes, Holm over the filter table's columns."""
    trends = a.fraction_trends
    if not trends:
        return ""
    label = lambda t: f"{t.task.short}, {t.label}"
    fractions = " / ".join(f"{f:g}" for f in trends[0].levels)
    text = (f"Over filter fraction (per-seed slope over {fractions}, Holm over the {len(trends)} columns of the filter table) ")
    significant = [t for t in trends if t.slope.significant]
    low, high = min(trends, key=lambda t: t.slope.mean), max(trends, key=lambda t: t.slope.mean)
    if significant:
        text += ("the trend is significant in " + and_join(f"{label(t)}, {iv(t.slope.interval(), 2)} pp per 25% of filters, "
                                                          f"p_H = {p_fmt(t.slope.p_holm)}" for t in significant))
        return text + "."
    closest = min(trends, key=lambda t: t.slope.p)
    return text + (f"no trend is significant: slopes from {pp(low.slope.mean, 2)} pp ({label(low)}, p_H = {p_fmt(low.slope.p_holm)}) to "
                   f"{pp(high.slope.mean, 2)} pp per 25% of filters ({label(high)}, p_H = {p_fmt(high.slope.p_holm)}); the one closest "
                   f"to significance is {label(closest)}, {iv(closest.slope.interval(), 2)} pp, p_H = {p_fmt(closest.slope.p_holm)}.")


# --------------------------------------------------------------------------- 6. reversals


def reversal_candidates(a: Analysis) -> list[tuple[str, Tested]]:
    """Every test whose significant result would reverse an expected trend: a positive frozen
    AnB depth slope, an AnB+ / BnB / BnB+ cell or seed average below scratch, a negative
    filter-fraction slope. (description, test) pairs, the test's sign already the reversed one."""
    out = [(f"AnB depth slope {t.task.phrase} ({pp(t.slope.mean, 2)} pp per layer", t.slope)
           for t in a.depth_trends if t.label == ANB.label and t.slope.mean > 0]
    for table in a.tables:
        for column in (ANB_PLUS, BNB, BNB_PLUS):
            out += [(f"{column.label} k = {c.info['k']} {table.task.phrase} ({pp(c.mean)} pp", c)
                    for c in table.curve(column) if c.mean < 0]
    out += [(f"the {avg.info['column']} seed average {avg.info['task'].phrase} ({pp(avg.mean, 2)} pp", avg)
            for avg in a.averages if avg.mean < 0]
    out += [(f"the filter-fraction slope {t.task.short}, {t.label} ({pp(t.slope.mean, 2)} pp per 25%", t.slope)
            for t in a.fraction_trends if t.slope.mean < 0]
    return out


def reversals(a: Analysis) -> str:
    if not a.tables:
        return ""
    candidates = reversal_candidates(a)
    holm = [(d, t) for d, t in candidates if t.significant]
    nominal = [(d, t) for d, t in candidates if t.nominal and not t.significant]
    text = ("**Reversals of expected trends.** Expected: frozen AnB declines with k, fine-tuned AnB+ is not below scratch, "
            "BnB and BnB+ stay at scratch, more inherited filters do not hurt. ")
    listing = lambda items: "; ".join(f"{d}, raw p {p_fmt(t.p)}, p_H = {p_fmt(t.p_holm)})" for d, t in items)
    if not holm and not nominal:
        negative = [t for t in a.fraction_trends if t.slope.mean < 0]
        text += ("No reversal is significant, raw or after Holm: no positive AnB depth slope, no AnB+, BnB or BnB+ cell or "
                 "seed-average significantly below scratch, no negative filter-fraction slope")
        if negative:
            best = min(negative, key=lambda t: t.slope.p_holm)
            text += f" (smallest p_H = {p_fmt(best.slope.p_holm)}, {best.task.short} {best.label}, {pp(best.slope.mean, 2)} pp per 25%)"
        return text + "."
    if holm:
        text += f"Significant after Holm: {listing(holm)}. "
    else:
        text += "No reversal is significant after Holm. "
    if nominal:
        text += f"Nominal only (raw p < 0.05, not after Holm): {listing(nominal)}."
    else:
        text += "No other reversal is nominally significant."
    return text.rstrip()


# --------------------------------------------------------------------------- 8. caveats


def caveats(a: Analysis) -> str:
    if not len(a.facts):
        return ""
    sizes = {}
    for task in a.tasks:
        n = a.facts.loc[task.name, "n_test"]
        if n and not (isinstance(n, float) and math.isnan(n)):
            what = "all ten digits" if task.kind == "textures" else f"digits {task.params.get('target_classes', '5-9')}"
            sizes.setdefault(int(n), what)
    sets = and_join(f"{n} ({what})" for n, what in sorted(sizes.items()))
    per_image = " or ".join(f"{100 / n:.2f}" for n in sorted(sizes))
    largest = max((len(t.cells) for t in a.tables), default=0)
    n_seeds = int(a.facts["seeds"].max())
    digits = [int(a.facts.loc[t.name, "n_test"]) for t in a.tasks if t.kind == "digits" and a.facts.loc[t.name, "n_test"]]
    margin_images = f" (about {round(MARGIN * digits[0])} test images on the digits)" if digits else ""
    text = (f"Caveats: {n_seeds} seeds and test sets of {sets} images, so one test image is {per_image} pp; with {n_seeds} seeds "
            f"and {largest} cells a Holm-significant cell needs raw p < {threshold_fmt(ALPHA / largest) if largest else 'n/a'}, so "
            "\"not significant after Holm\" here is often low power, not evidence of no effect — that is what the TOST column is "
            f"for. The {M} margin is our choice{margin_images}; no data augmentation; one budget, not tuned per strategy (by "
            "design: every strategy gets the same one). The CIFAR / ResNet-18 configuration is not part of this suite (it is "
            "`suites/cifar.toml`, on the real dataset), so none of these numbers speak for deeper networks.")
    return text
