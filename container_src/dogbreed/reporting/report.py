"""A training job's report: one self-contained HTML page, its plots inlined as PNG.

Built from whatever the job left, every part optional:

- `model/`: `model.json` (hyperparameters, final metrics, training facts) and
  `metrics.json` (one row per epoch); a failed job may have none;
- `output/data/`: the debugger's smdebug trace (`debug/`), the debugger rules' results
  (`rules.json`) and the profiler's records (`profiler/`: `steps.jsonl`, `system.jsonl`,
  `profiler_rules.json`, `top_operators.json`, `torch_trace.json`), see
  `dogbreed.profiling.profiler`; and `output/failure` next to it, the reason a job failed.

The sections follow the order a person asks in: did it work (outcome, final metrics, rule
results), how did it learn (loss and accuracy, gradient and weight norms), where did the
time go (step time, system utilisation, top operators), and with what settings. A section
without data says so and how to get it. No network and no JavaScript: the page opens from
a downloaded folder. Torch-free; matplotlib (Agg, without pyplot's global state) is
imported only when a plot is drawn (the plots are in `dogbreed.reporting.figures`). The HTML
is the Jinja2 template `templates/report.html.j2`, autoescaped: what the job's files say
shows as text; only our own snippets (`HOW_TO`) are marked as HTML.

The training program writes `output/data/report.html` at the end of every job
(`write_job_report`); `python -m dogbreed.reporting.report JOB_DIR` and `launcher report` build it
again offline.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from dogbreed.debugging.trace import read_trace
from dogbreed.job_outputs import JobOutputsError, find_job_outputs, is_model_dir, is_output_data
from dogbreed.profiling.rules import read_jsonl
from dogbreed.reporting.figures import (epoch_figure, norm_heatmaps_figure, norm_lines_figure,
                                        norms_of, profiler_window, scalar, step_figure,
                                        step_time_figure, system_figure)

REPORT_FILE = "report.html"
TEMPLATE = "report.html.j2"  # in dogbreed/reporting/templates/
PROFILER = "profiler"

STATUS_CLASS = {"NoIssuesFound": "ok", "IssuesFound": "issue", "Error": "error"}
RANK = {"IssuesFound": 0, "Error": 1, "NoIssuesFound": 2}  # the rules table's order

# How to get a section's data, in the training program's hyperparameters and the
# launcher's `train`/`tune` options: HTML of ours, marked safe for the page's template.
HOW_TO = {name: Markup(text) for name, text in {
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
}.items()}


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
    trace: list = field(default_factory=list)  # dogbreed.debugging.trace.TraceStep
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
# The HTML is templates/report.html.j2 (Jinja2, autoescaped); here each section's data is
# worked out from the job, as text and numbers for the template to show.

class Section(SimpleNamespace):
    """One part of the page: `anchor` (also the name of its macro in the template),
    `heading`, and whatever else that macro shows."""

    def __init__(self, anchor: str, heading: str, **values: Any):
        super().__init__(anchor=anchor, heading=heading, **values)


def _cell(value: Any) -> str:
    """A table cell's text: whole floats as integers, others to 4 decimals."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e9:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) and abs(value) < 1e5 else f"{value:.4g}"
    return str(value)


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode()


_ENVIRONMENT = Environment(loader=PackageLoader("dogbreed.reporting", "templates"), autoescape=True,
                           trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                           undefined=StrictUndefined)
_ENVIRONMENT.filters.update(cell=_cell, b64=_b64)
_ENVIRONMENT.globals.update(STATUS_CLASS=STATUS_CLASS, HOW_TO=HOW_TO)


def summary_of(job: JobRecord) -> SimpleNamespace:
    """The page's top: training facts, rule counts and the final metrics."""
    facts = None
    if job.description is not None:
        training = job.training
        facts = [f"{job.description.get('num_classes')} breeds",
                 f"{training.get('epochs_run')} of {job.hyperparameters.get('epochs', '?')} "
                 "epoch(s) run",
                 f"best epoch {training.get('best_epoch')} (by valid_loss)"]
        if training.get("stopped_early"):
            facts.append(f"stopped early: {training['stopped_early']}")
        facts.append(f"on {training.get('device')} ({training.get('precision')}), world size "
                     f"{training.get('world_size')}")
    rules = job.debugger_rules + job.profiler_rules
    return SimpleNamespace(
        facts=facts, rule_count=len(rules),
        rules={status: sum(r.get("status") == status for r in rules) for status in STATUS_CLASS},
        final=(job.description or {}).get("metrics") or {})


def rules_section(job: JobRecord) -> Section:
    rows = []
    ranked = [("debugger", rule) for rule in job.debugger_rules] + \
        [("profiler", rule) for rule in job.profiler_rules]
    ranked.sort(key=lambda item: RANK.get(item[1].get("status"), 1))  # issues first
    for kind, rule in ranked:
        step = rule.get("step")
        checked = rule.get("steps_checked", rule.get("datapoints"))
        rows.append(SimpleNamespace(
            kind=kind, rule=str(rule.get("rule")), status=rule.get("status", "?"),
            action=str(rule.get("action", "")), step=str(step if step is not None else ""),
            checked=str(checked if checked is not None else ""),
            evidence=str(rule.get("evidence", "")),
            parameters=", ".join(f"{k}={v}" for k, v in (rule.get("parameters") or {}).items())))
    return Section("rules", "Rule results", rows=rows)


def curves_section(job: JobRecord) -> Section:
    per_epoch = epoch_figure(job.history, job.training.get("best_epoch")) \
        if job.history else None
    per_step = step_figure(job.trace) if job.trace else None
    losses = [scalar(s.tensors["loss"]) for s in job.trace
              if s.mode == "TRAIN" and "loss" in s.tensors] if per_step else []
    return Section("curves", "Loss and accuracy", per_epoch=per_epoch, per_step=per_step,
                   losses=len(losses), not_finite=sum(not math.isfinite(v) for v in losses))


def norms_section(job: JobRecord) -> Section:
    weights = norms_of(job.trace, gradients=False) if job.trace else None
    gradients = norms_of(job.trace, gradients=True) if job.trace else None
    if not (weights or gradients):
        where = ("the debugger trace holds no l2 norms" if job.trace else
                 "there is no debugger trace")
        return Section("norms", "Gradient and weight norms", where=where, lines=None)
    return Section(
        "norms", "Gradient and weight norms", where="",
        lines=norm_lines_figure(weights, gradients),
        heatmaps=norm_heatmaps_figure(weights, gradients),
        count=max(len(n.names) for n in (weights, gradients) if n),
        steps=len((gradients or weights).steps),
        missing=[what for what, n in (("weights", weights), ("gradients", gradients)) if not n])


def step_time_section(job: JobRecord) -> Section:
    train = sorted((s for s in job.steps if s.get("mode", "TRAIN") == "TRAIN"),
                   key=lambda s: s["global_step"])
    if not train:
        why = ("profiler/steps.jsonl holds no training step" if job.profiler_dir and
               job.profiler_dir.is_dir() else "no profiler/steps.jsonl")
        return Section("steps", "Step time", why=why, png=None)
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
    return Section("steps", "Step time", why="", png=png, clipped=clipped, rows=rows)


def system_section(job: JobRecord) -> Section:
    if not job.system:
        why = ("profiler/system.jsonl holds no sample" if job.profiler_dir and
               job.profiler_dir.is_dir() else "no profiler/system.jsonl")
        return Section("system", "System utilisation", why=why, png=None)
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
    return Section("system", "System utilisation", why="", png=png, facts=facts,
                   gpus=bool(gpus))


def operators_section(job: JobRecord, out: Path) -> Section:
    on_gpu = any(op.get("self_device_ms") for op in job.operators)
    header = ["operator", "calls", "self CPU (ms)", "CPU total (ms)"] + \
        (["self GPU (ms)"] if on_gpu else [])
    rows = [[str(op.get("name")), _cell(op.get("calls")), f"{op.get('self_cpu_ms', 0):.1f}",
             f"{op.get('cpu_total_ms', 0):.1f}"] +
            ([f"{op.get('self_device_ms', 0):.1f}"] if on_gpu else [])
            for op in job.operators]
    window = profiler_window(job.hyperparameters)
    link, size = "", ""
    if job.torch_trace is not None:
        link = Path(os.path.relpath(job.torch_trace.resolve(), out.resolve().parent)).as_posix()
        size = f"{job.torch_trace.stat().st_size / 1e6:.1f}"
    return Section("operators", "Top operators", header=header, rows=rows,
                   during=f" during global steps {window[0]}-{window[1]}" if window else "",
                   trace_link=link, trace_mb=size)


def settings_section(job: JobRecord) -> Section:
    blocks = []
    if job.description is not None:
        blocks = [("Hyperparameters", job.hyperparameters),
                  ("Training facts", {k: v if isinstance(v, str) else json.dumps(v)
                                      for k, v in job.training.items()})]
        if job.description.get("versions"):
            blocks.append(("Versions", job.description["versions"]))
    return Section("settings", "Hyperparameters and training facts", blocks=blocks)


def build_report(out: Path, title: str, model_dir: Path | None = None,
                 output_data: Path | None = None) -> Path:
    """Write the report page to `out` from a model folder, a job's output data folder, or
    both; ReportError when neither holds anything to show."""
    out = Path(out)
    job = load_job(title, model_dir, output_data)
    sections = [rules_section(job), curves_section(job), norms_section(job),
                step_time_section(job), system_section(job), operators_section(job, out),
                settings_section(job)]
    page = _ENVIRONMENT.get_template(TEMPLATE).render(job=job, summary=summary_of(job),
                                                      sections=sections)
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
    try:
        found = find_job_outputs(base)
    except JobOutputsError:
        return None
    if found.model_dir is None and not is_output_data(base / "output" / "data"):
        return None  # an empty output/data/ and no model: nothing to show
    title = os.environ.get("TRAINING_JOB_NAME") or found.title
    return build_report(base / "output" / "data" / REPORT_FILE, title, found.model_dir,
                        base / "output" / "data")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dogbreed.reporting.report",
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
        found = find_job_outputs(args.source)
        model_dir, output_data = found.model_dir, found.output_data
        if args.model is not None:
            if not is_model_dir(args.model):
                raise ReportError(f"--model {args.model}: not a model folder (no model.json)")
            model_dir = args.model
        out = args.out or ((output_data or Path.cwd()) / REPORT_FILE)
        if out.is_dir():
            raise ReportError(f"--out {out} is a folder; give the HTML file's name")
        build_report(out, args.title or found.title, model_dir, output_data)
    except (ReportError, JobOutputsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
