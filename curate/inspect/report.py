"""`curate report RUN`: one self-contained HTML file (`report.html` in the run) that opens with no network.

Sections: the graph of steps with a funnel (rows kept and dropped per reason), a histogram of each scoring stage's
score with the cut, cluster sizes and rows kept per cluster, a 2-D map of the embeddings (PCA; UMAP when installed)
coloured by source and by kept, the mixture's parts, the closed-loop evaluation (table and loss curves), sample
rows kept and dropped per step, and run metadata (versions, timings, fingerprints).

Plots are inline SVG (matplotlib); the page has no script at all. Every text from the data goes through
`html.escape`, so a row can never inject markup or script.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from curate._version import __version__
from curate.data.dataset import side_path
from curate.inspect.summary import StepSummary, evaluations, graph_lines, leak_line, summarize_run
from curate.methods import plots
from curate.stages import REGISTRY

log = logging.getLogger("curate")
REPORT_FILE = "report.html"
SAMPLES = 3  # rows shown per step and per drop reason
MAP_POINTS = 3000
TEXT_CHARS = 400

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 13px; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top; }
td.text, th.text { text-align: left; }
.row-text { white-space: pre-wrap; word-break: break-word; max-width: 760px; text-align: left; font-family: monospace;
            font-size: 12px; }
figure.plot { margin: 0.8em 0; } figure.plot svg { max-width: 100%; height: auto; }
pre.graph { background: #f6f6f6; padding: 0.8em; }
.muted { color: #777; } .win { color: #1a7f37; font-weight: 600; } .lose { color: #b42318; font-weight: 600; }
.warn { color: #9a6700; font-weight: 600; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(header: list[str], rows: Iterable[list[Any]], text_columns: tuple[int, ...] = (0,)) -> str:
    def cell(tag: str, i: int, value: Any) -> str:
        cls = ' class="text"' if i in text_columns else ""
        return f"<{tag}{cls}>{esc(value)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(figure: Any, caption: str) -> str:
    svg = plots.svg_text(figure)
    return f'<figure class="plot">{svg}<figcaption class="muted">{esc(caption)}</figcaption></figure>'


def _number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# ---------------------------------------------------------------- sections


def _funnel(steps: list[StepSummary]) -> str:
    rows_steps = [s for s in steps if s.artifacts is None]
    reasons = sorted({r for s in rows_steps for r in s.reasons})
    dropped = {r: [s.reasons.get(r, 0) for s in rows_steps] for r in reasons}
    figure = plots.funnel([s.label for s in rows_steps], [s.rows_out for s in rows_steps], dropped)
    table = _table(["step", "stage", "from", "rows in", "kept", "added", "dropped", "reasons", "seconds"],
                   [[s.label, s.stage, ", ".join(s.parents), f"{s.rows_in:,}", f"{s.rows_kept:,}", f"{s.rows_added:,}",
                     f"{s.rows_rejected:,}", ", ".join(f"{k} {v:,}" for k, v in s.reasons.items()), f"{s.seconds:.1f}"]
                    for s in steps], text_columns=(0, 1, 2, 7))
    return (f"<h2>Steps</h2><pre class=\"graph\">{esc(chr(10).join(graph_lines(steps)))}</pre>"
            + _figure(figure, "rows kept (blue) and dropped by reason, per step") + table)


def _scores(con: Any, steps: list[StepSummary]) -> str:
    out = []
    for s in steps:
        stage = REGISTRY.get(s.stage)
        column = getattr(stage, "report_score", None) if stage else None
        if not column or s.artifacts is not None:
            continue
        try:
            found = con.execute(f'SELECT "{column}", kept FROM "{s.label}_all" WHERE "{column}" IS NOT NULL '
                                f'AND isfinite("{column}")').fetchnumpy()
        except Exception:
            continue
        values, kept = found[column].astype(np.float64), found["kept"].astype(bool)
        if not len(values):
            continue
        cut = None
        if kept.any() and (~kept).any():  # the side the stage keeps: low scores (perplexity) or high (CoLoR)
            inside = values[kept]
            cut = float(inside.max() if np.median(inside) < np.median(values[~kept]) else inside.min())
        log_x = bool(values.min() > 0 and values.max() / values.min() > 100)
        figure = plots.score_histogram(values[kept], values[~kept], column, cut, log_x)
        out.append(_figure(figure, f"{s.label}: {column} of {len(values):,} scored rows"))
    return "<h2>Scores</h2>" + "".join(out) if out else ""


def _clusters(con: Any, steps: list[StepSummary]) -> str:
    out = []
    for s in steps:
        if s.stage != "kmeans_diversity":
            continue
        found = con.execute(f'SELECT cluster, count(*) AS n, sum(kept::int) AS k FROM "{s.label}_all" '
                            "WHERE cluster IS NOT NULL GROUP BY cluster").fetchnumpy()
        if not len(found["n"]):
            continue
        sizes, kept = found["n"].astype(np.int64), found["k"].astype(np.int64)
        figure = plots.cluster_bars(sizes, kept)
        out.append(_figure(figure, f"{s.label}: {len(sizes)} clusters, {int(kept.sum()):,} of {int(sizes.sum()):,} "
                                   "rows kept"))
        rounds = side_path(s.rows, "rounds.json") if s.rows else None
        if rounds is not None and rounds.is_file():
            later = json.loads(rounds.read_text())["rounds"][1:]
            if later:
                out.append(_figure(plots.round_weights(later), f"{s.label}: cluster weights of iterative kMQ"))
    return "<h2>Clusters</h2>" + "".join(out) if out else ""


def _project(x: np.ndarray) -> tuple[np.ndarray, str]:
    try:
        import umap  # optional

        return umap.UMAP(n_components=2, random_state=0).fit_transform(x), "UMAP"
    except ImportError:
        centred = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T, "PCA"


def _embedding_map(con: Any, steps: list[StepSummary]) -> str:
    embeds = [s for s in steps if s.stage == "embed" and s.artifacts is None]
    finals = [s for s in steps if s.artifacts is None and s.output != "artifacts" and not s.sample]
    if not embeds or not finals:
        return ""
    embed, final = embeds[0], finals[-1]
    columns = {r[0] for r in con.execute(f'DESCRIBE "{embed.label}"').fetchall()}
    source = "source" if "source" in columns else "'unknown'"
    rows = con.execute(f'SELECT e.embedding, {source} AS source, f.id IS NOT NULL AS kept FROM "{embed.label}" e '
                       f'LEFT JOIN (SELECT DISTINCT id FROM "{final.label}") f USING (id) '
                       f"USING SAMPLE reservoir({MAP_POINTS} ROWS) REPEATABLE (0)").fetchall()
    rows = [r for r in rows if r[0] is not None]
    if len(rows) < 3:
        return ""
    x = np.array([r[0] for r in rows], dtype=np.float32)
    points, method = _project(x)
    figure = plots.embedding_map(points, [str(r[1]) for r in rows], np.array([bool(r[2]) for r in rows]), method)
    return ("<h2>Embeddings</h2>" + _figure(figure, f"{len(rows):,} rows of {embed.label!r} ({method}); kept: in "
                                                     f"{final.label!r}"))


def _mixtures(steps: list[StepSummary]) -> str:
    out = []
    for s in steps:
        report = side_path(s.rows, "mixture.json") if s.stage == "mixture" and s.rows else None
        if report is None or not report.is_file():
            continue
        mix = json.loads(report.read_text())
        parts = mix["parts"]
        total = sum(p.get("weight") or 0 for p in parts.values()) or 1
        figure = plots.shares(list(parts), [(p.get("weight") or 0) / total for p in parts.values()],
                              [p.get("share") or 0 for p in parts.values()])
        table = _table(["part", "weight", "rows", "rows taken", "copies", "tokens taken", "repeats", "share"],
                       [[name, _number(p.get("weight")), p["rows"], p["rows_taken"], p["copies"], p.get("tokens_taken"),
                         _number(p.get("repeats"), 2), _number(p.get("share"))] for name, p in parts.items()])
        unit = mix["budget"]["unit"]
        out.append(f"<h3>{esc(s.label)}</h3><p>budget: {esc(mix['budget'].get('asked'))} {esc(unit)} asked, "
                   f"{esc(mix['budget'].get('taken'))} taken; tokens counted with {esc(mix['tokenizer']['name'])}</p>"
                   + _figure(figure, f"{s.label}: share of {unit} per part") + table)
    return "<h2>Mixtures</h2>" + "".join(out) if out else ""


def _searches(steps: list[StepSummary]) -> str:
    out = []
    for s in steps:
        path = s.artifacts / "search.json" if s.stage == "mixture_search" and s.artifacts else None
        if path is None or not path.is_file():
            continue
        found = json.loads(path.read_text())
        parts, candidates = found["parts"], found["candidates"]
        weights = np.array([[c["weights"][p] for p in parts] for c in candidates], dtype=np.float64)
        figure = plots.search_proxies(parts, weights, np.array([c["loss"] for c in candidates]),
                                      np.array([c["predicted_out_of_fold"] for c in candidates]))
        rows = [[p, found["tokens"][p], _number(found["natural"][p]), _number(found["searched"][p]),
                 _number(found["recommended"][p])] for p in parts]
        arms = [[arm, f"{_number(v['mean'])} ± {_number(v.get('std'))}",
                 (f"{v['vs_natural']['mean']:+.3f}" if v.get("vs_natural") else "")] for arm, v in
                found["validation"].items()]
        regressor = found["regressor"]
        out.append(f"<h3>{esc(s.label)}</h3><p class=\"{'win' if found['kept'] == 'recommended' else 'lose'}\">"
                   f"kept: {esc(found['kept'])} ({esc(found['why'])}); {len(candidates)} proxies, regressor "
                   f"{esc(regressor['kind'])}, cross-validated Spearman {_number(regressor['cv_spearman'])}</p>"
                   + _table(["part", "tokens", "natural", "searched", "recommended"], rows)
                   + _table(["arm", "held-out loss", "- natural"], arms)
                   + _figure(figure, f"{s.label}: each proxy's loss against its weights, and predicted against "
                                     "measured"))
    return "<h2>Mixture search</h2>" + "".join(out) if out else ""


def _evaluations(steps: list[StepSummary]) -> str:
    out = []
    for label, results in evaluations(steps).items():
        rows = []
        for name, arm in results["arms"].items():
            vs = arm.get("vs_random") or {}
            ci = vs.get("ci95")
            diff = f"{vs['mean']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else (f"{vs['mean']:+.3f}" if vs else "")
            accuracy = arm.get("accuracy") or {}
            acc = f"{_number(accuracy.get('mean'))} ± {_number(accuracy.get('std'))}" if accuracy else "-"
            rows.append([name, round(np.mean(arm["rows"])), round(np.mean(arm["tokens"])),
                         f"{_number(arm['mean'])} ± {_number(arm['std'])}", acc, diff])
        paired = results["paired"]
        win = paired.get("excludes_zero") and paired["mean"] < 0
        verdict = ("selection beats random" if win else "random beats the selection" if paired.get("excludes_zero")
                   else "no difference from random at 95%")
        efficiency = results.get("data_efficiency")
        efficiency = f"{efficiency:.2f}x" if isinstance(efficiency, float) else str(efficiency)
        seeds = len(results["arms"]["selection"]["seeds"])
        leak = leak_line(results.get("leak"))
        out.append(f"<h3>{esc(label)}</h3><p class=\"{'win' if win else 'lose'}\">{esc(verdict)}: held-out loss "
                   f"{paired['mean']:+.3f} against random ({seeds} seeds, paired 95% interval); data efficiency "
                   f"{esc(efficiency)}</p>" + (f"<p class=\"warn\">{esc(leak)}</p>" if leak else "")
                   + _table(["arm", "rows", "tokens", "held-out loss", "accuracy", "- random (95% CI)"], rows)
                   + _figure(plots.loss_curves(results), f"{label}: held-out loss against training tokens"))
    return "<h2>Closed-loop evaluation</h2>" + "".join(out) if out else ""


def _text_of(row: dict[str, Any]) -> str:
    text = row.get("text")
    if text is None and row.get("prompt") is not None:
        text = f"{row['prompt']}\n\n{row.get('response') or ''}"
    text = "" if text is None else str(text)
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + " …"


def redacted_steps(steps: list[StepSummary]) -> set[str] | None:
    """The steps at or after a `pii` step (None: the run has none). The report shows no rows of other steps: their
    text is the input before redaction."""
    after = {s.label for s in steps if s.stage == "pii"}
    if not after:
        return None
    for s in steps:  # in run order, parents first
        if any(p in after for p in s.parents):
            after.add(s.label)
    return after


def _samples(con: Any, steps: list[StepSummary]) -> str:
    out = []
    shown = redacted_steps(steps)
    for s in steps:
        if s.artifacts is not None or s.sample:
            continue
        if shown is not None and s.label not in shown:
            out.append(f"<p class=\"muted\">{esc(s.label)}: rows not shown (before the run's pii step)</p>")
            continue
        columns = {r[0] for r in con.execute(f'DESCRIBE "{s.label}_all"').fetchall()}
        wanted = [c for c in ("id", "text", "prompt", "response", "reason") if c in columns]
        select = ", ".join(f'"{c}"' for c in wanted)
        kept = con.execute(f'SELECT {select} FROM "{s.label}_all" WHERE kept LIMIT {SAMPLES}').fetchall()
        dropped = []
        if "reason" in columns:
            for reason in list(s.reasons)[:6]:
                dropped += con.execute(f'SELECT {select} FROM "{s.label}_all" WHERE NOT kept AND reason = ? '
                                       f"LIMIT {SAMPLES}", [reason]).fetchall()
        rows = [["kept", *_sample(dict(zip(wanted, r, strict=True)))] for r in kept]
        rows += [[r[wanted.index("reason")], *_sample(dict(zip(wanted, r, strict=True)))] for r in dropped]
        if rows:
            out.append(f"<details open><summary>{esc(s.label)} ({esc(s.stage)})</summary>"
                       + _rows_table(rows) + "</details>")
    return "<h2>Sample rows</h2>" + "".join(out) if out else ""


def _sample(row: dict[str, Any]) -> list[str]:
    return [str(row.get("id")), _text_of(row)]


def _rows_table(rows: list[list[str]]) -> str:
    body = "".join(f"<tr><td class=\"text\">{esc(a)}</td><td class=\"text\">{esc(b)}</td>"
                   f"<td class=\"row-text\">{esc(c)}</td></tr>" for a, b, c in rows)
    head = "".join(f'<th class="text">{h}</th>' for h in ("kept / reason", "id", "text"))
    return f"<table><tr>{head}</tr>{body}</table>"


def _metadata(run_dir: Path, steps: list[StepSummary]) -> str:
    meta_file = run_dir / "run.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    versions = meta.get("versions", {})
    lines = [["curate", meta.get("curate_version", __version__)], *[[k, v] for k, v in sorted(versions.items())],
             ["started", meta.get("started", "")], ["finished", meta.get("finished", "")],
             ["config fingerprint", meta.get("config_fingerprint", "")]]
    fingerprints = _table(["step", "status", "seconds", "fingerprint"],
                          [[s.label, s.status, f"{s.seconds:.1f}", s.fingerprint] for s in steps],
                          text_columns=(0, 1, 3))
    return "<h2>Run</h2>" + _table(["", ""], lines, text_columns=(0, 1)) + fingerprints


def _warnings(run: Path) -> str:
    """The run's warnings (steps that dropped much besides their budget), first on the page."""
    meta = run / "run.json"
    warnings = json.loads(meta.read_text()).get("warnings", []) if meta.is_file() else []
    if not warnings:
        return ""
    return "<h2>Warnings</h2>" + "".join(f"<p class=\"warn\">{esc(w['message'])}</p>" for w in warnings)


def build_report(run_dir: str | Path) -> Path:
    """Write `report.html` into the run directory (holding the run's lock: not while a run writes it); returns its
    path."""
    from curate.engine.runlock import run_lock

    with run_lock(run_dir, "curate report"):
        return _build_report(Path(run_dir))


def _build_report(run: Path) -> Path:
    from curate.inspect.sql import connect

    steps = summarize_run(run)
    con = connect(run)
    try:
        sections = [_funnel(steps), _scores(con, steps), _clusters(con, steps), _embedding_map(con, steps),
                    _mixtures(steps), _searches(steps), _evaluations(steps), _samples(con, steps),
                    _metadata(run, steps)]
    finally:
        con.close()
    meta = run / "run.json"
    name = json.loads(meta.read_text()).get("name", run.name) if meta.is_file() else run.name
    page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>curate report: {esc(name)}</title>"
            f"<style>{STYLE}</style></head><body><h1>curate run {esc(name)}</h1>"
            f"<p class=\"muted\">run folder {esc(run.resolve().name)}</p>" + _warnings(run)
            + "".join(sections) + "</body></html>")
    out = run / REPORT_FILE
    out.write_text(page, encoding="utf-8")
    log.info("report: %s", out)
    return out
