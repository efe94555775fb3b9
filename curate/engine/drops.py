"""No silent drops: a step that drops much of its input for reasons besides its selection budget is named.

A selection keeps its budget by design (`not_selected`, a mixture's `not_sampled`: the stage's
`selection_reasons`); any other reason (a filter's threshold, a default such as DSIR's `min_words`, bad input)
that drops more than the run's `warn_drop_share` of a step's rows gets a warning in the console, in `run.json`
(`warnings`) and at the top of the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def is_selection(reason: str, selection_reasons: Sequence[str]) -> bool:
    return any(reason.startswith(prefix) for prefix in selection_reasons)


def drop_warning(label: str, rows_in: int, reasons: dict[str, int], selection_reasons: Sequence[str],
                 share: float) -> dict[str, Any] | None:
    """The warning for one step, or None: the share of its input dropped for other reasons, and those reasons."""
    if rows_in <= 0:
        return None
    other = {r: n for r, n in reasons.items() if not is_selection(str(r), selection_reasons)}
    dropped = sum(other.values())
    if dropped / rows_in <= share:
        return None
    top = sorted(other.items(), key=lambda kv: -kv[1])[:3]
    listed = ", ".join(f"{reason} {n:,} ({n / rows_in:.0%})" for reason, n in top)
    return {"step": label, "share": round(dropped / rows_in, 4), "rows_in": rows_in, "dropped": dropped,
            "reasons": dict(top),
            "message": f"{label}: dropped {dropped:,} of {rows_in:,} rows ({dropped / rows_in:.0%}) for reasons "
                       f"besides its selection budget: {listed}; above warn_drop_share {share:g}: check the step's "
                       "settings (`curate sql` shows the rows: SELECT * FROM rejected WHERE stage = "
                       f"'{label}')"}
