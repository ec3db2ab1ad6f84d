"""The report's plots (`dogbreed.reporting.report` assembles the page): each returns a PNG, drawn
with matplotlib's object API on the Agg backend (no pyplot global state), imported only
when a plot is drawn so the rest of the report stays light."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

NORM = "smdebug/reductions/l2/"
GRADIENT = "gradient/"
MAX_LINES = 7  # layers drawn as lines in the norm plots; all of them go in the heatmaps
DPI = 100
WIDTH = 13.0  # inches: 1300 px, the page's width

CURVES = (("loss", ("train_loss", "valid_loss")),
          ("accuracy", ("train_accuracy", "valid_accuracy")),
          ("throughput (images/s)", ("images_per_sec",)))


def scalar(value) -> float:
    array = np.asarray(value, dtype=float)
    return float(array.reshape(-1)[0]) if array.size else math.nan


# ---- plots ------------------------------------------------------------------------------

def _figure(height: float, width: float = WIDTH, **subplots):
    from matplotlib.figure import Figure
    figure = Figure(figsize=(width, height), dpi=DPI)
    return figure, figure.subplots(**subplots)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _finite(values) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return np.where(np.isfinite(array), array, np.nan)


def _log_if_wide(axis, values, title: str) -> str:
    """A log axis when the values span more than 30x: one diverging epoch or the first
    steps would flatten all the others."""
    positive = [v for v in values if isinstance(v, float) and math.isfinite(v) and v > 0]
    if positive and max(positive) / min(positive) > 30:
        axis.set_yscale("log")
        return f"{title} (log scale)"
    return title


def epoch_figure(history: list[dict], best_epoch: int | None) -> bytes | None:
    panels = [(title, [n for n in names if any(_number(r.get(n)) for r in history)])
              for title, names in CURVES]
    panels = [(title, names) for title, names in panels if names]
    if not panels:
        return None
    figure, axes = _figure(3.6, ncols=len(panels), squeeze=False)
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    for axis, (title, names) in zip(axes[0], panels):
        values = []
        for name in names:
            series = [float(v) if _number(v) else math.nan for v in
                      (row.get(name) for row in history)]
            values += series
            axis.plot(epochs, _finite(series), marker="o", label=name)
        title = _log_if_wide(axis, values, title) if title == "loss" else title
        if best_epoch:
            axis.axvline(best_epoch, color="gray", ls=":", label=f"best epoch {best_epoch}")
        axis.set(title=title, xlabel="epoch")
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _epoch_ends(trace: list) -> list[tuple[int, Any]]:
    """(last saved training step, EVAL step) for each validation that followed training:
    where the epochs end."""
    ends, last_train = [], None
    for step in trace:
        if step.mode == "TRAIN":
            last_train = step.mode_step
        elif step.mode == "EVAL" and last_train is not None:
            ends.append((last_train, step))
    return ends


STEP_PANELS = (("loss per step", "loss", ("valid_loss", "loss")),
               ("accuracy per step", "train_accuracy", ("valid_accuracy",)))


def step_figure(trace: list) -> bytes | None:
    """Per saved training step: loss and accuracy, with each epoch's validation."""
    train = [s for s in trace if s.mode == "TRAIN"]
    ends = _epoch_ends(trace)
    panels = []
    for title, name, valid_names in STEP_PANELS:
        points = [(s.mode_step, scalar(s.tensors[name])) for s in train if name in s.tensors]
        valid = []
        for x, evaluation in ends:
            found = next((n for n in valid_names if n in evaluation.tensors), None)
            if found is not None:
                valid.append((x, scalar(evaluation.tensors[found])))
        if points:
            panels.append((title, name, points, valid))
    if not panels:
        return None
    figure, axes = _figure(3.4, width=WIDTH if len(panels) > 1 else WIDTH / 2 + 0.5,
                           ncols=len(panels), squeeze=False)
    for axis, (title, name, points, valid) in zip(axes[0], panels):
        xs, ys = zip(*points)
        axis.plot(xs, _finite(ys), lw=1, marker="." if len(xs) < 60 else None,
                  label=f"train ({name})")
        if name == "loss":  # with the validation losses: one diverged epoch widens it too
            title = _log_if_wide(axis, list(ys) + [v for _, v in valid], title)
        if valid:
            xs, ys = zip(*valid)
            axis.plot(xs, _finite(ys), "s--", color="tab:orange", label="valid (epoch end)")
        for x, _ in ends:
            axis.axvline(x, color="gray", ls=":", lw=0.8)
        axis.set(title=title, xlabel="training step (dotted: epoch ends)")
        axis.legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)


@dataclass
class Norms:
    """l2 norms per parameter (rows) over saved training steps (columns)."""
    names: list[str]
    steps: list[int]
    values: np.ndarray


def norms_of(trace: list, gradients: bool) -> Norms | None:
    train = [s for s in trace if s.mode == "TRAIN"]
    names: dict[str, None] = {}  # in the order saved: the model's order
    for step in train:
        for tensor in step.tensors:
            if tensor.startswith(NORM):
                rest = tensor[len(NORM):]
                if rest.startswith(GRADIENT) == gradients:
                    names.setdefault(rest.removeprefix(GRADIENT) if gradients else rest)
    columns = [s for s in train if any(t.startswith(NORM) for t in s.tensors)]
    if not names or not columns:
        return None
    prefix = NORM + (GRADIENT if gradients else "")
    values = np.array([[scalar(s.tensors[prefix + n]) if prefix + n in s.tensors else np.nan
                        for s in columns] for n in names], dtype=float)
    return Norms(list(names), [s.mode_step for s in columns], values)


def representative(names: list[str], limit: int = MAX_LINES) -> list[int]:
    """A few layers that stand for the network: the first weight of each top-level block
    (for ResNet50: conv1, layer1..layer4, fc), else evenly spaced weights."""
    weights = [i for i, n in enumerate(names) if n.endswith("weight") and
               not any(part in n for part in ("bn", "norm", "downsample.1"))] \
        or list(range(len(names)))
    firsts: dict[str, int] = {}
    for i in weights:
        firsts.setdefault(names[i].split(".")[0], i)
    chosen = list(firsts.values())
    if len(chosen) < 3 or len(chosen) > limit:
        chosen = weights
    if len(chosen) > limit:
        chosen = [chosen[round(k * (len(chosen) - 1) / (limit - 1))] for k in range(limit)]
    return chosen


def norm_lines_figure(weights: Norms | None, gradients: Norms | None) -> bytes:
    panels = [(n, title) for n, title in ((weights, "weight l2 norm"),
                                          (gradients, "gradient l2 norm")) if n]
    figure, axes = _figure(3.6, ncols=len(panels), squeeze=False)
    for axis, (norms, title) in zip(axes[0], panels):
        for i in representative(norms.names):
            axis.plot(norms.steps, _finite(norms.values[i]), lw=1.2,
                      marker="." if len(norms.steps) < 60 else None, label=norms.names[i])
        if (np.nan_to_num(_finite(norms.values)) > 0).any():
            axis.set_yscale("log")  # norms span decades across layers
        axis.set(title=f"{title} (representative layers, log scale)", xlabel="training step")
        axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    return _png(figure)


def norm_heatmaps_figure(weights: Norms | None, gradients: Norms | None) -> bytes:
    """Every layer: log10 of the gradient norm, and how far each weight has moved from its
    first saved value (%): which layers learn, and where gradients vanish or explode."""
    panels = []
    if gradients:
        with np.errstate(divide="ignore", invalid="ignore"):
            panels.append((gradients, np.log10(_finite(gradients.values)),
                           "log10 gradient l2 norm", "viridis", None))
    if weights:
        with np.errstate(divide="ignore", invalid="ignore"):
            change = 100 * (_finite(weights.values) / _finite(weights.values[:, :1]) - 1)
        change = np.where(np.isfinite(change), change, np.nan)
        limit = np.nanpercentile(np.abs(change), 99) if np.isfinite(change).any() else 1.0
        panels.append((weights, change, "weight l2 norm change since first saved step (%)",
                       "RdBu_r", max(float(limit), 1e-6)))
    rows = max(len(p[0].names) for p in panels)
    figure, axes = _figure(min(max(3.5, 0.03 * rows + 1.5), 6.5), ncols=len(panels),
                           squeeze=False)
    for axis, (norms, values, title, cmap, limit) in zip(axes[0], panels):
        import matplotlib
        colours = matplotlib.colormaps[cmap].with_extremes(bad="black")
        steps = norms.steps
        half = (steps[1] - steps[0]) / 2 if len(steps) > 1 else 0.5
        image = axis.imshow(np.ma.masked_invalid(values), aspect="auto", cmap=colours,
                            interpolation="nearest", vmin=-limit if limit else None,
                            vmax=limit, extent=(steps[0] - half, steps[-1] + half,
                                                len(norms.names) - 0.5, -0.5))
        ticks = _group_ticks(norms.names)
        for _, first, _ in _groups(norms.names)[1:]:
            axis.axhline(first - 0.5, color="white", lw=0.6)
        axis.set_yticks([i for i, _ in ticks], [label for _, label in ticks], fontsize=8)
        axis.set(title=title, xlabel="training step",
                 ylabel=f"{len(norms.names)} parameters, model order")
        figure.colorbar(image, ax=axis, fraction=0.04, pad=0.02)
    figure.tight_layout()
    return _png(figure)


def _groups(names: list[str]) -> list[tuple[str, int, int]]:
    """Top-level blocks (conv1, bn1, layer1, ..., fc) as (name, first row, row count)."""
    groups: list[tuple[str, int, int]] = []
    for i, name in enumerate(names):
        group = name.split(".")[0] if "." in name else name
        if groups and groups[-1][0] == group:
            groups[-1] = (group, groups[-1][1], groups[-1][2] + 1)
        else:
            groups.append((group, i, 1))
    return groups


def _group_ticks(names: list[str]) -> list[tuple[float, str]]:
    """A label at the middle of each block's rows, the biggest blocks first where two
    would overlap; evenly spaced names for a flat model."""
    groups = _groups(names)
    if len(groups) < 3 or len(groups) > 40:
        stride = max(1, len(names) // 15)
        return [(i, names[i]) for i in range(0, len(names), stride)]
    gap = len(names) / 30
    ticks: list[tuple[float, str]] = []
    for group, first, count in sorted(groups, key=lambda g: -g[2]):
        middle = first + (count - 1) / 2
        if all(abs(middle - other) >= gap for other, _ in ticks):
            ticks.append((middle, group))
    return sorted(ticks)


def profiler_window(hyperparameters: dict) -> tuple[int, int] | None:
    """The torch.profiler window in global steps, from the job's hyperparameters."""
    try:
        count = int(hyperparameters.get("profiler-num-steps", 0))
        start = max(int(hyperparameters.get("profiler-start-step", 5)), 1)
    except (TypeError, ValueError):
        return None
    return (start, start + count - 1) if count > 0 else None


def step_time_figure(steps: list[dict], window: tuple[int, int] | None) -> tuple[bytes, str]:
    """Data-loader wait and compute per training step, stacked; outliers clipped so the
    typical step stays readable (said in the caption)."""
    x = np.array([s["global_step"] for s in steps], dtype=float)
    data = 1000 * np.array([s["data_seconds"] for s in steps], dtype=float)
    compute = 1000 * np.array([s["compute_seconds"] for s in steps], dtype=float)
    total = data + compute
    figure, axis = _figure(3.6)
    if len(x) <= 300:
        axis.bar(x, compute, width=1.0, color="tab:blue", label="compute")
        axis.bar(x, data, width=1.0, bottom=compute, color="tab:orange",
                 label="waiting for data")
    else:
        axis.fill_between(x, 0, compute, step="mid", color="tab:blue", label="compute")
        axis.fill_between(x, compute, total, step="mid", color="tab:orange",
                          label="waiting for data")
    note = ""
    ceiling = 1.5 * float(np.percentile(total, 99 if len(total) >= 100 else 90))
    if total.max() > 2 * ceiling > 0:
        axis.set_ylim(0, ceiling)
        clipped = [(int(s), t) for s, t in zip(x, total) if t > ceiling]
        listed = ", ".join(f"step {s}: {t:.0f} ms" for s, t in clipped[:5])
        note = (f"{len(clipped)} step(s) above {ceiling:.0f} ms are cut off in the plot "
                f"({listed}{', ...' if len(clipped) > 5 else ''}).")
    epochs = [s.get("epoch") for s in steps]
    for i in range(1, len(steps)):
        if epochs[i] != epochs[i - 1]:
            axis.axvline(x[i] - 0.5, color="gray", ls=":", lw=0.8)
    if window:
        axis.axvspan(window[0] - 0.5, window[1] + 0.5, color="tab:green", alpha=0.15,
                     label="torch.profiler window")
    axis.set(title="step time: compute and data-loader wait (dotted: epoch starts)",
             xlabel="global training step", ylabel="ms")
    axis.legend(fontsize=8, loc="upper right")
    figure.tight_layout()
    return _png(figure), note


def system_figure(system: list[dict], steps: list[dict],
                  window: tuple[int, int] | None) -> bytes:
    t0 = system[0]["time"]
    t = np.array([s["time"] - t0 for s in system])
    cpu = [np.asarray(s.get("cpu_percent") or [np.nan], dtype=float) for s in system]
    gpus = sorted({g["index"] for s in system for g in s.get("gpus") or []})
    rows = 3 + (1 if gpus else 0)
    figure, axes = _figure(2.3 * rows, nrows=rows, sharex=True)
    axis = axes[0]
    axis.fill_between(t, [c.min() for c in cpu], [c.max() for c in cpu], color="tab:blue",
                      alpha=0.2, label="per-core range (min to max)")
    axis.plot(t, [c.mean() for c in cpu], color="tab:blue",
              label=f"mean of {max(len(c) for c in cpu)} core(s)")
    axis.set(title="CPU utilisation", ylabel="%", ylim=(0, 105))
    axis = axes[1]
    axis.plot(t, [s.get("memory_percent", np.nan) for s in system], color="tab:purple",
              label="memory used")
    axis.plot(t, [s.get("iowait_percent", np.nan) for s in system], color="tab:red",
              label="CPU iowait")
    axis.set(title="memory and I/O wait", ylabel="%", ylim=(0, 105))
    if gpus:
        axis = axes[2]
        for index in gpus:
            for key, style, what in (("utilization_percent", "-", "utilisation"),
                                     ("memory_percent", "--", "memory")):
                series = [next((g.get(key, np.nan) for g in s.get("gpus") or []
                                if g["index"] == index), np.nan) for s in system]
                axis.plot(t, series, style, label=f"GPU {index} {what}")
        axis.set(title="GPU", ylabel="%", ylim=(0, 105))
    axis = axes[-1]
    for key, label in (("disk_read_bytes_per_s", "disk read"),
                       ("disk_write_bytes_per_s", "disk write"),
                       ("net_recv_bytes_per_s", "network received"),
                       ("net_sent_bytes_per_s", "network sent")):
        axis.plot(t, [s.get(key, np.nan) / 1e6 for s in system], label=label)
    axis.set(title="disk and network", ylabel="MB/s", xlabel="seconds since sampling began")
    starts = {}
    for step in steps:
        starts.setdefault(step.get("epoch"), step.get("start"))
    span = [(s["start"], s["start"] + s["data_seconds"] + s["compute_seconds"]) for s in steps
            if window and window[0] <= s["global_step"] <= window[1] and s.get("start")]
    for axis in axes:
        for epoch, start in starts.items():
            if start is not None:
                axis.axvline(start - t0, color="gray", ls=":", lw=0.8)
        if span:
            axis.axvspan(span[0][0] - t0, span[-1][1] - t0, color="tab:green", alpha=0.12,
                         label="torch.profiler window")
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    axes[0].set_title("CPU utilisation (dotted: epoch starts)")
    figure.tight_layout()
    return _png(figure)
