"""The images report's conclusions, "What this shows next to Yosinski et al.": every sentence
that states a result is built from the tests of `images_stats` (a difference is stated only
where Holm over its family rejects zero, "equal" only where the Holm-adjusted TOST shows
equivalence, "nominal" where only the uncorrected test rejects), so a store whose numbers
move cannot leave a claim standing that its numbers no longer support. What stays fixed is
the method and the framing against Yosinski et al. 2014.

This module holds the layer-depth paragraphs (frozen transfer over depth, specificity against
co-adaptation, where transfer hurt); `images_prose_tuning.py` the fine-tuned ones (AnB+,
BnB+), `images_prose_filters.py` filter transfer, reversals and the caveats."""

from __future__ import annotations

import math

from ptbench.results.stats import ALPHA

from .images_format import and_join, bounds, count_word, iv, levels_text, magnitude, p_fmt, pp
from .images_prose_filters import caveats, filters, reversals
from .images_prose_tuning import bnb_plus, fine_tuned
from .images_stats import ANB, ANB_PLUS, BNB, MARGIN, Analysis, LayerTable, TaskInfo, Tested, Trend
from .images_words import (
    M, deepest, lower_first, loose_magnitude, loose_range, p_range_loose, places, tables_with, verdict,
)

# --------------------------------------------------------------------------- the page's section


def conclusions(a: Analysis) -> list[str]:
    """The section, paragraph by paragraph (a paragraph without its runs is left out)."""
    paragraphs = [frozen_depth(a), specificity(a), fine_tuned(a), bnb_plus(a), filters(a), reversals(a), where_hurt(a), caveats(a)]
    lines = ["## What this shows next to Yosinski et al.", ""]
    for text in paragraphs:
        if text:
            lines += [text, ""]
    return lines


# --------------------------------------------------------------------------- 1. frozen transfer over depth


def frozen_depth(a: Analysis) -> str:
    tables = tables_with(a, ANB)
    deep = [(t, deepest(t, ANB)) for t in tables]
    deep = [(t, c) for t, c in deep if c is not None]
    if not deep:
        return ""
    trends = [tr for tr in (a.depth_trend(t.task, ANB) for t, _ in deep) if tr is not None]
    k = deep[0][0].depths[-1]
    parts = [f"**Frozen deep layers fall below scratch: {frozen_headline(a, deep, trends)}.**",
             deep_cells_sentence(deep, k), depth_trend_sentence(a, trends),
             shallow_sentence(a, tables), drop_change_sentence(a, k)]
    return " ".join(p for p in parts if p)


def shown_tasks(deep: list, trends: list[Trend]) -> tuple[list[TaskInfo], list[TaskInfo]]:
    """(tasks where the frozen drop is shown after Holm, by the depth trend or the deepest cell;
    tasks where it is only nominal)."""
    shown, nominal = [], []
    for table, cell in deep:
        trend = next((tr for tr in trends if tr.task.name == table.task.name), None)
        tests = [cell] + ([trend.slope] if trend is not None else [])
        if any(t.down for t in tests):
            shown.append(table.task)
        elif any(t.nominal and t.mean < 0 for t in tests):
            nominal.append(table.task)
    return shown, nominal


def frozen_headline(a: Analysis, deep: list, trends: list[Trend]) -> str:
    below = sum(c.mean < 0 for _, c in deep)
    direction = ("reproduced in direction" if below == len(deep) else "not reproduced even in direction" if below == 0
                 else f"in direction in {below} of {len(deep)} tasks")
    shown, nominal = shown_tasks(deep, trends)
    if shown and len(shown) == len(deep):
        return f"{direction}, and shown after correction in every task"
    if not shown:
        return f"{direction}; after correction not shown in any task" + (f" (only nominally {places(nominal, a)})" if nominal else "")
    return f"{direction}; after correction, shown {places(shown, a)}" + (f" and only nominally {places(nominal, a)}" if nominal else "")


def deep_cells_sentence(deep: list, k: int) -> str:
    cells = [c for _, c in deep]
    means = and_join(magnitude(c.mean) for c in cells)
    change = f"costs {means} points" if all(c.mean < 0 for c in cells) else f"changes accuracy by {and_join(pp(c.mean) for c in cells)} points"
    counts = {(c.below, c.n) for c in cells}
    seeds = (f"below scratch in {cells[0].below} of {cells[0].n} seeds each time" if len(counts) == 1
             else "below scratch in " + and_join(f"{c.below} of {c.n}" for c in cells) + " seeds")
    raw = f"raw p {', '.join(p_fmt(c.p) for c in cells)}"
    excluding = sum(c.nominal for c in cells)
    intervals = ("with uncorrected intervals that exclude zero" if excluding == len(cells)
                 else "with uncorrected intervals that all include zero" if excluding == 0
                 else f"with uncorrected intervals that exclude zero in {excluding} of {len(cells)}")
    significant = [(t, c) for t, c in deep if c.significant]
    holm = f"p_H {', '.join(p_fmt(c.p_holm) for c in cells)}"
    if not significant:
        after = f"{'but ' if excluding else 'and '}after Holm over the cells of each table none of the {count_word(len(cells))} k = {k} cells is significant ({holm})"
    elif len(significant) == len(cells):
        after = f"and after Holm over the cells of each table all {count_word(len(cells))} k = {k} cells are significant ({holm})"
    else:
        after = (f"and after Holm over the cells of each table the k = {k} cell is significant "
                 f"{and_join(t.task.phrase for t, _ in significant)} only ({holm})")
    return f"Freezing {stack_phrase(deep[0][0], k)} {change}, {seeds}, {intervals} ({raw}) — {after}."


def stack_phrase(table: LayerTable, k: int) -> str:
    """'the whole feature extractor (k = 4)', or 'the deepest stack run (k = 3 of 4 layers)'."""
    depth = int(table.task.params.get("depth", k))
    return f"the whole feature extractor (k = {k})" if k >= depth else f"the deepest stack run (k = {k} of {depth} layers)"


def depth_trend_sentence(a: Analysis, trends: list[Trend]) -> str:
    if not trends:
        return ""
    counts = {(t.slope.below, t.slope.n) for t in trends}
    negative = (f"negative in {trends[0].slope.below} of {trends[0].slope.n} seeds in every task" if len(counts) == 1
                else "negative in " + and_join(f"{t.slope.below} of {t.slope.n} seeds {t.task.phrase}" for t in trends))
    n = len(a.depth_trends)
    down = [t for t in trends if t.slope.down]
    up = [t for t in trends if t.slope.up]
    rest = [t for t in trends if not t.slope.significant]
    levels = trends[0].levels
    contrast = f"k = {levels[-1]} − k = {levels[0]}"
    text = (f"The test that fits the claim \"deeper frozen transfer is worse\" is the depth trend with seeds as the unit: "
            f"the per-seed slope of AnB is {negative}")
    detail = lambda t: (f"{pp(t.slope.mean, 2)} pp per layer, p_H = {p_fmt(t.slope.p_holm)}; {contrast}: {pp(t.contrast.mean)} pp, "
                        f"p_H = {p_fmt(t.contrast.p_holm)}")
    if down:
        text += (f", and it is significant after Holm over the {n} curves {places([t.task for t in down], a)} "
                 f"({'; '.join(detail(t) for t in down)})")
    if up:
        text += f", and significantly *positive* {places([t.task for t in up], a)} ({'; '.join(detail(t) for t in up)})"
    if rest:
        text += (f"{', not' if down or up else ', but it is not significant after Holm over the ' + str(n) + ' curves'} "
                 f"{places([t.task for t in rest], a)} ({and_join(pp(t.slope.mean, 2) for t in rest)} pp per layer, "
                 f"raw p {and_join(p_fmt(t.slope.p) for t in rest)}, p_H {and_join(p_fmt(t.slope.p_holm) for t in rest)})")
    return text + "."


def shallow_sentence(a: Analysis, tables: list[LayerTable]) -> str:
    """'Frozen transfer of the first one or two layers costs nothing', cell by cell."""
    order = {"equivalent": 0, "inconclusive": 1, "above": 2, "below": 2}
    described = []
    for table in tables:
        cells = [c for c in (table.cell(ANB, k) for k in table.depths[:2]) if c is not None]
        if cells:
            described.append((min(order[verdict(c)] for c in cells), table.task, shallow_task(table.task, cells)))
    if not described:
        return ""
    described.sort(key=lambda item: item[0])
    lead = ("holds only where TOST supports it" if any(item[0] == 0 for item in described)
            else "is supported by TOST in no task")
    return (f"\"Frozen transfer of the first one or two layers costs nothing\" is an equivalence claim and {lead}: "
            + "; ".join(text for _, _, text in described) + ".")


def shallow_task(task: TaskInfo, cells: list[Tested]) -> str:
    states: dict[str, list[Tested]] = {}
    for c in cells:
        states.setdefault(verdict(c), []).append(c)
    ks = lambda group: levels_text(c.info["k"] for c in group)
    if list(states) == ["equivalent"]:
        return f"within {M} of scratch {task.phrase} ({ks(cells)}, ≡)"
    if list(states) == ["inconclusive"]:
        return (f"{task.phrase} it is inconclusive (TOST p_H = {p_range_loose([c.tost_holm for c in cells])}; the intervals allow "
                f"{pp(min(c.interval().low for c in cells))} to {pp(max(c.interval().high for c in cells))} pp{nominal_note(cells)})")
    parts = []
    for state, group in states.items():
        if state == "equivalent":
            parts.append(f"{ks(group)} within {M} of scratch (≡)")
        elif state == "inconclusive":
            parts.append(f"{ks(group)} inconclusive (TOST p_H = {p_range_loose([c.tost_holm for c in group])}; "
                         f"{'the interval allows' if len(group) == 1 else 'the intervals allow'} {pp(min(c.interval().low for c in group))} "
                         f"to {pp(max(c.interval().high for c in group))} pp{nominal_note(group)})")
        else:
            parts.append(f"{ks(group)} {'is' if len(group) == 1 else 'are'} *{state}* scratch "
                         f"({'; '.join(f'{pp(c.mean)} pp, p_H = {p_fmt(c.p_holm)}' for c in group)})")
    return f"{task.phrase} " + and_join(parts)


def nominal_note(cells: list[Tested]) -> str:
    """'; k = 2 is below scratch only nominally, raw p 0.041, p_H = 0.56' for inconclusive cells
    whose uncorrected interval excludes zero."""
    return "".join(f"; k = {c.info['k']} is {'below' if c.mean < 0 else 'above'} scratch only nominally, raw p {p_fmt(c.p)}, "
                   f"p_H = {p_fmt(c.p_holm)}" for c in cells if c.nominal)


def drop_change_sentence(a: Analysis, k: int) -> str:
    few, many = a.table(a.role("few")), a.table(a.role("many"))
    if a.drop_change is None or few is None or many is None:
        return ""
    fa, ma = deepest(few, ANB).mean, deepest(many, ANB).mean
    change = a.drop_change
    way = "shrinks" if abs(ma) < abs(fa) else "grows"
    established = "is established" if change.p < ALPHA else "is not established"
    return (f"That the k = {k} drop {way} with more target data ({pp(fa)} to {pp(ma)}) {established}: the difference, "
            f"{pp(change.test.mean)} pp {bounds(change.interval())} (Welch, the two tasks are different runs), has p = {p_fmt(change.p)}.")


# --------------------------------------------------------------------------- 2. specificity or co-adaptation


def bnb_verdict(a: Analysis, table: LayerTable) -> str:
    """'specificity' (BnB's seed average equivalent to scratch), 'co-adaptation' (BnB below
    scratch after Holm, on average or in a cell), 'above' or 'inconclusive'."""
    average = a.average(table.task, BNB)
    cells = table.curve(BNB)
    if (average is not None and average.down) or any(c.down for c in cells):
        return "co-adaptation"
    if average is not None and average.equivalent:
        return "specificity"
    if (average is not None and average.up) or any(c.up for c in cells):
        return "above"
    return "inconclusive"


def specificity(a: Analysis) -> str:
    tables = [t for t in tables_with(a, BNB, "digits") if ANB in t.columns]
    if not tables:
        return ""
    rank = {"specificity": 0, "co-adaptation": 1, "above": 2, "inconclusive": 3}
    verdicts = sorted(((t, bnb_verdict(a, t)) for t in tables), key=lambda item: rank[item[1]])
    words = {"specificity": "supported", "inconclusive": "inconclusive", "co-adaptation": "co-adaptation shown",
             "above": "BnB above scratch"}
    groups = {}
    for t, v in verdicts:
        groups.setdefault(words[v], []).append(t.task)
    falls = all((deepest(t, ANB) is not None and deepest(t, ANB).mean < 0) for t in tables)
    title = "Why it falls: specificity rather than co-adaptation" if falls else "Specificity or co-adaptation"
    parts = [f"**{title} — " + ", ".join(f"{word} {places(ts, a)}" for word, ts in groups.items()) + ".**",
             "Yosinski separates the two with BnB: a frozen stack from a model trained on the target task itself."]
    for table, v in verdicts:
        parts.append(bnb_equivalent(a, table) if v == "specificity" else bnb_open(a, table, v))
    parts.append(bnb_dip_sentence(a, verdicts))
    return " ".join(p for p in parts if p)


def gap_text(a: Analysis, table: LayerTable, lead: str) -> str:
    """The AnB − BnB contrast at the deepest k: stated when Holm over its family rejects zero."""
    k = table.depths[-1]
    gap = a.gaps.get((table.task.name, True, k))
    if gap is None:
        return ""
    n = len(a.gaps)
    if gap.down:
        return (f"{lead} is that AnB is below BnB at k = {k}, {pp(gap.mean)} pp {bounds(gap.interval())}, which survives "
                f"Holm over the {n} AnB − BnB cells (p_H = {p_fmt(gap.p_holm)}).")
    return (f"The AnB − BnB gap at k = {k} is {pp(gap.mean)} pp {bounds(gap.interval())} uncorrected "
            f"(p_H = {p_fmt(gap.p_holm)} over the {n} AnB − BnB cells).")


def bnb_equivalent(a: Analysis, table: LayerTable) -> str:
    """BnB at scratch: the AnB drop there is specificity, co-adaptation at most the margin."""
    task, k = table.task, table.depths[-1]
    average, cell, trend = a.average(task, BNB), deepest(table, BNB), a.depth_trend(task, BNB)
    phrase = task.phrase[0].upper() + task.phrase[1:]
    text = (f"{phrase} BnB is within {M} of scratch: averaged over k per seed, {iv(average.interval(), 2)} pp, "
            f"TOST p_H = {p_fmt(average.tost_holm)} (≡)")
    if cell is not None:
        text += f", and at k = {k} itself {iv(cell.interval())} (90% TOST interval {bounds(cell.interval(0.90))}, " + (
            f"TOST p_H = {p_fmt(cell.tost_holm)}, ≡ on its own too)" if cell.equivalent else
            f"raw TOST p = {p_fmt(cell.tost.p)}, p_H = {p_fmt(cell.tost_holm)} over the {len(table.cells)} cells, so individually "
            + ("not shown after Holm)" if cell.tost.p < ALPHA else "not shown even before Holm)"))
    if trend is not None:
        text += (f"; there is no significant BnB depth trend ({pp(trend.slope.mean, 2)} pp per layer, p_H = {p_fmt(trend.slope.p_holm)})"
                 if not trend.slope.significant else
                 f"; the BnB depth trend is significant ({pp(trend.slope.mean, 2)} pp per layer, p_H = {p_fmt(trend.slope.p_holm)})")
    anb = deepest(table, ANB)
    text += "."
    if anb is not None and anb.mean < 0:
        text += f" So co-adaptation accounts for at most about {MARGIN * 100:g} pp of the {pp(anb.mean)} pp AnB drop at k = {k} there;"
        return text + " " + lower_first(gap_text(a, table, "What the data show"))
    return text + " " + gap_text(a, table, "What the data show")


def bnb_open(a: Analysis, table: LayerTable, v: str) -> str:
    """BnB not shown at scratch: what its intervals allow, and the AnB − BnB gap."""
    task, k = table.task, table.depths[-1]
    average, cell = a.average(task, BNB), deepest(table, BNB)
    phrase = task.phrase[0].upper() + task.phrase[1:]
    lead = {"inconclusive": "the BnB intervals are too wide for either reading", "co-adaptation": "BnB is below scratch",
            "above": "BnB is above scratch"}[v]
    text = f"{phrase} {lead}:"
    bits = []
    tests = lambda t: (f"TOST p_H = {p_fmt(t.tost_holm)}" if v == "inconclusive"
                       else f"p_H = {p_fmt(t.p_holm)}, TOST p_H = {p_fmt(t.tost_holm)}")
    if cell is not None:
        bits.append(f"k = {k} is {iv(cell.interval())} (90% interval {bounds(cell.interval(0.90))}; {tests(cell)})")
    if average is not None:
        bits.append(f"the seed average {iv(average.interval(), 2)} ({tests(average)})")
    text += " " + ", ".join(bits)
    if cell is not None and cell.interval().low < 0 and v != "co-adaptation":
        holm_low = cell.holm_interval.low if cell.holm_interval is not None else math.nan
        text += (f", so a co-adaptation cost of up to about {loose_magnitude(cell.interval().low)} pp "
                 f"({magnitude(holm_low)} pp with Holm intervals) is not excluded")
    lead_gap = "What the few-shot data do show" if task.role == "few" else f"What the data {task.phrase} do show"
    return text + ". " + gap_text(a, table, lead_gap)


def bnb_dip_sentence(a: Analysis, verdicts: list) -> str:
    depth = max((int(t.task.params.get("depth", t.depths[-1])) for t, _ in verdicts), default=0)
    dips = [t.task for t, v in verdicts if v == "co-adaptation"]
    dips += [tr.task for tr in a.depth_trends if tr.label == BNB.label and tr.slope.down and tr.task not in dips]
    ruled = [t.task for t, v in verdicts if v == "specificity"]
    if dips:
        text = f"Our {depth}-layer CNN thus shows a BnB dip, a cost of co-adaptation, {places(dips, a)}"
    else:
        text = f"Our {depth}-layer CNN thus shows no sign of Yosinski's BnB dip at layers 3 to 5 of an 8-layer network"
    if ruled and len(ruled) == len(verdicts):
        return text + f", and every task rules one larger than {MARGIN * 100:g} pp out."
    if ruled:
        names = and_join(f"{t.n_target}-image" for t in ruled)
        return text + f", but only the {names} task{'s' if len(ruled) > 1 else ''} can rule one larger than {MARGIN * 100:g} pp out."
    return text + f", but no task can rule one larger than {MARGIN * 100:g} pp out."


# --------------------------------------------------------------------------- 7. where transfer hurt


def where_hurt(a: Analysis) -> str:
    parts = ["**Where transfer hurt.**", cross_fine_tuned(a), frozen_whole(a)]
    return " ".join(p for p in parts if p) if len([p for p in parts if p]) > 1 else ""


def cross_fine_tuned(a: Analysis) -> str:
    cross = a.role("cross")
    table = a.table(cross)
    if cross is None or table is None:
        return ""
    cells = table.curve(ANB_PLUS) + [c for (name, freeze, _), c in a.filter_cells.items() if name == cross.name and not freeze]
    if not cells:
        return ""
    hurt = [c for c in cells if c.down]
    text = "The cross-domain pair was chosen as one where transfer may well hurt, and with fine-tuning it "
    if hurt:
        text += f"did in {len(hurt)} of {len(cells)} fine-tuned cells after Holm"
    else:
        above = sum(c.mean > 0 for c in cells)
        text += "did not: " + ("every fine-tuned textures -> digits cell is above scratch on average" if above == len(cells)
                               else f"{above} of {len(cells)} fine-tuned textures -> digits cells are above scratch on average, none significantly below")
    avg = a.average(cross, ANB_PLUS)
    if avg is not None:
        text += {"above": ", and the seed average over k is significantly above",
                 "below": ", and the seed average over k is significantly below",
                 "equivalent": f", and the seed average over k is within {M} (≡)",
                 "inconclusive": (f", and the seed average over k is {'above' if avg.mean > 0 else 'below'} only nominally "
                                  f"(raw p {p_fmt(avg.p)}, p_H = {p_fmt(avg.p_holm)})" if avg.nominal
                                  else ", and the seed average over k is not shown to differ")}[verdict(avg)]
    return text + "."


def frozen_whole(a: Analysis) -> str:
    deep = [(t, deepest(t, ANB)) for t in tables_with(a, ANB)]
    deep = [(t, c) for t, c in deep if c is not None]
    if not deep:
        return ""
    trends = [tr for tr in (a.depth_trend(t.task, ANB) for t, _ in deep) if tr is not None]
    below = [(t, c) for t, c in deep if c.mean < 0]
    counts = {(c.below, c.n) for _, c in below}
    seeds = f" ({deep[0][1].below} of {deep[0][1].n} seeds each)" if len(counts) == 1 and len(below) == len(deep) else ""
    where = "in every task" if len(below) == len(deep) else f"in {len(below)} of {len(deep)} tasks"
    k = deep[0][0].depths[-1]
    stack = "the whole inherited feature extractor" if k >= int(deep[0][0].task.params.get("depth", k)) else f"the first {k} inherited layers"
    text = f"What hurt, in direction {where}{seeds}, was freezing {stack}"
    shown, nominal = shown_tasks(deep, trends)
    by_trend = [t for t in shown if any(tr.task.name == t.name and tr.slope.down for tr in trends)]
    by_cell = [t.task for t, c in deep if c.down]
    if shown:
        cell = f"in the k = {deep[0][0].depths[-1]} cell itself"
        if by_trend and by_cell and places(by_trend, a) == places(by_cell, a):
            ways = [f"through the depth trend and {cell} {places(by_cell, a)}"]
        else:
            ways = ([f"through the depth trend {places(by_trend, a)}"] if by_trend else []) + ([f"{cell} {places(by_cell, a)}"] if by_cell else [])
        text += "; after correction this is shown " + " and ".join(ways)
    if nominal:
        raw = [c.p for t, c in deep if t.task in nominal] + [tr.slope.p for tr in trends if tr.task in nominal]
        raw = [p for p in raw if p < ALPHA]
        text += (f"{', and' if shown else '; after correction it is not shown anywhere, and'} remains nominal "
                 f"(raw p ≈ {loose_range(raw)}) {places(nominal, a)}")
    elif not shown:
        text += "; it is not significant anywhere, even before correction"
    return text + "."
