"""The outcome and override report: what the cards decided and what clinicians did with them.

Why: the cards are only worth their clicks if clinicians act on them.  Counting, per guideline
and indication, how many cards were accepted, overridden or ignored — and which override
reasons were given — shows which criteria produce cards people disagree with.  The data comes
from :class:`~cds_service.store.database.Store` (aggregated in SQL, never per patient); everything here
is a pure function over those rows, so the CLI table, the HTML page and the tests share it.

Rows are *order decisions*, not cards: the store counts the repeated cards of every order-select
call about one unchanged order once (Store._LATEST_FEEDBACK).  What a reader sees are clinical
labels — the program's and guideline's names, the indication as the guideline words it, the card
outcome in words — from :class:`Labels` (built from the registry); the ids stay in the JSON.

The HTML page is self-contained (inline CSS and SVG, no script, no external asset) so it can be
saved, mailed or served behind a strict Content-Security-Policy.  Every value is escaped with
:func:`html.escape`; free-text comments are never part of the rows, only how many there were.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

FEEDBACK_KINDS = ("accepted", "overridden", "no_feedback")
KIND_LABELS = {"accepted": "accepted", "overridden": "overridden", "no_feedback": "no feedback"}
KIND_COLOURS = {"accepted": "#2e7d32", "overridden": "#c62828", "no_feedback": "#9e9e9e"}
NONE = "-"
OUTCOME_WORDS = {"approve": "approved", "alternative": "alternative suggested",
                 "documentation": "documentation asked", "no-policy": "no guideline for this study",
                 "incomplete": "record could not be read"}
PLAIN_DISMISS = "dismissed without a reason"


@dataclass(frozen=True)
class Labels:
    """Clinical names for the ids the store keeps: program → name, guideline → title,
    (guideline, rule) → the rule's label.  An id it does not know is shown as it is."""

    programs: dict = field(default_factory=dict)
    guidelines: dict = field(default_factory=dict)
    rules: dict = field(default_factory=dict)

    @classmethod
    def from_registry(cls, registry) -> Labels:
        guidelines = registry.guidelines.values()
        return cls(programs={p.id: p.name for p in registry.routing.programs.values()},
                   guidelines={g.id: g.title for g in guidelines},
                   rules={(g.id, r.id): r.label for g in guidelines
                          for r in (*g.indications, *g.gates, *g.alternatives)})

    def program(self, program: str | None) -> str | None:
        return self.programs.get(program, program)

    def guideline(self, guideline: str | None) -> str | None:
        return self.guidelines.get(guideline, guideline)

    def indication(self, guideline: str | None, indication: str | None) -> str | None:
        return self.rules.get((guideline, indication), indication)

    def names(self, program, guideline, indication) -> list[str | None]:
        return [self.program(program), self.guideline(guideline), self.indication(guideline, indication)]


@dataclass(frozen=True)
class OutcomeRow:
    """Cards of one (program, guideline, indication, card outcome) and the clinicians' actions."""

    program: str | None
    guideline: str | None
    indication: str | None
    outcome: str
    shown: int
    accepted: int
    overridden: int
    no_feedback: int


@dataclass(frozen=True)
class ReasonRow:
    """One override reason given for cards of one (program, guideline, indication, outcome)."""

    program: str | None
    guideline: str | None
    indication: str | None
    outcome: str
    reason_system: str | None
    reason_code: str | None
    reason_display: str | None
    overrides: int
    with_comment: int


@dataclass(frozen=True)
class Bar:
    """One bar of the chart: all cards of a (program, guideline, indication), by feedback."""

    program: str | None
    guideline: str | None
    indication: str | None
    accepted: int
    overridden: int
    no_feedback: int

    @property
    def label(self) -> str:
        return " / ".join(v or NONE for v in (self.program, self.guideline, self.indication))

    @property
    def shown(self) -> int:
        return self.accepted + self.overridden + self.no_feedback


@dataclass(frozen=True)
class Report:
    rows: tuple[OutcomeRow, ...]
    reasons: tuple[ReasonRow, ...]
    bars: tuple[Bar, ...]
    cards_without_decision: int = 0
    labels: Labels = Labels()

    @property
    def total(self) -> dict[str, int]:
        return {k: sum(getattr(r, k) for r in self.rows) for k in ("shown", *FEEDBACK_KINDS)}


def build_report(outcome_rows: list[dict], reason_rows: list[dict], cards_without_decision: int = 0,
                 labels: Labels | None = None) -> Report:
    """Turn :meth:`Store.outcome_counts` / :meth:`Store.override_reason_counts` rows into a Report."""
    rows = tuple(sorted((OutcomeRow(**row) for row in outcome_rows),
                        key=lambda r: _sort_key((r.program, r.guideline, r.indication, r.outcome))))
    reasons = tuple(sorted((ReasonRow(**row) for row in reason_rows),
                           key=lambda r: (_sort_key((r.program, r.guideline, r.indication, r.outcome)), -r.overrides)))
    grouped: dict[tuple, list[int]] = {}
    for row in rows:
        counts = grouped.setdefault((row.program, row.guideline, row.indication), [0, 0, 0])
        for i, kind in enumerate(FEEDBACK_KINDS):
            counts[i] += getattr(row, kind)
    labels = labels or Labels()
    bars = tuple(Bar(*labels.names(*key), *counts)
                 for key, counts in sorted(grouped.items(), key=lambda kv: _sort_key(kv[0])))
    return Report(rows, reasons, bars, cards_without_decision, labels)


def load_report(store, labels: Labels | None = None) -> Report:
    """The report over everything a store holds, worded with ``labels``."""
    return build_report(store.outcome_counts(), store.override_reason_counts(),
                        store.count_cards_without_decision(), labels)


def report_json(report: Report) -> dict:
    """The report for a program (``Accept: application/json``): ids and labels side by side."""
    def named(r) -> dict:
        program, guideline, indication = report.labels.names(r.program, r.guideline, r.indication)
        return {"programLabel": program, "guidelineLabel": guideline, "indicationLabel": indication}
    return {"total": report.total, "cardsWithoutDecision": report.cards_without_decision,
            "orderDecisions": [{**vars(r), **named(r)} for r in report.rows],
            "overrideReasons": [{**vars(r), **named(r), "reason": reason_label(r)} for r in report.reasons]}


def _sort_key(key: tuple) -> tuple:
    return tuple((v is None, v or "") for v in key)


def override_share(accepted: int, overridden: int) -> str:
    """Overridden as a share of the cards that got feedback ("-" when none did)."""
    answered = accepted + overridden
    return f"{100 * overridden / answered:.0f}%" if answered else NONE


def reason_label(row: ReasonRow) -> str:
    """The reason as a reader says it; an override without a reason code is a plain dismiss."""
    if row.reason_code is None:
        return PLAIN_DISMISS
    return f"{row.reason_code} ({row.reason_display})" if row.reason_display else row.reason_code


def _is_number(value: object) -> bool:
    return isinstance(value, int) or (isinstance(value, str) and value.endswith("%") and value[:-1].isdigit())


def text_table(headers: list[str], rows: list[list[object]]) -> str:
    """A plain-text table; numbers right-aligned, everything else left-aligned."""
    cells = [[NONE if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    numeric = [any(_is_number(r[i]) for r in rows) and all(_is_number(r[i]) for r in rows if r[i] not in (None, "", NONE))
               for i in range(len(headers))]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


OUTCOME_HEADERS = ["program", "guideline", "indication", "card", "orders", "accepted", "overridden",
                   "no feedback", "overridden %"]
REASON_HEADERS = ["program", "guideline", "indication", "card", "override reason", "overrides", "with comment"]


def _outcome_cells(report: Report) -> list[list[object]]:
    names = report.labels.names
    cells: list[list[object]] = [
        [*names(r.program, r.guideline, r.indication), OUTCOME_WORDS.get(r.outcome, r.outcome), r.shown, r.accepted,
         r.overridden, r.no_feedback, override_share(r.accepted, r.overridden)] for r in report.rows]
    t = report.total
    cells.append(["total", "", "", "", t["shown"], t["accepted"], t["overridden"], t["no_feedback"],
                  override_share(t["accepted"], t["overridden"])])
    return cells


def _reason_cells(report: Report) -> list[list[object]]:
    return [[*report.labels.names(r.program, r.guideline, r.indication), OUTCOME_WORDS.get(r.outcome, r.outcome),
             reason_label(r), r.overrides, r.with_comment] for r in report.reasons]


def render_text(report: Report) -> str:
    """The CLI view: one table of cards by outcome and feedback, one of override reasons."""
    if not report.rows:
        return "no decisions recorded yet"
    parts = ["Order decisions by guideline, indication and card outcome (the repeated cards of one order count "
             "once, by the latest feedback)",
             "", text_table(OUTCOME_HEADERS, _outcome_cells(report)), "", "Override reasons", ""]
    parts.append(text_table(REASON_HEADERS, _reason_cells(report)) if report.reasons else "no overrides recorded")
    if report.cards_without_decision:
        parts += ["", f"{report.cards_without_decision} card(s) with feedback but no stored decision are not counted."]
    return "\n".join(parts)


# -- HTML ------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#212121;max-width:72em}
table{border-collapse:collapse;margin:1em 0}th,td{padding:.25em .6em;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}tr.total td{font-weight:600;border-top:2px solid #999}
.legend span{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 1em;vertical-align:middle}
"""
ROW_H, LABEL_H, BAR_H, CHART_W = 58, 30, 18, 800


def chart_svg(bars: tuple[Bar, ...]) -> str:
    """A stacked horizontal bar per (program, guideline, indication): accepted, overridden, no feedback.

    Each segment carries ``data-kind``/``data-count`` and a ``<title>`` tooltip, so it is readable
    without colour and checkable by a parser.
    """
    scale = CHART_W / max([b.shown for b in bars] + [1])
    height = ROW_H * len(bars) + 8
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{height}" role="img" '
           f'aria-label="Cards per guideline and indication by clinician feedback">']
    for i, bar in enumerate(bars):
        y = i * ROW_H + 4
        label = escape(bar.label)
        out.append(f'<g class="bar" data-label="{label}" data-shown="{bar.shown}">')
        counts = ", ".join(f"{getattr(bar, k)} {KIND_LABELS[k]}" for k in FEEDBACK_KINDS)
        # Two lines, so a long guideline title never runs past the chart: the indication, then
        # program and guideline in grey with the counts.
        where = escape(" / ".join(v or NONE for v in (bar.program, bar.guideline)))
        out.append(f'<text x="0" y="{y + 12}" font-size="12">{escape(bar.indication or NONE)}</text>'
                   f'<text x="0" y="{y + 26}" font-size="11" fill="#616161">{where} ({counts})</text>')
        x = 0.0
        for kind in FEEDBACK_KINDS:
            count = getattr(bar, kind)
            width = count * scale
            out.append(f'<rect class="{kind}" data-kind="{kind}" data-count="{count}" x="{x:.1f}" '
                       f'y="{y + LABEL_H}" width="{width:.1f}" height="{BAR_H}" fill="{KIND_COLOURS[kind]}">'
                       f'<title>{label}: {count} {KIND_LABELS[kind]}</title></rect>')
            x += width
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def _html_table(headers: list[str], cells: list[list[object]], total_last: bool = False) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(cells):
        cls = ' class="total"' if total_last and i == len(cells) - 1 else ""
        tds = "".join(f'<td class="n">{escape(str(v))}</td>' if _is_number(v) else f"<td>{escape(NONE if v is None else str(v))}</td>"
                      for v in row)
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(report: Report, generated_at: str | None = None) -> str:
    """The operator page: summary, bar chart (inline SVG), outcome table, override-reason table."""
    title = "spine-cds: card outcomes and override reasons"
    parts = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
             f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{escape(title)}</h1>"]
    if generated_at:
        parts.append(f"<p>Generated {escape(generated_at)}.</p>")
    if not report.rows:
        parts.append("<p>No decisions recorded yet.</p></body></html>")
        return "\n".join(parts)
    t = report.total
    parts.append(f"<p>{t['shown']} order decisions shown: {t['accepted']} accepted, {t['overridden']} overridden, "
                 f"{t['no_feedback']} without feedback. The cards of every order-select call about one unchanged "
                 "order count once, by the clinician's latest feedback.</p>")
    legend = "".join(f'<span style="background:{KIND_COLOURS[k]}"></span>{escape(KIND_LABELS[k])}' for k in FEEDBACK_KINDS)
    parts += ["<h2>Feedback per guideline and indication</h2>", f'<p class="legend">{legend}</p>',
              chart_svg(report.bars), "<h2>Order decisions by outcome</h2>",
              _html_table(OUTCOME_HEADERS, _outcome_cells(report), total_last=True), "<h2>Override reasons</h2>"]
    parts.append(_html_table(REASON_HEADERS, _reason_cells(report)) if report.reasons
                 else "<p>No overrides recorded.</p>")
    if report.cards_without_decision:
        parts.append(f"<p>{report.cards_without_decision} card(s) with feedback but no stored decision are not counted.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
