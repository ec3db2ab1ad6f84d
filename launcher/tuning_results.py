"""A tuning job's outcome, the same for every backend: the jobs table, the best job's
hyperparameters as a JSON file that `train --hyperparameters` accepts, and a plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def best_row(rows: list[dict[str, Any]], direction: str) -> dict[str, Any] | None:
    done = [row for row in rows if row["status"] == "Completed" and row["objective"] is not None
            and math.isfinite(row["objective"])]
    if not done:
        return None
    pick = max if direction == "Maximize" else min
    return pick(done, key=lambda row: row["objective"])


def jobs_table(rows: list[dict[str, Any]], tuned: list[str], objective: str,
               best: dict[str, Any] | None) -> str:
    """Plain-text table, best objective first (failed and unfinished jobs last)."""
    headers = ["", "job", "status", objective, *tuned, "epochs", "seconds"]
    body = []
    for row in rows:
        hps = row.get("hyperparameters", {})
        body.append(["*" if best and row["job"] == best["job"] else "", row["job"], row["status"],
                     _number(row["objective"]), *[_short(hps.get(name, "")) for name in tuned],
                     _plain(row.get("epochs")), _plain(row.get("seconds"))])
    widths = [max(len(str(line[i])) for line in [headers] + body) for i in range(len(headers))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
             for line in [headers] + body]
    lines.insert(1, "  ".join("-" * width for width in widths))
    failures = [f"  {row['job']}: {row['failure']}" for row in rows if row.get("failure")]
    if failures:
        lines += ["", "failed jobs:", *failures]
    return "\n".join(lines)


def write_best(path: Path, best: dict[str, Any], objective: str, direction: str,
               tuning_job: str, backend: str) -> dict[str, Any]:
    document = {"tuning_job": tuning_job, "backend": backend, "best_job": best["job"],
                "objective": {"name": objective, "direction": direction,
                              "value": best["objective"]},
                "hyperparameters": {key: str(value)
                                    for key, value in best["hyperparameters"].items()},
                "artifact": best.get("artifact")}
    path.write_text(json.dumps(document, indent=2) + "\n")
    return document


def plot_trials(rows: list[dict[str, Any]], path: Path, objective: str, direction: str,
                tuned: list[str], log_scaled: set[str], categorical: set[str]) -> Path:
    """objective per job with the best so far; per-epoch curves; objective vs each range."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, NullFormatter
    panels = 2 + min(len(tuned), 3)
    figure, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), squeeze=False)
    axes = axes[0]
    colors = {"Completed": "tab:blue", "Stopped": "tab:orange", "Failed": "tab:red",
              "Interrupted": "tab:gray", "InProgress": "tab:gray", "Pending": "tab:gray"}
    numbered = list(enumerate(rows))
    scored = [(i, row) for i, row in numbered if _finite(row["objective"])]
    for status in colors:
        points = [(i, row["objective"]) for i, row in scored if row["status"] == status]
        if points:
            axes[0].scatter(*zip(*points), color=colors[status], label=status, zorder=3)
    completed = [(i, row["objective"]) for i, row in scored if row["status"] == "Completed"]
    if completed:
        best_so_far, running = [], None
        for i, value in completed:
            better = running is None or (value > running if direction == "Maximize"
                                         else value < running)
            running = value if better else running
            best_so_far.append((i, running))
        axes[0].step(*zip(*best_so_far), where="post", color="black", lw=1, label="best so far")
    axes[0].set(title=f"{objective} per job", xlabel="job (in start order)", ylabel=objective)
    axes[0].legend(fontsize=7)
    for _, row in numbered:
        curve = row.get("intermediate") or []
        if curve:
            style = "--" if row["status"] == "Stopped" else "-"
            axes[1].plot(*zip(*curve), style, marker=".", color=colors.get(row["status"]),
                         alpha=0.8)
    axes[1].set(title=f"{objective} per epoch (dashed: stopped early)", xlabel="epoch",
                ylabel=objective)
    for axis in axes[:2]:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis, name in zip(axes[2:], tuned):
        convert = str if name in categorical else _as_number
        points = [(convert(row["hyperparameters"].get(name)), row["objective"])
                  for _, row in scored]
        points = [point for point in points if point[0] is not None]
        if points:
            axis.scatter(*zip(*points), color=[colors[row["status"]] for _, row in scored
                                               if convert(row["hyperparameters"].get(name))
                                               is not None])
        if name in log_scaled:
            axis.set_xscale("log")
            xs = [x for x, _ in points if x and x > 0]
            if xs and max(xs) / min(xs) > 10:  # decades labelled; minor labels would overlap
                axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set(title=f"{objective} vs {name}", xlabel=name, ylabel=objective)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _as_number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _number(value: Any) -> str:
    return f"{value:.4f}" if _finite(value) else "-"


def _short(value: Any) -> str:
    number = _as_number(value)
    if number is not None and not float(number).is_integer():
        return f"{number:.4g}"
    return str(value)


def _plain(value: Any) -> str:
    return "-" if value is None else str(value)
