"""The capacity report: ``runs.csv``, ``capacity.csv``, PNG plots and ``report.md``.

Every figure in the markdown comes from the same ``RunFigures`` rows the CSVs hold, so the
report can be regenerated from ``runs.csv`` alone (``read_runs``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

from andes.loadgen.capacity import Capacity, QoETarget, RunFigures, find_capacity

__all__ = ["plot_runs", "read_runs", "write_report"]

_PLOTS = (("mean_qoe", "mean QoE (client)"), ("share_qoe_ge_095", "share of requests with QoE >= 0.95"),
          ("ttft_p90", "TTFT p90 (s)"))


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of flat dicts as CSV (NaN as empty cells)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})


def read_runs(path: Path) -> list[RunFigures]:
    """``runs.csv`` back into figures (to merge sweeps or redraw a report)."""
    fields = RunFigures.__dataclass_fields__
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            values = {}
            for name, spec in fields.items():
                text = row[name]
                kind = spec.type if isinstance(spec.type, str) else spec.type.__name__
                values[name] = text if kind == "str" else int(text) if kind == "int" else \
                    (float(text) if text != "" else math.nan)
            out.append(RunFigures(**values))
    return out


def plot_runs(runs: Sequence[RunFigures], target: QoETarget, out_dir: Path) -> list[Path]:
    """One PNG per figure against the offered rate, a line per policy, the target dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = list(dict.fromkeys(r.policy for r in runs))
    written = []
    for metric, label in _PLOTS:
        fig, ax = plt.subplots(figsize=(6, 4))
        for policy in policies:
            pts = sorted((r.rate, getattr(r, metric)) for r in runs if r.policy == policy)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, label=policy)
        if metric == {"mean": "mean_qoe", "share": "share_qoe_ge_095"}[target.kind]:
            ax.axhline(target.level, ls="--", color="grey", lw=1, label=f"target {target.level:g}")
        ax.set_xlabel("request rate (req/s)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{metric}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _markdown(runs: Sequence[RunFigures], capacities: Sequence[Capacity], target: QoETarget,
              setup: dict[str, Any], plots: Sequence[Path]) -> str:
    lines = ["# Andes capacity report", "", f"Target: **{target.describe()}** per rate.", ""]
    lines += [f"- {k}: {v}" for k, v in setup.items()]
    lines += ["", "## Capacity", "", "| policy | capacity |", "|---|---|"]
    lines += [f"| {c.policy} | {c.describe()} |" for c in capacities]
    columns = ("policy", "rate", "offered_rate", "num_requests", "num_failures", "mean_qoe", "share_qoe_ge_095",
               "p10_qoe", "mean_server_qoe", "ttft_p50", "ttft_p90", "mean_delivered_tds", "max_lag_s")
    lines += ["", "## Runs", "", "| " + " | ".join(columns) + " | meets target |",
              "|" + "---|" * (len(columns) + 1)]
    for r in sorted(runs, key=lambda r: (r.policy, r.rate)):
        d = r.as_dict()
        lines.append("| " + " | ".join(_fmt(d[c], 2 if c in ("rate", "offered_rate") else 3) for c in columns)
                     + f" | {_fmt(target.is_met(r))} |")
    late = [r for r in runs if not r.is_on_schedule]
    if late:
        lines += ["", "**Warning**: the load generator did not keep the schedule in "
                  + ", ".join(f"{r.policy} at {r.rate:g} req/s" for r in late)
                  + " (requests not sent, or sent over 1 s late): the offered load there was lower than "
                    "nominal. Give Locust more CPU or raise --max-users."]
    slow = [r for r in runs if r.is_on_schedule and not r.is_read_in_time]
    if slow:
        lines += ["", "**Warning**: the clients got chunks later than the gateway sent them in "
                  + ", ".join(f"{r.policy} at {r.rate:g} req/s (client {r.mean_qoe:.3f}, gateway "
                              f"{r.mean_server_qoe:.3f})" for r in slow)
                  + ": the load generator short of CPU (give it more, or more --processes), the "
                    "network, or a queue in Serve's proxy; the client QoE there understates the server's."]
    lines += ["", "QoE is measured at the client from chunk arrival times (`andes.qoe` on the reader's "
              "digest times); `mean_server_qoe` is what the gateway reported. Failed requests count "
              "with the QoE of what they delivered (0 if nothing).", "", "## Plots", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(runs: Sequence[RunFigures], target: QoETarget, out_dir: Path,
                 setup: dict[str, Any]) -> list[Capacity]:
    """Write runs.csv, capacity.csv, the PNGs and report.md into ``out_dir``; the capacities."""
    out_dir.mkdir(parents=True, exist_ok=True)
    policies = list(dict.fromkeys(r.policy for r in runs))
    capacities = [find_capacity(runs, target, policy) for policy in policies]
    write_csv(out_dir / "runs.csv", [r.as_dict() for r in runs])
    write_csv(out_dir / "capacity.csv", [
        {"policy": c.policy, "target": target.describe(), "capacity_rate": c.rate if c.rate is not None else math.nan,
         "first_miss_rate": c.first_miss if c.first_miss is not None else math.nan, "summary": c.describe()}
        for c in capacities])
    plots = plot_runs(runs, target, out_dir)
    (out_dir / "report.md").write_text(_markdown(runs, capacities, target, setup, plots))
    return capacities
