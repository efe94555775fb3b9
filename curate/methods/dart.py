"""DART's allocation and rejection sampling (docs/methods.md §3.3-3.4), independent of any model or table.

- `fail_rates(corrects, trials, smoothing)`: 1 - pass rate, with optional Laplace smoothing (c+1)/(n+2).
- `prop2diff_targets(difficulty, k_p, solvable)`: t_i = max(1, ceil(k_p * d_i / max_j d_j)), the max over the
  solvable queries (pass rate > 0), capped at k_p (so an unsolved query's target is k_p).
- `rejection_sample(...)`: draws rounds of samples for the queries that have fewer correct responses than their
  target, until the target or the trial cap `n_max`; keeps the first `t_i` correct ones (batches overshoot).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

TARGET_REACHED, TRIAL_CAP, UNSOLVED = "target_reached", "trial_cap", "unsolved"


def fail_rates(corrects: np.ndarray, trials: np.ndarray, smoothing: bool = False) -> np.ndarray:
    corrects, trials = np.asarray(corrects, np.float64), np.asarray(trials, np.float64)
    if smoothing:
        return 1.0 - (corrects + 1.0) / (trials + 2.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(trials > 0, 1.0 - corrects / np.maximum(trials, 1), np.nan)


def prop2diff_targets(difficulty: np.ndarray, k_p: int, solvable: np.ndarray | None = None) -> np.ndarray:
    """Targets proportional to difficulty, the hardest solvable query getting k_p; never below 1 or above k_p."""
    difficulty = np.asarray(difficulty, np.float64)
    solvable = np.isfinite(difficulty) if solvable is None else np.asarray(solvable, bool) & np.isfinite(difficulty)
    top = difficulty[solvable].max() if solvable.any() else 0.0
    if not top > 0:  # every solvable query is equally (not at all) hard
        return np.where(np.isfinite(difficulty), 1, 0).astype(np.int64)
    with np.errstate(invalid="ignore"):
        raw = np.ceil(np.round(k_p * difficulty / top, 9))  # round: 0.1/0.9*... must not ceil 2.0000001 to 3
    return np.where(np.isfinite(difficulty), np.clip(raw, 1, k_p), 0).astype(np.int64)


@dataclass
class QueryState:
    """One query's sampling so far: trials, correct responses (in the order drawn), and why it stopped."""

    target: int
    trials: int = 0
    correct: list[str] = field(default_factory=list)
    corrects: int = 0  # correct responses drawn, duplicates included
    stop: str = ""

    def kept(self) -> list[str]:
        return self.correct[: self.target]


Draw = Callable[[list[int], int, list[int]], list[list[str]]]  # (query positions, round, counts) -> responses
Check = Callable[[int, Sequence[str]], list[bool]]  # (query position, responses) -> correct?


def rejection_sample(states: list[QueryState], draw: Draw, check: Check, n_max: int, batch: int,
                     dedupe: bool = True, on_round: Callable[[int, int], None] | None = None) -> list[QueryState]:
    """Sample in rounds until every query has `target` correct responses or `n_max` trials. A round draws
    min(batch, n_max - trials) more samples for each unfinished query. `dedupe`: a correct response already kept
    for the query does not count again."""
    round_ = 0
    while True:
        todo = [i for i, s in enumerate(states) if len(s.correct) < s.target and s.trials < n_max]
        if not todo:
            break
        counts = [min(batch, n_max - states[i].trials) for i in todo]
        drawn = draw(todo, round_, counts)
        for i, count, responses in zip(todo, counts, drawn, strict=True):
            state = states[i]
            state.trials += count
            verdicts = check(i, responses)
            for response, good in zip(responses, verdicts, strict=True):
                if good:
                    state.corrects += 1
                    if not (dedupe and response in state.correct):
                        state.correct.append(response)
        if on_round is not None:
            on_round(round_, len(todo))
        round_ += 1
    for state in states:
        state.stop = TARGET_REACHED if len(state.correct) >= state.target else \
            UNSOLVED if state.corrects == 0 else TRIAL_CAP
    return states

