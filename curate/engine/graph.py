"""The pipeline as a graph: steps named by label, each reading the steps its `from:` names.

Pure functions over labels, used by config validation (every problem before any work) and by the planner.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

INGEST = "ingest"
# Names the SQL views and run folders already use: a step cannot take them.
RESERVED = frozenset({"target", "heldout", "rejected", "final", "manifest", "steps"})
LABEL_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # ASCII, at most 64: folder, view and file names


def label_problem(label: object) -> str | None:
    """Why a label cannot name a step (None when it can)."""
    if not isinstance(label, str) or not LABEL_PATTERN.fullmatch(label):
        shown = repr(label)[:80] + ("..." if len(repr(label)) > 80 else "")
        return f"a label is 1 to 64 ASCII letters, digits and '_' (not starting with a digit), got {shown}"
    if label in RESERVED or label == INGEST:
        return f"{label!r} is reserved (reserved: {', '.join(sorted(RESERVED | {INGEST}))})"
    return None


def find_cycle(parents: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle of labels (first label repeated at the end), or None. Labels missing from `parents` have none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for parent in parents.get(node, ()):
            if state.get(parent) == 1:
                return [*path[path.index(parent):], parent]
            if state.get(parent) is None and (found := visit(parent)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in parents:
        if state.get(node) is None and (found := visit(node)) is not None:
            return found
    return None


def topological_order(labels: Sequence[str], parents: Mapping[str, Sequence[str]]) -> list[str]:
    """`labels` reordered so that every step comes after its parents; steps keep their written order where
    the graph allows (a stable Kahn's algorithm). Assumes no cycle (see `find_cycle`)."""
    position = {label: i for i, label in enumerate(labels)}
    waiting = {label: {p for p in parents.get(label, ()) if p in position} for label in labels}
    order: list[str] = []
    done: set[str] = set()
    while len(order) < len(labels):
        ready = [label for label in labels if label not in done and waiting[label] <= done]
        if not ready:
            raise ValueError("the steps form a cycle")
        first = min(ready, key=position.__getitem__)
        order.append(first)
        done.add(first)
    return order


def descendants(label: str, parents: Mapping[str, Sequence[str]]) -> set[str]:
    """Every step that reads `label`, directly or through others."""
    children: dict[str, list[str]] = {}
    for child, ps in parents.items():
        for p in ps:
            children.setdefault(p, []).append(child)
    found, todo = set(), [label]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
