"""`ecot report`: one self-contained HTML file from evaluation directories.

Everything is inlined (matplotlib plots as PNG data URIs, GIFs as data URIs, no scripts, no
external CSS), so the file opens offline and can be mailed around. Sections: success by task with
95 % Wilson intervals, the runs side by side; reasoning faithfulness; failure analysis; latency
histogram; a gallery of episode GIFs with each step's reasoning and its scores.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ecot.eval.results import CONFIG_NAME, EPISODES_NAME, RESULTS_NAME, wilson_interval

FAITH_RATES = [("box_iou", "box IoU"), ("box_iou_ok", "boxes with IoU ≥ 0.5"), ("box_precision", "object precision"),
               ("box_recall", "object recall"),
               ("move_agree", "MOVE agreement"), ("subtask_correct", "SUBTASK correct"), ("plan_coverage", "PLAN coverage")]

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:24px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;font-size:13px}
th{background:#f3f3f3}td.l,th.l{text-align:left}.plot{max-width:100%;border:1px solid #eee}
.gallery{display:flex;flex-wrap:wrap;gap:16px}.card{border:1px solid #ddd;padding:8px;max-width:560px}
.ok{color:#1a7f37;font-weight:bold}.bad{color:#cf222e;font-weight:bold}details{font-size:12px}
.steps td{font-size:11px;text-align:left}
"""


class Run:
    """One evaluation directory: results.json, eval_config.json and the episode log."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        results = self.path / RESULTS_NAME
        if not results.exists():
            raise FileNotFoundError(f"{self.path} has no {RESULTS_NAME}; is it an `ecot eval` output directory?")
        self.results: dict = json.loads(results.read_text())
        cfg = self.path / CONFIG_NAME
        self.config: dict = json.loads(cfg.read_text()) if cfg.exists() else {}
        self.episodes: list[dict] = []
        log = self.path / EPISODES_NAME
        if log.exists():
            for line in log.read_text().splitlines():
                try:
                    self.episodes.append(json.loads(line))
                except json.JSONDecodeError:
                    break
        self.episodes.sort(key=lambda r: r.get("index", 0))

    @property
    def label(self) -> str:
        policy = str(self.results.get("policy", "?"))
        short = Path(policy).name if "/" in policy and not policy.startswith("ws://") else policy
        mode = self.config.get("mode")
        builtin = policy in ("expert", "oracle", "random")
        extra = f" [{mode}]" if mode and not builtin else ""
        return f"{self.path.name}: {short}{extra}"


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img(uri: str, alt: str) -> str:
    return f'<img class="plot" alt="{html.escape(alt)}" src="{uri}">'


def _fmt(v: Any, pct: bool = False, digits: int = 2) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.0f}%" if pct else f"{v:.{digits}f}"


def _ci_text(rate: float, n: int) -> str:
    lo, hi = wilson_interval(int(round(rate * n)), n)
    return f"{100 * rate:.0f}% <small>[{100 * lo:.0f}–{100 * hi:.0f}]</small>"


def success_table(runs: Sequence[Run]) -> str:
    tasks = sorted({t for r in runs for t in r.results.get("by_task", {})})
    head = "".join(f"<th>{html.escape(t)}</th>" for t in tasks)
    rows = []
    for r in runs:
        res = r.results
        cells = []
        for t in tasks:
            bt = res.get("by_task", {}).get(t)
            cells.append(f"<td>{_ci_text(bt['success_rate'], bt['episodes'])} <small>n={bt['episodes']}</small></td>"
                         if bt else "<td>–</td>")
        lat = (res.get("latency_ms") or {}).get("mean")
        rows.append(f"<tr><td class='l'>{html.escape(r.label)}</td><td class='l'>{html.escape(str(res.get('env')))}</td>"
                    f"<td class='l'>{html.escape(str(res.get('split')))}</td><td>{res.get('episodes')}</td>"
                    f"<td><b>{_ci_text(res.get('success_rate', 0.0), res.get('episodes', 0))}</b></td>{''.join(cells)}"
                    f"<td>{_fmt(lat, digits=1)}</td></tr>")
    return ("<table id='success-table'><tr><th class='l'>run</th><th class='l'>env</th><th class='l'>split</th>"
            f"<th>episodes</th><th>success [95% CI]</th>{head}<th>latency ms/step</th></tr>{''.join(rows)}</table>")


def success_plot(runs: Sequence[Run]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({t for r in runs for t in r.results.get("by_task", {})}) + ["all"]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(tasks) * max(1, len(runs)) / 2), 3.6))
    width = 0.8 / max(1, len(runs))
    for i, r in enumerate(runs):
        rates, errs = [], [[], []]
        for t in tasks:
            if t == "all":
                rate, n = r.results.get("success_rate", 0.0), r.results.get("episodes", 0)
            else:
                bt = r.results.get("by_task", {}).get(t, {"success_rate": 0.0, "episodes": 0})
                rate, n = bt["success_rate"], bt["episodes"]
            lo, hi = wilson_interval(int(round(rate * n)), n)
            rates.append(rate)
            errs[0].append(max(0.0, rate - lo))
            errs[1].append(max(0.0, hi - rate))
        x = np.arange(len(tasks)) + (i - (len(runs) - 1) / 2) * width
        ax.bar(x, rates, width, yerr=errs, capsize=3, label=r.label)
    ax.set_xticks(np.arange(len(tasks)), tasks)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% CI)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Success by task family")
    return _img(_png(fig), "success by task")


def faithfulness_section(runs: Sequence[Run]) -> str:
    scored = [r for r in runs if r.results.get("faithfulness")]
    if not scored:
        return "<p>No run wrote reasoning that could be scored (only sim runs of policies that reason are).</p>"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head = "".join(f"<th>{label}</th>" for _, label in FAITH_RATES)
    rows = []
    for r in scored:
        f = r.results["faithfulness"]
        rows.append(f"<tr><td class='l'>{html.escape(r.label)}</td>"
                    + "".join(f"<td>{_fmt(f.get(k), digits=3)}</td>" for k, _ in FAITH_RATES)
                    + f"<td>{_fmt(f.get('gripper_err_px'), digits=1)}</td><td>{f.get('steps')}</td></tr>")
    table = (f"<table id='faithfulness-table'><tr><th class='l'>run</th>{head}<th>gripper error px</th><th>steps</th></tr>"
             f"{''.join(rows)}</table>")
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    width = 0.8 / len(scored)
    for i, r in enumerate(scored):
        f = r.results["faithfulness"]
        x = np.arange(len(FAITH_RATES)) + (i - (len(scored) - 1) / 2) * width
        axes[0].bar(x, [f.get(k) or 0.0 for k, _ in FAITH_RATES], width, label=r.label)
        errs = [s["metrics"]["gripper_err_px"] for e in r.episodes for s in e.get("per_step", [])
                if s.get("metrics") and s["metrics"].get("gripper_err_px") is not None]
        if errs:
            axes[1].hist(errs, bins=30, alpha=0.6, label=r.label)
    axes[0].set_xticks(np.arange(len(FAITH_RATES)), [label for _, label in FAITH_RATES], rotation=20, fontsize=8)
    axes[0].set_ylim(0, 1.05)
    axes[0].set_title("Reasoning vs ground truth (per step, pooled)")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("GRIPPER POSITION error (px)")
    axes[1].set_ylabel("steps")
    axes[1].set_title("Gripper point error")
    if axes[1].has_data():
        axes[1].legend(fontsize=8)
    # Per-step agreement over the episode: do errors come early or late?
    fig2, ax2 = plt.subplots(figsize=(12, 3.2))
    for r in scored:
        by_t: dict[int, list[float]] = {}
        for e in r.episodes:
            for s in e.get("per_step", []):
                if s.get("metrics"):
                    by_t.setdefault(int(s["t"]), []).append(float(s["metrics"]["subtask_correct"]))
        if by_t:
            ts = sorted(by_t)
            ax2.plot(ts, [np.mean(by_t[t]) for t in ts], label=f"{r.label}: SUBTASK correct")
        by_t = {}
        for e in r.episodes:
            for s in e.get("per_step", []):
                if s.get("metrics"):
                    by_t.setdefault(int(s["t"]), []).append(float(s["metrics"]["move_agree"]))
        if by_t:
            ts = sorted(by_t)
            ax2.plot(ts, [np.mean(by_t[t]) for t in ts], linestyle="--", label=f"{r.label}: MOVE agrees")
    ax2.set_xlabel("step")
    ax2.set_ylim(-0.05, 1.05)
    ax2.set_title("Faithfulness over the episode")
    ax2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fa_rows = []
    for r in scored:
        fa = r.results["faithfulness"].get("failure_analysis") or {}
        for name, groups in fa.items():
            if name == "first_error_in_failed_episodes":
                continue
            a, b = groups["at_some_step"], groups["never"]
            fa_rows.append(f"<tr><td class='l'>{html.escape(r.label)}</td><td class='l'>{html.escape(name)}</td>"
                           f"<td>{a['episodes']}</td><td>{_fmt(a['success_rate'], pct=True)}</td>"
                           f"<td>{b['episodes']}</td><td>{_fmt(b['success_rate'], pct=True)}</td></tr>")
        first = fa.get("first_error_in_failed_episodes") or {}
        if first:
            fa_rows.append(f"<tr><td class='l'>{html.escape(r.label)}</td><td class='l' colspan='5'>first reasoning error "
                           f"in failed episodes: {html.escape(', '.join(f'{k}: {v}' for k, v in first.items()))}</td></tr>")
    fa_table = ("<h3>Failure analysis</h3><table><tr><th class='l'>run</th><th class='l'>reasoning error</th>"
                "<th>episodes with it</th><th>their success</th><th>episodes without</th><th>their success</th></tr>"
                f"{''.join(fa_rows)}</table>")
    return table + _img(_png(fig), "faithfulness") + _img(_png(fig2), "faithfulness over time") + fa_table


def latency_plot(runs: Sequence[Run]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.4))
    for r in runs:
        vals = [v for e in r.episodes for v in (e.get("latency_ms") or []) if v is not None]
        if vals:
            ax.hist(vals, bins=40, alpha=0.6, label=r.label)
    if not ax.has_data():
        plt.close(fig)
        return "<p>No latency measurements.</p>"
    ax.set_xlabel("policy latency per step (ms)")
    ax.set_ylabel("steps")
    ax.legend(fontsize=8)
    ax.set_title("Latency")
    return _img(_png(fig), "latency histogram")


def _gif_uri(path: Path) -> str | None:
    if not path.exists():
        return None
    return "data:image/gif;base64," + base64.b64encode(path.read_bytes()).decode()


def gallery(runs: Sequence[Run], per_run: int) -> str:
    cards = []
    for r in runs:
        shown = [e for e in r.episodes if e.get("gif")][:per_run]
        for e in shown:
            uri = _gif_uri(r.path / e["gif"])
            if uri is None:
                continue
            status = "<span class='ok'>success</span>" if e["success"] else "<span class='bad'>failure</span>"
            rows = []
            for s in e.get("per_step", []):
                rs = s.get("reasoning") or {}
                m = s.get("metrics") or {}
                rows.append(
                    f"<tr><td>{s['t']}</td><td>{html.escape(rs.get('subtask', ''))}</td>"
                    f"<td>{html.escape(rs.get('move', ''))}</td>"
                    f"<td>{html.escape(str(m.get('subtask_gt', '')))}</td><td>{html.escape(str(m.get('move_gt', '')))}</td>"
                    f"<td>{_fmt(m.get('box_iou'))}</td><td>{_fmt(m.get('gripper_err_px'), digits=1)}</td></tr>")
            steps = ("<details><summary>each step's reasoning and scores</summary><table class='steps'><tr><th>t</th>"
                     "<th>SUBTASK</th><th>MOVE</th><th>true stage</th><th>true motion</th><th>IoU</th><th>grip px</th></tr>"
                     f"{''.join(rows)}</table></details>")
            cards.append(f"<div class='card'><div><b>{html.escape(r.label)}</b> · episode {e['index']} · "
                         f"{html.escape(e['task'])} · {status} in {e['steps']} steps</div>"
                         f"<div><i>{html.escape(e['instruction'])}</i></div>"
                         f"<img alt='episode {e['index']}' src='{uri}' style='max-width:540px'>{steps}</div>")
    if not cards:
        return "<p>No GIFs recorded.</p>"
    return f"<div class='gallery'>{''.join(cards)}</div>"


def render_report(runs: Sequence[Run], gallery_per_run: int = 6) -> str:
    import time

    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>ecot evaluation report</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>ecot evaluation report</h1><p>{len(runs)} run(s) · generated {time.strftime('%Y-%m-%d %H:%M:%S')}. "
        "Intervals are 95% Wilson score intervals over episodes.</p>"
        "<h2>Success</h2>" + success_table(runs) + success_plot(runs)
        + "<h2>Reasoning faithfulness</h2>" + faithfulness_section(runs)
        + "<h2>Latency</h2>" + latency_plot(runs)
        + "<h2>Episodes</h2>" + gallery(runs, gallery_per_run)
        + "</body></html>"
    )


def write_report(dirs: Sequence[str | Path], out: str | Path = "report.html", gallery: int = 6) -> Path:
    """Read each evaluation directory and write the HTML report to ``out`` (atomically)."""
    from ecot.eval.results import write_atomic

    if not dirs:
        raise ValueError("no evaluation directories given")
    runs = [Run(d) for d in dirs]
    return write_atomic(out, render_report(runs, gallery))
