"""The images report's paragraphs on fine-tuned transfer: AnB+ against scratch per task (the
seed average over k, its TOST, the cells Holm shows, the depth trend) and BnB+, the target's
own layers fine-tuned. Each verdict comes from the tests (see `images_prose.py`)."""

from __future__ import annotations

from ptbench.results.stats import ALPHA

from .images_format import and_join, count_word, iv, levels_text, p_fmt, pp, range_text
from .images_stats import ANB_PLUS, BNB_PLUS, Analysis, LayerTable, TaskInfo, Tested
from .images_words import M, ORDER, about, n_images, p_range_loose, places, start, tables_with, target_phrase, unique, verdict, where_cell

# --------------------------------------------------------------------------- 3. fine-tuned transfer


HEADLINE = {"equivalent": "equivalent", "above": "above scratch", "below": "below scratch", "inconclusive": "inconclusive"}


def fine_tuned(a: Analysis) -> str:
    tables = tables_with(a, ANB_PLUS)
    rows = [(t, a.average(t.task, ANB_PLUS)) for t in tables]
    rows = sorted([(t, avg) for t, avg in rows if avg is not None], key=lambda r: ORDER[verdict(r[1])])
    if not rows:
        return ""
    groups: dict[str, list[str]] = {}
    for t, avg in rows:
        groups.setdefault(HEADLINE[verdict(avg)], []).append(t.task.phrase if t.task.kind == "textures" else target_phrase(t.task))
    head = ", ".join(f"{word} {and_join(where)}" for word, where in groups.items())
    parts = [f"**Fine-tuned transfer vs scratch: {head}.**"]
    for table, avg in rows:
        v = verdict(avg)
        parts.append(anb_plus_equivalent(a, table, avg) if v == "equivalent" else anb_plus_differs(a, table, avg) if v in ("above", "below")
                     else anb_plus_open(a, table, avg))
    parts.append(few_shot_reading(a))
    return " ".join(p for p in parts if p)


def anb_plus_equivalent(a: Analysis, table: LayerTable, avg: Tested) -> str:
    cells = table.curve(ANB_PLUS)
    raw = [c.tost.p for c in cells]
    text = (f"{start(table.task)} AnB+ is equivalent to scratch within {M}: averaged over k per seed {iv(avg.interval(), 2)} pp, "
            f"TOST p_H = {p_fmt(avg.tost_holm)}; per cell the raw TOST p are {p_range_loose(raw)}")
    alone = [c for c in cells if c.equivalent]
    if max(raw) < ALPHA:
        text += (f" at every k, which also shows equivalence at all {count_word(len(cells))} depths jointly as an "
                 "intersection–union test (no correction needed for an \"all k\" claim)")
        text += (f", though no single cell survives Holm over the {len(table.cells)} cells" if not alone
                 else f", and {levels_text(c.info['k'] for c in alone)} {'is' if len(alone) == 1 else 'are'} ≡ on their own after Holm over the {len(table.cells)} cells")
    else:
        text += ", so equivalence at every depth jointly is not shown"
    text += "."
    if not any(c.up for c in cells):
        text += (" This is Yosinski's \"at or above base\" in the form the data support: equal within "
                 f"{M}, no measurable gain.")
    return text


def anb_plus_differs(a: Analysis, table: LayerTable, avg: Tested) -> str:
    cells = table.curve(ANB_PLUS)
    way = "above" if avg.mean > 0 else "below"
    text = (f"{start(table.task)} AnB+ is {way} scratch: the per-seed average over k is {iv(avg.interval(), 2)} pp, "
            f"{avg.below} of {avg.n} seeds below, p_H = {p_fmt(avg.p_holm)} (n = {avg.n} seeds; the {avg.n * len(cells)} seed-k "
            "pairs share one scratch run per seed and are not independent).")
    return text + " " + anb_plus_cells(a, table, always=True)


def anb_plus_cells(a: Analysis, table: LayerTable, always: bool = False) -> str:
    """Which AnB+ cells Holm shows (said when one is, or `always`), and the depth trend."""
    cells = table.curve(ANB_PLUS)
    significant = [c for c in cells if c.significant]
    if not significant and not always:
        return ""
    if not significant:
        per_cell = f"Per cell none is significant after Holm over the {len(table.cells)} cells"
    else:
        only = "only " if len(significant) < len(cells) else ""
        per_cell = (f"Per cell {only}{levels_text(c.info['k'] for c in significant)} {'is' if len(significant) == 1 else 'are'} significant after Holm ("
                    + "; ".join(f"{pp(c.mean)}, p_H = {p_fmt(c.p_holm)}" for c in significant) + ")")
    trend = a.depth_trend(table.task, ANB_PLUS)
    if trend is not None:
        per_cell += (f", and there is no trend over depth ({pp(trend.slope.mean, 2)} pp per layer, p_H = {p_fmt(trend.slope.p_holm)})"
                     if not trend.slope.significant else
                     f", and the trend over depth is significant ({pp(trend.slope.mean, 2)} pp per layer, p_H = {p_fmt(trend.slope.p_holm)})")
    return per_cell + "."


def anb_plus_open(a: Analysis, table: LayerTable, avg: Tested) -> str:
    """AnB+'s seed average neither differs from scratch after Holm nor is equivalent to it."""
    ci = avg.interval()
    text = (f"{start(table.task)} AnB+ averages {iv(ci, 2)} pp ({avg.below} of {avg.n} seeds below, p_H = {p_fmt(avg.p_holm)}; "
            f"TOST p_H = {p_fmt(avg.tost_holm)})")
    if avg.nominal:
        text += (f", {'above' if avg.mean > 0 else 'below'} scratch only nominally: the uncorrected interval excludes zero "
                 f"(raw p {p_fmt(avg.p)}), but Holm over the {len(a.averages)} seed averages does not reject it, and no "
                 "equivalence is shown either.")
    else:
        text += (f": neither a {'loss' if avg.mean < 0 else 'gain'} nor an equivalence is shown, the intervals allow anything from "
                 f"about {about(ci.low)} to {about(ci.high)} pp.")
    cells = anb_plus_cells(a, table)
    return text + (" " + cells if cells else "")


def few_shot_reading(a: Analysis) -> str:
    """Our reading of why few-shot fine-tuning does not gain (not a tested claim): only when
    the few-shot digits average is not above scratch."""
    few, cross = a.role("few"), a.role("cross")
    avg = a.average(few, ANB_PLUS)
    if few is None or avg is None or avg.up:
        return ""
    facts = a.facts.loc[few.name]
    source = facts["source_acc"]
    text = ("Our reading, which the suite does not test: the digits source model is "
            + (f"nearly perfect on its own classes ({source * 100:.1f}%)" if source >= 0.99 else f"at {source * 100:.1f}% on its own classes")
            + ", and " + ("every few-shot digits run ends" if facts["train_full"] >= 1 else f"{facts['train_full'] * 100:.0f}% of the few-shot digits runs end")
            + f" at 100% training accuracy, so with {n_images(few)} target images the fine-tuned model may stop moving once it fits them")
    cross_table = a.table(cross)
    helped = cross_table is not None and (any(c.up for c in cross_table.curve(ANB_PLUS)) or bool(a.average(cross, ANB_PLUS) and a.average(cross, ANB_PLUS).up))
    if helped and cross.name in a.facts.index:
        text += f", while the texture model ({a.facts.loc[cross.name, 'source_acc'] * 100:.1f}% on its task) hands over generic detectors"
    ending = {"inconclusive": "is left open by these {n} seeds", "below": "is what these {n} seeds show",
              "equivalent": "is ruled out beyond {m} by these {n} seeds"}[verdict(avg)]
    return (text + ". Yosinski's \"+2 points from fine-tuning\" came with 645,000 target images; whether "
            f"{n_images(few)} images turn specialised inherited layers into a small negative transfer "
            + ending.format(n=count_word(avg.n), m=M) + ".")


# --------------------------------------------------------------------------- 4. BnB+


def bnb_plus(a: Analysis) -> str:
    tables = tables_with(a, BNB_PLUS)
    if not tables:
        return ""
    cells = [c for t in tables for c in t.curve(BNB_PLUS)]
    averages = [(t.task, a.average(t.task, BNB_PLUS)) for t in tables]
    averages = sorted([(task, avg) for task, avg in averages if avg is not None], key=lambda item: ORDER[verdict(item[1])])
    up = [c.info["task"] for c in cells if c.up] + [task for task, avg in averages if avg.up]
    down = [c.info["task"] for c in cells if c.down] + [task for task, avg in averages if avg.down]
    head = "is not shown above scratch anywhere" if not up else f"is above scratch {places(unique(up), a)}"
    if down:
        head += f"{' and' if up else ', and'} below it {places(unique(down), a)}"
    significant = [c for c in cells if c.significant]
    text = (f"**BnB+ (fine-tuning the target's own first layers) {head}.** The cells are {range_text([c.mean for c in cells])} pp, "
            + ("none significant after Holm" if not significant else
               f"{len(significant)} significant after Holm ({and_join(where_cell(c) for c in significant)})"))
    nominal = [c for c in cells if c.nominal and not c.significant]
    if nominal:
        text += (f" ({'the one whose uncorrected interval excludes' if len(nominal) == 1 else 'those whose uncorrected intervals exclude'} zero, "
                 + "; ".join(f"{where_cell(c)}, {iv(c.interval())}, has p_H = {p_fmt(c.p_holm)}"
                             + (f" and is TOST-equivalent instead, p_H = {p_fmt(c.tost_holm)}" if c.equivalent else "") for c in nominal) + ")")
    text += "."
    if averages:
        text += " " + "; ".join(bnb_plus_average(task, avg, i == 0) for i, (task, avg) in enumerate(averages)) + "."
        verbs = {"equivalent": "agrees", "inconclusive": "can neither confirm nor refute it", "above": "disagrees (above)", "below": "disagrees (below)"}
        by_verb: dict[str, list[TaskInfo]] = {}
        for task, avg in averages:
            by_verb.setdefault(verbs[verdict(avg)], []).append(task)
        text += (" Yosinski saw BnB+ equal to the base network; "
                 + ", ".join(f"the {and_join(f'{t.n_target}-image' for t in ts)} result{'s' if len(ts) > 1 else ''} {verb}"
                             for verb, ts in by_verb.items()) + ".")
    return text


def bnb_plus_average(task: TaskInfo, avg: Tested, first: bool) -> str:
    phrase = (task.phrase[0].upper() + task.phrase[1:]) if first else task.phrase
    v = verdict(avg)
    if v == "equivalent":
        return f"{phrase} BnB+ averaged over k is within {M} ({iv(avg.interval(), 2)}, TOST p_H = {p_fmt(avg.tost_holm)})"
    state = {"above": "above scratch", "below": "below scratch", "inconclusive": "inconclusive"}[v]
    return f"{phrase} it is {state} ({iv(avg.interval(), 2)}, p_H = {p_fmt(avg.p_holm)}, TOST p_H = {p_fmt(avg.tost_holm)})"
