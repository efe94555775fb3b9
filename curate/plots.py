"""Plots as files or inline SVG, drawn with matplotlib's Agg backend (no display, no network)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _mean_curve(curves: list[list[dict[str, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokens, mean loss and std over seeds at each evaluation point (seeds of one arm share the points; a
    shorter curve ends the band)."""
    n = min(len(c) for c in curves)
    tokens = np.array([[c[i]["tokens"] for i in range(n)] for c in curves], dtype=np.float64).mean(axis=0)
    losses = np.array([[c[i]["loss"] for i in range(n)] for c in curves], dtype=np.float64)
    return tokens, losses.mean(axis=0), losses.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(n)


def loss_curves(summary: dict[str, Any]) -> Any:
    """Held-out loss against training tokens per arm (mean over seeds, a band of one std)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, arm in summary["arms"].items():
        curves = [c for c in arm.get("curves", []) if c]
        if not curves:
            continue
        tokens, mean, std = _mean_curve(curves)
        style = {"selection": "-", "random": "--", "full": ":"}.get(name, "-.")
        line, = axes.plot(tokens, mean, style, marker=".", label=f"{name} ({arm['mean']:.3f})")
        axes.fill_between(tokens, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_xlabel("training tokens")
    axes.set_ylabel("held-out loss (NLL per supervised token)")
    axes.set_title("Held-out loss by arm (band: one std over seeds)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def save_png(figure: Any, path: str | Path) -> None:
    figure.savefig(path, format="png")
    _pyplot().close(figure)


def svg_text(figure: Any) -> str:
    """The figure as an inline `<svg>` element (no XML header)."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    _pyplot().close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def loss_curves_png(summary: dict[str, Any], path: str | Path) -> None:
    save_png(loss_curves(summary), path)
