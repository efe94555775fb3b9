"""Plots as files or inline SVG, drawn with matplotlib's Agg backend (no display, no network)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False  # labels are data (a source may be `$\\frac{a}{$`), not TeX
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
    if axes.get_legend_handles_labels()[0]:
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


def funnel(labels: list[str], kept: list[int], dropped: dict[str, list[int]]) -> Any:
    """Per step (top to bottom), rows kept and rows dropped by reason, as stacked horizontal bars."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(10, max(3.0, 0.45 * len(labels) + 1.2, 0.16 * len(dropped) + 1)), dpi=100)
    y = np.arange(len(labels))[::-1]
    axes.barh(y, kept, color="#4c78a8", label="kept")
    left = np.array(kept, dtype=np.float64)
    palette = plt.get_cmap("tab20").colors[2:]  # not the blue of `kept`
    for i, (reason, counts) in enumerate(dropped.items()):
        axes.barh(y, counts, left=left, label=reason, color=palette[i % len(palette)])
        left += np.array(counts)
    axes.set_yticks(y, labels)
    axes.set_xlabel("rows")
    axes.grid(axis="x", alpha=0.3)
    # beside the bars, not over them
    axes.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.tight_layout()
    return figure


def score_histogram(kept: np.ndarray, dropped: np.ndarray, name: str, cut: float | None, log_x: bool) -> Any:
    """Scores of kept and dropped rows (stacked), with the cut between them marked."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.5, 3.2), dpi=100)
    values = np.concatenate([kept, dropped])
    if log_x:
        values = values[values > 0]
        kept, dropped = kept[kept > 0], dropped[dropped > 0]
        bins = np.geomspace(values.min(), values.max(), 40) if len(values) else 10
        axes.set_xscale("log")
    else:
        bins = np.linspace(values.min(), values.max(), 40) if len(values) and values.min() < values.max() else 10
    axes.hist([kept, dropped], bins=bins, stacked=True, color=["#4c78a8", "#e45756"], label=["kept", "dropped"])
    if cut is not None:
        axes.axvline(cut, color="black", linestyle="--", linewidth=1, label=f"cut {cut:.4g}")
    axes.set_xlabel(name)
    axes.set_ylabel("rows")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def cluster_bars(sizes: np.ndarray, kept: np.ndarray) -> Any:
    """Cluster sizes (largest first) and the rows kept from each."""
    plt = _pyplot()
    order = np.argsort(-sizes, kind="stable")
    figure, axes = plt.subplots(figsize=(7, 3), dpi=100)
    x = np.arange(len(sizes))
    axes.bar(x, sizes[order], color="#bab0ac", label="rows")
    axes.bar(x, kept[order], color="#4c78a8", label="kept")
    axes.set_xlabel("cluster (by size)")
    axes.set_ylabel("rows")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def embedding_map(points: np.ndarray, sources: list[str], kept: np.ndarray, method: str) -> Any:
    """2-D projection of embeddings, coloured by source (left) and by kept (right)."""
    plt = _pyplot()
    figure, (by_source, by_kept) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=100)
    for source in sorted(set(sources)):
        mask = np.array([s == source for s in sources])
        by_source.scatter(points[mask, 0], points[mask, 1], s=5, alpha=0.6, label=source)
    by_source.legend(fontsize=6, markerscale=2)
    by_source.set_title(f"by source ({method})", fontsize=9)
    by_kept.scatter(points[~kept, 0], points[~kept, 1], s=5, alpha=0.4, color="#bab0ac", label="dropped")
    by_kept.scatter(points[kept, 0], points[kept, 1], s=5, alpha=0.7, color="#4c78a8", label="kept")
    by_kept.legend(fontsize=7, markerscale=2)
    by_kept.set_title("kept in the final step", fontsize=9)
    for axes in (by_source, by_kept):
        axes.set_xticks([])
        axes.set_yticks([])
    figure.tight_layout()
    return figure


def shares(parts: list[str], asked: list[float], taken: list[float]) -> Any:
    """A mixture's share per part: asked (weights) against taken."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.4), dpi=100)
    x = np.arange(len(parts))
    axes.bar(x - 0.2, asked, width=0.4, label="asked", color="#bab0ac")
    axes.bar(x + 0.2, taken, width=0.4, label="taken", color="#4c78a8")
    axes.set_xticks(x, parts, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel("share")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def round_weights(rounds: list[dict[str, Any]]) -> Any:
    """Iterative kMQ: each cluster's weight per round (uniform before the first)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 3), dpi=100)
    k = len(rounds[0]["weights"])
    x = np.arange(k)
    width = 0.8 / len(rounds)
    for i, r in enumerate(rounds):
        axes.bar(x + i * width - 0.4 + width / 2, r["weights"], width=width, label=f"round {r['round']}")
    axes.axhline(1 / k, color="black", linestyle=":", linewidth=1, label="uniform")
    axes.set_xlabel("cluster")
    axes.set_ylabel("weight")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def search_proxies(parts: list[str], weights: np.ndarray, loss: np.ndarray, predicted: np.ndarray) -> Any:
    """A mixture search: each proxy's loss against its weight of each part, and the regressor's out-of-fold
    prediction against the measured loss."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(parts) + 1, figsize=(2.4 * (len(parts) + 1), 2.6), dpi=100, squeeze=False)
    for k, part in enumerate(parts):
        axes[0, k].scatter(weights[:, k], loss, s=10, color="#4c78a8")
        axes[0, k].set_xlabel(f"weight of {part}", fontsize=8)
        axes[0, k].set_ylabel("loss" if k == 0 else "", fontsize=8)
    last = axes[0, len(parts)]
    last.scatter(predicted, loss, s=10, color="#f58518")
    low, high = float(min(loss.min(), predicted.min())), float(max(loss.max(), predicted.max()))
    last.plot([low, high], [low, high], color="black", linestyle=":", linewidth=1)
    last.set_xlabel("predicted (out of fold)", fontsize=8)
    last.set_ylabel("measured", fontsize=8)
    figure.tight_layout()
    return figure
