"""The training job's report: one self-contained HTML page (plots inlined as PNG).

Built from the job's model/ folder (model.json, metrics.json) on local disk, or from its
model.tar.gz, fetched from S3 for a SageMaker job. The debugger and profiler add their
sections here once the training image writes them.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

CURVES = (("loss", ("train_loss", "valid_loss")),
          ("accuracy", ("train_accuracy", "valid_accuracy")),
          ("throughput (images/s)", ("images_per_sec",)))


def metrics_figure(history: list[dict[str, Any]], best_epoch: int | None) -> bytes:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(1, len(CURVES), figsize=(13, 3.6))
    epochs = [row["epoch"] for row in history]
    for axis, (title, names) in zip(axes, CURVES):
        values = []
        for name in names:
            series = [row.get(name) for row in history]
            values += [v for v in series if isinstance(v, (int, float)) and v > 0]
            axis.plot(epochs, series, marker="o", label=name)
        if title == "loss" and values and max(values) / min(values) > 30:
            axis.set_yscale("log")  # one diverging epoch would flatten all the others
            title = "loss (log scale)"
        if best_epoch:
            axis.axvline(best_epoch, color="gray", ls=":", label=f"best epoch {best_epoch}")
        axis.set(title=title, xlabel="epoch")
        axis.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def build_report(model_dir: Path, out: Path, job: str) -> Path:
    description = json.loads((model_dir / "model.json").read_text())
    history = json.loads((model_dir / "metrics.json").read_text())["epochs"]
    training = description.get("training", {})
    figure = base64.b64encode(metrics_figure(history, training.get("best_epoch"))).decode()
    final = description.get("metrics", {})
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_cell(v)}</td></tr>"
                   for k, v in final.items())
    hps = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                  for k, v in description.get("hyperparameters", {}).items())
    facts = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(json.dumps(v))}</td></tr>"
                    for k, v in training.items())
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Training report: {html.escape(job)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse;margin:1em 0}}
td{{border:1px solid #ccc;padding:3px 8px}}img{{max-width:100%}}section{{display:inline-block;vertical-align:top;margin-right:3em}}</style>
</head><body>
<h1>Training report: {html.escape(job)}</h1>
<p>{description.get('num_classes')} breeds, {training.get('epochs_run')} epoch(s) run,
best epoch {training.get('best_epoch')} (by valid_loss), on {html.escape(str(training.get('device')))}
({html.escape(str(training.get('precision')))}), world size {training.get('world_size')}.</p>
<h2>Metrics per epoch</h2>
<img alt="loss, accuracy and throughput per epoch" src="data:image/png;base64,{figure}">
<section><h2>Final metrics</h2><table>{rows}</table></section>
<section><h2>Hyperparameters</h2><table>{hps}</table></section>
<section><h2>Training facts</h2><table>{facts}</table></section>
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))
