"""Tables on stdout and PNG plots for benchmark records (lists of flat dicts)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["format_table", "json_ready", "plot_metrics", "spread", "write_json"]


def spread(values: Sequence[float]) -> dict[str, float]:
    """A figure over seeds (or runs): its mean and its range."""
    return {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def json_ready(v: Any) -> Any:
    """JSON-ready: NumPy scalars as Python numbers, NaN and infinities as null."""
    if isinstance(v, (np.floating, np.integer)):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/inf
    if isinstance(v, dict):
        return {k: json_ready(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_ready(x) for x in v]
    return v


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as strict JSON (one results file) and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(data), indent=1) + "\n")
    print(f"wrote {path}")


def _cell(value) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def format_table(records: Sequence[dict], columns: Sequence[str]) -> str:
    """A fixed-width text table of ``columns`` (missing values print as '-')."""
    rows = [[_cell(r.get(c, math.nan)) for c in columns] for r in records]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]
    line = "  ".join(c.rjust(w) for c, w in zip(columns, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
    return "\n".join(out)


def plot_metrics(records: Sequence[dict], metrics: Sequence[str], prefix: Path, *, title: str = "") -> list[Path]:
    """One PNG per metric: the metric against rate, a line per policy, a panel per trace."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traces = sorted({r["trace"] for r in records})
    policies = list(dict.fromkeys(r["policy"] for r in records))
    written = []
    for metric in metrics:
        fig, axes = plt.subplots(1, len(traces), figsize=(5.5 * len(traces), 4), squeeze=False)
        for ax, trace in zip(axes[0], traces):
            for policy in policies:
                pts = sorted((r["rate"], r[metric]) for r in records if r["trace"] == trace and r["policy"] == policy)
                if pts:
                    xs, ys = zip(*pts)
                    style = "--" if policy.endswith("oracle") else "-"
                    ax.plot(xs, ys, style, marker="o", ms=3, label=policy)
            ax.set_title(f"{trace}")
            ax.set_xlabel("request rate (req/s)")
            ax.set_ylabel(metric)
            if metric.startswith("ttft"):
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"{metric} vs load {('- ' + title) if title else ''}")
        fig.tight_layout()
        path = Path(f"{prefix}_{metric}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
