"""A training job's report: one self-contained HTML page, its plots inlined as PNG.

Built from whatever the job left, every part optional:

- `model/`: `model.json` (hyperparameters, final metrics, training facts) and
  `metrics.json` (one row per epoch); a failed job may have none;
- `output/data/`: the debugger's smdebug trace (`debug/`), the debugger rules' results
  (`rules.json`) and the profiler's records (`profiler/`: `steps.jsonl`, `system.jsonl`,
  `profiler_rules.json`, `top_operators.json`, `torch_trace.json`), see
  `dogbreed.profiler`; and `output/failure` next to it, the reason a job failed.

The sections follow the order a person asks in: did it work (outcome, final metrics, rule
results), how did it learn (loss and accuracy, gradient and weight norms), where did the
time go (step time, system utilisation, top operators), and with what settings. A section
without data says so and how to get it. No network and no JavaScript: the page opens from
a downloaded folder. Torch-free; matplotlib (Agg, without pyplot's global state) is
imported only when a plot is drawn (the plots are in `dogbreed.report_figures`).

The training program writes `output/data/report.html` at the end of every job
(`write_job_report`); `python -m dogbreed.report JOB_DIR` and `launcher report` build it
again offline.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dogbreed.profiler_rules import read_jsonl
from dogbreed.report_figures import (epoch_figure, img_tag, norm_heatmaps_figure,
                                     norm_lines_figure, norms_of, profiler_window,
                                     representative, scalar, step_figure, step_time_figure,
                                     system_figure)
from dogbreed.smdebug_trace import read_trace

REPORT_FILE = "report.html"
OUTPUT_DATA_ENTRIES = ("debug", "rules.json", "profiler")
PROFILER = "profiler"

STATUS_CLASS = {"NoIssuesFound": "ok", "IssuesFound": "issue", "Error": "error"}
RANK = {"IssuesFound": 0, "Error": 1, "NoIssuesFound": 2}  # the rules table's order

# How to get a section's data, in the training program's hyperparameters and the
# launcher's `train`/`tune` options.
HOW_TO = {
    "rules": "ask for rules with the hyperparameter <code>rules=ExplodingTensor,"
             "LossNotDecreasing</code> (launcher: <code>--rule ExplodingTensor --rule "
             "LossNotDecreasing</code>; add <code>:stop</code> to end the job on an issue)",
    "trace": "the debugger is on by default (<code>debugger=on</code>) and saves losses and "
             "metrics every <code>debugger-save-interval</code> steps to "
             "<code>output/data/debug/</code>",
    "norms": "save them with <code>debugger-collections=losses,metrics,weights,gradients"
             "</code> (launcher: <code>--debugger-collections losses,metrics,weights,"
             "gradients</code>)",
    "profiler": "the profiler is on by default (<code>profiler=on</code>); this job ran "
                "with it off (<code>profiler=off</code>, launcher <code>--no-profiler</code>) "
                "or ended before it wrote",
    "operators": "record a torch.profiler window with <code>profiler-num-steps=10</code> "
                 "(from <code>profiler-start-step</code>, default 5; launcher: "
                 "<code>--profiler-window 5:10</code>)",
    "output_data": "the debugger, rule and profiler sections read the job's "
                   "<code>output/data/</code> folder (<code>output.tar.gz</code> of a "
                   "SageMaker job)",
}


class ReportError(ValueError):
    """Nothing to report on: neither a model folder nor a job's output data."""


# ---- what the job left ------------------------------------------------------------------

@dataclass
class JobRecord:
    """Everything the page shows, read once; a file that could not be read is in `problems`
    and its part stays empty, so one damaged file does not cost the whole page."""
    title: str
    model_dir: Path | None = None
    output_data: Path | None = None
    description: dict | None = None
    history: list[dict] = field(default_factory=list)
    history_source: str = ""
    outcome: str = "unknown"  # succeeded | failed | unknown
    reason: str = ""
    debugger_rules: list[dict] = field(default_factory=list)
    profiler_rules: list[dict] = field(default_factory=list)
    trace: list = field(default_factory=list)  # dogbreed.smdebug_trace.TraceStep
    steps: list[dict] = field(default_factory=list)
    system: list[dict] = field(default_factory=list)
    operators: list[dict] = field(default_factory=list)
    torch_trace: Path | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def hyperparameters(self) -> dict:
        return (self.description or {}).get("hyperparameters", {})

    @property
    def training(self) -> dict:
        return (self.description or {}).get("training", {})

    @property
    def profiler_dir(self) -> Path | None:
        return self.output_data / PROFILER if self.output_data else None


def load_job(title: str, model_dir: Path | None, output_data: Path | None) -> JobRecord:
    model_dir = Path(model_dir) if model_dir else None
    output_data = Path(output_data) if output_data else None
    if model_dir is not None and not (model_dir / "model.json").is_file():
        raise ReportError(f"{model_dir} is not a model folder: no model.json")
    if output_data is not None and not output_data.is_dir():
        raise ReportError(f"output data {output_data} is not a folder")
    if model_dir is None and output_data is None:
        raise ReportError("nothing to report on: give a model folder, a job's output data "
                          "folder, or both")
    job = JobRecord(title, model_dir, output_data)

    def read(what: str, reader: Callable[[], Any], default: Any) -> Any:
        try:
            return reader()
        except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
            job.problems.append(f"could not read {what}: {error}")
            return default

    if model_dir is not None:
        job.description = read("model.json", lambda: _json(model_dir / "model.json"), None)
        if (model_dir / "metrics.json").is_file():
            job.history = read("metrics.json",
                               lambda: list(_json(model_dir / "metrics.json")["epochs"]), [])
            job.history_source = "the model's metrics.json"
    # output/success or output/failure: next to output/data, or next to a job's model/.
    job.outcome, job.reason = _outcome(output_data.parent if output_data is not None
                                       else model_dir.parent / "output")
    if output_data is not None:
        if (output_data / "rules.json").is_file():
            job.debugger_rules = read("rules.json", lambda: _rules(output_data / "rules.json"),
                                      [])
        debug = output_data / "debug"
        if (debug / "index").is_dir():
            job.trace = read("the debugger trace (debug/)", lambda: read_trace(debug), [])
        profiler = output_data / PROFILER
        if profiler.is_dir():
            job.steps = read("profiler/steps.jsonl", lambda: read_jsonl(
                profiler / "steps.jsonl", ("global_step", "data_seconds", "compute_seconds")),
                [])
            job.system = read("profiler/system.jsonl", lambda: read_jsonl(
                profiler / "system.jsonl", ("time", "cpu_percent")), [])
            if (profiler / "profiler_rules.json").is_file():
                job.profiler_rules = read("profiler/profiler_rules.json",
                                          lambda: _rules(profiler / "profiler_rules.json"), [])
            if (profiler / "top_operators.json").is_file():
                job.operators = read("profiler/top_operators.json",
                                     lambda: list(_json(profiler / "top_operators.json")), [])
            if (profiler / "torch_trace.json").is_file():
                job.torch_trace = profiler / "torch_trace.json"
    if not job.history and job.trace:
        job.history = _history_from_trace(job.trace)
        job.history_source = "the debugger trace's EVAL steps (no metrics.json)"
    return job


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _rules(path: Path) -> list[dict]:
    return [dict(rule) for rule in _json(path)["rules"]]


def _outcome(output: Path) -> tuple[str, str]:
    """output/failure (one readable reason) or output/success, as the training program
    writes them; a job folder from elsewhere may have neither."""
    failure = output / "failure"
    if failure.is_file():
        return "failed", failure.read_text(errors="replace").strip()
    if (output / "success").is_file():
        return "succeeded", ""
    return "unknown", ""


def _history_from_trace(trace: list) -> list[dict]:
    rows = []
    for step in (s for s in trace if s.mode == "EVAL"):
        row = {"epoch": len(rows) + 1}
        for name, key in (("valid_loss", "valid_loss"), ("loss", "valid_loss"),
                          ("valid_accuracy", "valid_accuracy")):
            if key not in row and name in step.tensors:
                row[key] = scalar(step.tensors[name])
        rows.append(row)
    return rows


# ---- the page ---------------------------------------------------------------------------

@dataclass
class Section:
    anchor: str
    heading: str
    body: str


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _absent(job: JobRecord, what: str, how: str) -> str:
    """Why a section is empty and how to fill it (HTML)."""
    if job.output_data is None:
        return _note(f"No {what}: this section reads the job's <code>output/data/</code> "
                     "folder, which was not given.")
    return _note(f"No {what}: {how}.")


def _table(header: list[str], rows: list[list[str]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _kv_table(items: dict, render: Callable[[Any], str]) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{render(v)}</td></tr>"
                   for k, v in items.items())
    return f'<table class="kv">{rows}</table>'


def _wide_table(items: dict) -> str:
    """Names over values: a row of metrics reads at a glance."""
    return _table([str(k) for k in items], [[_cell(v) for v in items.values()]], "wide")


def _cell(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e9:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) and abs(value) < 1e5 else f"{value:.4g}"
    return html.escape(str(value))


def _text(value: Any) -> str:
    return html.escape(str(value))


def _status(status: str) -> str:
    css = STATUS_CLASS.get(status, "unknown")
    return f'<span class="status {css}">{html.escape(str(status))}</span>'


def summary_html(job: JobRecord) -> str:
    outcome = {"succeeded": '<span class="status ok">Succeeded</span>',
               "failed": '<span class="status issue">Failed</span>',
               "unknown": '<span class="status unknown">Outcome unknown</span>'}[job.outcome]
    if job.reason:
        reason = f' <span class="reason">{html.escape(job.reason)}</span>'
    elif job.outcome != "unknown":
        reason = ""
    elif job.output_data is not None:
        reason = (' <span class="small">(no output/success or output/failure next to the '
                  "output data)</span>")
    else:
        reason = (' <span class="small">(a model folder alone, without its job\'s output/ '
                  "folder)</span>")
    parts = [f'<p class="outcome">{outcome}{reason}</p>']
    training = job.training
    if job.description is not None:
        facts = [f"{job.description.get('num_classes')} breeds",
                 f"{training.get('epochs_run')} of {job.hyperparameters.get('epochs', '?')} "
                 "epoch(s) run",
                 f"best epoch {training.get('best_epoch')} (by valid_loss)"]
        if training.get("stopped_early"):
            facts.append(f"stopped early: {training['stopped_early']}")
        facts.append(f"on {training.get('device')} ({training.get('precision')}), world size "
                     f"{training.get('world_size')}")
        parts.append(f"<p>{html.escape(', '.join(str(f) for f in facts))}.</p>")
    else:
        how = ("the job ended before writing its model" if job.outcome == "failed" else
               "the model was not given (<code>--model DIR</code>)")
        parts.append(_note(f"No model folder (model.json, metrics.json): {how}. Per-epoch "
                           "metrics come from the debugger trace where there is one; "
                           "hyperparameters and training facts are missing."))
    rules = job.debugger_rules + job.profiler_rules
    if rules:
        count = {status: sum(r.get("status") == status for r in rules)
                 for status in STATUS_CLASS}
        parts.append(f"<p>Rules: {len(rules)} evaluated, {_status('IssuesFound')} "
                     f"{count['IssuesFound']}, {_status('Error')} {count['Error']}, "
                     f"{_status('NoIssuesFound')} {count['NoIssuesFound']} "
                     '(<a href="#rules">details</a>).</p>')
    final = (job.description or {}).get("metrics") or {}
    if final:
        parts.append("<h3>Final metrics (best epoch)</h3>" + _wide_table(final))
    elif job.history:
        parts.append("<h3>Last epoch</h3>" + _wide_table(job.history[-1]))
    if job.output_data is None:
        parts.append(_note(f"No output data: {HOW_TO['output_data']}."))
    if job.problems:
        parts.append('<p class="note">' + "<br>".join(html.escape(p) for p in job.problems) +
                     "</p>")
    sources = [f"model: {job.model_dir}" if job.model_dir else "model: none",
               f"output data: {job.output_data}" if job.output_data else "output data: none"]
    parts.append(f'<p class="sources">{html.escape("; ".join(sources))}</p>')
    return "\n".join(parts)


def rules_section(job: JobRecord) -> Section:
    rows = []
    ranked = [("debugger", rule) for rule in job.debugger_rules] + \
        [("profiler", rule) for rule in job.profiler_rules]
    ranked.sort(key=lambda item: RANK.get(item[1].get("status"), 1))  # issues first
    for kind, rule in ranked:
        parameters = ", ".join(f"{k}={v}" for k, v in
                               (rule.get("parameters") or {}).items())
        step = rule.get("step")
        checked = rule.get("steps_checked", rule.get("datapoints"))
        rows.append([kind, f"<b>{html.escape(str(rule.get('rule')))}</b>",
                     _status(rule.get("status", "?")),
                     html.escape(str(rule.get("action", ""))),
                     html.escape(str(step if step is not None else "")),
                     html.escape(str(checked if checked is not None else "")),
                     html.escape(str(rule.get("evidence", ""))),
                     f'<span class="small">{html.escape(parameters)}</span>'])
    body = [_table(["kind", "rule", "status", "action", "step", "checked", "evidence",
                    "parameters"], rows, "rules")] if rows else []
    if job.output_data is None:
        body.append(_absent(job, "rule results", ""))
    else:
        if not job.debugger_rules:
            body.append(_absent(job, "debugger rules were evaluated (no rules.json)",
                                HOW_TO["rules"]))
        if not job.profiler_rules:
            body.append(_absent(job, "profiler rules (no profiler/profiler_rules.json)",
                                "they are judged at the end of training; " +
                                HOW_TO["profiler"]))
    if rows:
        body.append('<p class="small">"checked": steps (debugger) or data points '
                    '(profiler) the rule looked at; "step": where an issue was found.</p>')
    return Section("rules", "Rule results", "\n".join(body))


def curves_section(job: JobRecord) -> Section:
    body = []
    per_epoch = epoch_figure(job.history, job.training.get("best_epoch")) \
        if job.history else None
    if per_epoch:
        body.append(img_tag(per_epoch, "loss, accuracy and throughput per epoch"))
        body.append(f'<p class="caption">Per epoch, from {html.escape(job.history_source)}.'
                    "</p>")
    else:
        body.append(_note("No per-epoch metrics: neither model/metrics.json nor EVAL steps "
                          "in a debugger trace."))
    per_step = step_figure(job.trace) if job.trace else None
    if per_step:
        body.append(img_tag(per_step, "loss and accuracy per saved training step"))
        losses = [scalar(s.tensors["loss"]) for s in job.trace
                  if s.mode == "TRAIN" and "loss" in s.tensors]
        bad = [v for v in losses if not math.isfinite(v)]
        warning = (f' <b class="reason">{len(bad)} of {len(losses)} saved losses are not '
                   "finite (NaN or infinite) and are not drawn.</b>" if bad else "")
        body.append('<p class="caption">Per saved training step, from the debugger trace '
                    "(every <code>debugger-save-interval</code> steps); squares: the "
                    f"validation at each epoch end.{warning}</p>")
    else:
        body.append(_absent(job, "per-step losses (no debugger trace with losses)",
                            HOW_TO["trace"]))
    return Section("curves", "Loss and accuracy", "\n".join(body))


def norms_section(job: JobRecord) -> Section:
    weights = norms_of(job.trace, gradients=False) if job.trace else None
    gradients = norms_of(job.trace, gradients=True) if job.trace else None
    if not (weights or gradients):
        where = ("the debugger trace holds no l2 norms" if job.trace else
                 "there is no debugger trace")
        return Section("norms", "Gradient and weight norms",
                       _absent(job, "gradient or weight norms", f"{where}; {HOW_TO['norms']}"))
    count = max(len(n.names) for n in (weights, gradients) if n)
    body = [img_tag(norm_lines_figure(weights, gradients),
                 "weight and gradient l2 norms of representative layers"),
            img_tag(norm_heatmaps_figure(weights, gradients),
                 "heatmaps of gradient and weight norms for every layer"),
            f'<p class="caption">l2 norms of {count} parameter tensors at '
            f"{len((gradients or weights).steps)} saved training steps. Lines: the first "
            "weight of each block; heatmaps: every parameter, in model order (black: not "
            "finite or not saved). A gradient row that is very dark compared with the others "
            "vanishes; a bright or black one explodes. A weight row near 0 % has not moved.</p>"]
    missing = [what for what, n in (("weights", weights), ("gradients", gradients)) if not n]
    if missing:
        body.append(_note(f"No {' or '.join(missing)} saved: {HOW_TO['norms']}."))
    return Section("norms", "Gradient and weight norms", "\n".join(body))


def step_time_section(job: JobRecord) -> Section:
    train = sorted((s for s in job.steps if s.get("mode", "TRAIN") == "TRAIN"),
                   key=lambda s: s["global_step"])
    if not train:
        why = ("profiler/steps.jsonl holds no training step" if job.profiler_dir and
               job.profiler_dir.is_dir() else "no profiler/steps.jsonl")
        return Section("steps", "Step time",
                       _absent(job, f"step timeline ({why})", HOW_TO["profiler"]))
    png, clipped = step_time_figure(train, profiler_window(job.hyperparameters))
    rows = []
    for mode in sorted({s.get("mode", "TRAIN") for s in job.steps}):
        steps = [s for s in job.steps if s.get("mode", "TRAIN") == mode]
        data = np.array([s["data_seconds"] for s in steps], dtype=float) * 1000
        compute = np.array([s["compute_seconds"] for s in steps], dtype=float) * 1000
        total = data + compute
        share = 100 * data.sum() / total.sum() if total.sum() > 0 else 0.0
        rows.append([mode, str(len(steps)), f"{np.median(data):.1f}",
                     f"{np.median(compute):.1f}", f"{np.median(total):.1f}",
                     f"{np.percentile(total, 95):.1f}", f"{total.max():.1f}",
                     f"{share:.1f} %", f"{total.sum() / 1000:.1f}"])
    body = [img_tag(png, "data-loader wait and compute per training step"),
            f'<p class="caption">{html.escape(clipped)}</p>' if clipped else "",
            _table(["mode", "steps", "median data wait (ms)", "median compute (ms)",
                    "median step (ms)", "p95 step (ms)", "max step (ms)",
                    "time waiting for data", "total (s)"], rows, "numbers"),
            '<p class="small">A large share of time waiting for data means the loader is the '
            "bottleneck: more <code>num-workers</code>, smaller images or faster storage. The "
            "first steps are usually slow (warm-up).</p>"]
    return Section("steps", "Step time", "\n".join(body))


def system_section(job: JobRecord) -> Section:
    if not job.system:
        why = ("profiler/system.jsonl holds no sample" if job.profiler_dir and
               job.profiler_dir.is_dir() else "no profiler/system.jsonl")
        return Section("system", "System utilisation",
                       _absent(job, f"system samples ({why})", HOW_TO["profiler"]))
    png = system_figure(job.system, job.steps, profiler_window(job.hyperparameters))
    cpu = [float(np.mean(s["cpu_percent"])) for s in job.system if s["cpu_percent"]]
    peak_core = max((max(s["cpu_percent"]) for s in job.system if s["cpu_percent"]),
                    default=0.0)
    duration = job.system[-1]["time"] - job.system[0]["time"]
    facts = {"samples": f"{len(job.system)} over {duration:.0f} s",
             "CPU mean (all cores)": f"{np.mean(cpu):.0f} %" if cpu else "n/a",
             "busiest core, peak": f"{peak_core:.0f} %",
             "memory peak": f"{max(s.get('memory_percent', 0) for s in job.system):.0f} %"}
    gpus = sorted({g["index"] for s in job.system for g in s.get("gpus") or []})
    for index in gpus:
        samples = [g for s in job.system for g in s.get("gpus") or [] if g["index"] == index]
        facts[f"GPU {index} utilisation mean"] = \
            f"{np.mean([g['utilization_percent'] for g in samples]):.0f} %"
        facts[f"GPU {index} memory peak"] = \
            f"{max(g['memory_percent'] for g in samples):.0f} %"
    body = [img_tag(png, "CPU, memory, GPU and I/O over time"), _kv_table(facts, _text)]
    if not gpus:
        body.append('<p class="small">No GPU in this job: the GPU panel is left out.</p>')
    return Section("system", "System utilisation", "\n".join(body))


def operators_section(job: JobRecord, out: Path) -> Section:
    body = []
    if job.operators:
        on_gpu = any(op.get("self_device_ms") for op in job.operators)
        header = ["operator", "calls", "self CPU (ms)", "CPU total (ms)"] + \
            (["self GPU (ms)"] if on_gpu else [])
        rows = [[f"<code>{html.escape(str(op.get('name')))}</code>", _cell(op.get("calls")),
                 f"{op.get('self_cpu_ms', 0):.1f}", f"{op.get('cpu_total_ms', 0):.1f}"] +
                ([f"{op.get('self_device_ms', 0):.1f}"] if on_gpu else [])
                for op in job.operators]
        window = profiler_window(job.hyperparameters)
        during = f" during global steps {window[0]}-{window[1]}" if window else ""
        body += [f'<p class="caption">The operators with the most self time{during} '
                 "(torch.profiler window).</p>", _table(header, rows, "numbers")]
    else:
        body.append(_absent(job, "torch.profiler window was recorded (no "
                            "profiler/top_operators.json)", HOW_TO["operators"]))
    if job.torch_trace is not None:
        link = Path(os.path.relpath(job.torch_trace.resolve(), out.resolve().parent))
        size = job.torch_trace.stat().st_size / 1e6
        body.append(f'<p>The full timeline: <a href="{html.escape(link.as_posix())}">'
                    f"{html.escape(link.as_posix())}</a> ({size:.1f} MB). Open it in "
                    '<a href="https://ui.perfetto.dev">ui.perfetto.dev</a> ("Open trace '
                    'file") or chrome://tracing.</p>')
    return Section("operators", "Top operators", "\n".join(body))


def settings_section(job: JobRecord) -> Section:
    if job.description is None:
        return Section("settings", "Hyperparameters and training facts",
                       _note("No model.json: the hyperparameters and training facts are "
                             "written with the model at the end of a successful job."))
    blocks = [("Hyperparameters", _kv_table(job.hyperparameters, _text)),
              ("Training facts", _kv_table(job.training, lambda v: html.escape(
                  v if isinstance(v, str) else json.dumps(v))))]
    if job.description.get("versions"):
        blocks.append(("Versions", _kv_table(job.description["versions"], _text)))
    body = "".join(f'<div class="block"><h3>{title}</h3>{table}</div>'
                   for title, table in blocks)
    return Section("settings", "Hyperparameters and training facts", body)


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em auto;
  max-width:1320px;padding:0 1em;color:#222;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{margin:.8em 0 .3em}
nav{margin:.6em 0 1em;font-size:.95em}nav a{margin-right:1.2em}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:.92em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
thead th{background:#f2f2f2}table.kv th{background:#fafafa;font-weight:normal;color:#444}
table.wide td,table.numbers td{text-align:right}table.numbers td:first-child{text-align:left}
table.rules td:nth-child(7){min-width:360px;max-width:560px}
table.rules td:nth-child(8){max-width:320px}
img{max-width:100%;display:block;margin:.5em 0}
.status{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;
  font-size:.9em;white-space:nowrap}
.status.ok{background:#dff3e1;color:#17652a}.status.issue{background:#fbdcdc;color:#a11b1b}
.status.error{background:#ffe7c2;color:#8a4b00}.status.unknown{background:#eee;color:#555}
.outcome{font-size:1.15em}.reason{font-weight:600;color:#a11b1b}
.note{background:#f6f6f9;border-left:4px solid #99a;padding:.5em .8em;color:#444}
.caption,.small{color:#555;font-size:.9em}.small{font-size:.85em}
.sources{color:#888;font-size:.8em}
.block{display:inline-block;vertical-align:top;margin-right:2.5em}
code{background:#f3f3f3;padding:0 3px;border-radius:3px}
"""


def build_report(out: Path, title: str, model_dir: Path | None = None,
                 output_data: Path | None = None) -> Path:
    """Write the report page to `out` from a model folder, a job's output data folder, or
    both; ReportError when neither holds anything to show."""
    out = Path(out)
    job = load_job(title, model_dir, output_data)
    sections = [rules_section(job), curves_section(job), norms_section(job),
                step_time_section(job), system_section(job), operators_section(job, out),
                settings_section(job)]
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.heading)}</a>' for s in sections)
    body = "\n".join(f'<section id="{s.anchor}"><h2>{html.escape(s.heading)}</h2>\n{s.body}'
                     "</section>" for s in sections)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Training report: {html.escape(title)}</title>
<style>{STYLE}</style>
</head><body>
<h1>Training report: {html.escape(title)}</h1>
{summary_html(job)}
<nav>{nav}</nav>
{body}
</body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".tmp")
    temporary.write_text(page)
    os.replace(temporary, out)
    return out


# ---- the job's own report, and the command line ---------------------------------------

def write_job_report(base_dir: Path) -> Path | None:
    """`<base>/output/data/report.html` from `<base>/model` and `<base>/output/data` of a
    finished or failed job (call it after output/success or output/failure is written);
    None when the job left neither."""
    base = Path(base_dir)
    model = base / "model"
    output_data = base / "output" / "data"
    model_dir = model if (model / "model.json").is_file() else None
    if model_dir is None and not is_output_data(output_data):
        return None
    title = os.environ.get("TRAINING_JOB_NAME") or base.resolve().name
    return build_report(output_data / REPORT_FILE, title, model_dir, output_data)


def is_output_data(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).exists() for name in OUTPUT_DATA_ENTRIES)


def resolve_sources(source: Path, model: Path | None = None
                    ) -> tuple[Path | None, Path | None, str]:
    """(model folder, output data folder, title) from a job folder, its output/data folder,
    or a model folder; ReportError when `source` is none of them."""
    source = Path(source)
    if not source.exists():
        raise ReportError(f"{source} not found")
    if not source.is_dir():
        raise ReportError(f"{source} is not a folder: give a job folder (model/, "
                          "output/data/) or its output/data folder")
    model_dir, output_data, title = None, None, source.resolve().name
    if (source / "model").is_dir() or (source / "output" / "data").is_dir():  # a job folder
        model_dir = source / "model"
        output_data = source / "output" / "data"
    elif is_output_data(source):
        output_data = source
        model_dir = source.resolve().parent.parent / "model"  # <base>/output/data
        if source.resolve().name == "data" and source.resolve().parent.name == "output":
            title = source.resolve().parent.parent.name
    elif (source / "model.json").is_file():
        model_dir = source
        title = source.resolve().parent.name if source.name == "model" else title
    else:
        raise ReportError(f"{source} holds no training job: no model/ or output/data/ "
                          "(a job folder), no debug/, rules.json or profiler/ (its output "
                          "data), no model.json (a model folder)")
    if model is not None:
        model_dir = Path(model)
        if not (model_dir / "model.json").is_file():
            raise ReportError(f"--model {model}: not a model folder (no model.json)")
    elif model_dir is not None and not (model_dir / "model.json").is_file():
        model_dir = None
    if output_data is not None and not output_data.is_dir():
        output_data = None  # a job folder with a model but no output data
    if model_dir is None and output_data is None:
        raise ReportError(f"{source} holds neither a model (model.json) nor output data "
                          "(debug/, rules.json, profiler/): nothing to report on")
    return (model_dir.resolve() if model_dir else None,
            output_data.resolve() if output_data else None, title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreed.report",
        description="Build a training job's HTML report (plots inlined; opens offline) from "
                    "its model/ and output/data/ folders.")
    parser.add_argument("source", type=Path, metavar="OUTPUT_DATA_OR_JOB_DIR",
                        help="a job folder laid out like /opt/ml (model/, output/data/), "
                             "its output/data folder, or a model folder")
    parser.add_argument("--model", type=Path, metavar="DIR",
                        help="the job's model folder (default: found next to the source)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="the HTML file to write (default: report.html in the output "
                             "data folder, else in the current folder)")
    parser.add_argument("--title", help="the job's name in the page (default: the folder's)")
    args = parser.parse_args(argv)
    try:
        model_dir, output_data, title = resolve_sources(args.source, args.model)
        out = args.out or ((output_data or Path.cwd()) / REPORT_FILE)
        if out.is_dir():
            raise ReportError(f"--out {out} is a folder; give the HTML file's name")
        build_report(out, args.title or title, model_dir, output_data)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
