"""The profiler hook: where a training job spends its time, in `output/data/profiler/`.

Three records, all written by rank 0 (system metrics are per machine):

- `steps.jsonl`: every training step, split into waiting for the data loader and compute
  (as the loop measured them), buffered and written every 1000 steps, at every epoch end
  and at exit;
- `system.jsonl`: CPU per core, memory, I/O, network and GPUs every `profiler-interval-ms`
  for the whole training (`dogbreed.profiling.system_metrics`);
- a `torch.profiler` window of `profiler-num-steps` steps from global step
  `profiler-start-step` (off by default: 0 steps): `torch_trace.json` (open it in
  https://ui.perfetto.dev or chrome://tracing) and `top_operators.json`. One extra step
  before the window warms the profiler up, as torch's schedule recommends; torch numbers
  the trace's `ProfilerStep#k` from there, so #1 is `profiler-start-step` (#0 when that
  is step 1). A window that spans an epoch end also holds that epoch's validation pass.

At the end the profiler rules (`dogbreed.profiling.rules`) judge the two series; each
prints `ProfilerRule <Name>: <Status> - <evidence>` and all go to `profiler_rules.json`.
Outside the window a step costs one list append; the sampler thread wakes once per
interval (twice a second by default). A job that ends by an exception keeps what was
recorded: the step buffer is written and the sampler stopped at interpreter exit. A
restarted (resumed) job starts the files anew.
"""

from __future__ import annotations

import atexit
import json
import time
import warnings
from pathlib import Path

import torch

from dogbreed.hyperparameters import Hyperparameters
from dogbreed.profiling.rules import evaluate_profiler_rules, rule_log_line, write_rule_results
from dogbreed.profiling.system_metrics import SystemSampler
from dogbreed.rule_specs import PROFILER_DEFAULTS, parse_rule_parameters
from dogbreed.training.callbacks import Callback, StepResult, TrainState

TOP_OPERATORS = 20
FLUSH_STEPS = 1000  # and at every epoch end: a long epoch loses little if killed


def build_profiler(hp: Hyperparameters, out_dir: Path) -> Callback | None:
    if hp.profiler == "off":
        return None
    overrides = {rule: values for rule, values in
                 parse_rule_parameters(hp.rule_parameters).items() if rule in PROFILER_DEFAULTS}
    return ProfilerHook(Path(out_dir), hp.profiler_interval_ms / 1000,
                        hp.profiler_start_step, hp.profiler_num_steps,
                        rule_parameters=overrides)


class ProfilerHook(Callback):
    def __init__(self, out_dir: Path, interval: float, start_step: int, num_steps: int,
                 log=print, rule_parameters: dict | None = None):
        self.out_dir = out_dir
        self.rule_parameters = rule_parameters or {}  # {rule: {parameter: value}}
        self.interval = interval
        self.start_step = max(start_step, 1)  # global steps count from 1
        self.num_steps = num_steps
        self.log = log
        self.sampler: SystemSampler | None = None
        self.torch_profiler: torch.profiler.profile | None = None
        self._steps: list[tuple] = []
        self._steps_file = None
        # The warm-up step: the one before the window, when there is one.
        self._warmup = 1 if self.start_step >= 2 else 0
        self._begin_after = self.start_step - 1 - self._warmup  # start after this global step
        self._last_step = self.start_step + num_steps - 1

    # ---- the loop's events -------------------------------------------------------------

    def on_train_begin(self, state: TrainState) -> None:
        if not state.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._steps_file = open(self.out_dir / "steps.jsonl", "w")
        self.sampler = SystemSampler(self.out_dir / "system.jsonl", self.interval)
        self.sampler.start()
        atexit.register(self._close)
        self._maybe_start_window(state.global_step)

    def on_step_end(self, state: TrainState, step: StepResult) -> None:
        if self._steps_file is None:
            return
        ended = time.time()
        # Formatted at flush time: here only the numbers are kept, which is cheaper.
        self._steps.append((step.epoch, step.step, state.global_step,
                            ended - step.compute_seconds - step.data_seconds,
                            step.data_seconds, step.compute_seconds))
        if len(self._steps) >= FLUSH_STEPS:
            self._flush_steps()
        if self.torch_profiler is not None:
            self.torch_profiler.step()
            if state.global_step >= self._last_step:
                self._end_window()
        else:
            self._maybe_start_window(state.global_step)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        self._flush_steps()

    def on_train_end(self, state: TrainState) -> None:
        if self._steps_file is None:
            return  # not rank 0
        self._close()
        atexit.unregister(self._close)
        results = evaluate_profiler_rules(self.out_dir, self.rule_parameters)
        write_rule_results(self.out_dir / "profiler_rules.json", results)
        for result in results:
            self.log(rule_log_line(result), flush=True)

    # ---- the torch.profiler window -----------------------------------------------------

    def _maybe_start_window(self, global_step: int) -> None:
        if self.num_steps <= 0 or global_step != self._begin_after:
            return
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        with warnings.catch_warnings():  # warmup=0 when the window starts at step 1
            warnings.filterwarnings("ignore", message="Profiler won't be using warmup")
            schedule = torch.profiler.schedule(wait=0, warmup=self._warmup,
                                               active=self.num_steps, repeat=1)
        self.torch_profiler = torch.profiler.profile(
            activities=activities, schedule=schedule, on_trace_ready=self._export,
            record_shapes=False, with_stack=False)
        self.torch_profiler.start()

    def _end_window(self) -> None:
        """Stops the profiler; a window cut short by the end of training is exported too."""
        profiler, self.torch_profiler = self.torch_profiler, None
        if profiler is not None:
            profiler.stop()

    def _export(self, profiler: torch.profiler.profile) -> None:
        started = time.perf_counter()
        profiler.export_chrome_trace(str(self.out_dir / "torch_trace.json"))
        on_gpu = torch.profiler.ProfilerActivity.CUDA in profiler.activities
        operators = top_operators(profiler.key_averages(), on_gpu)
        (self.out_dir / "top_operators.json").write_text(json.dumps(operators, indent=1) + "\n")
        size = (self.out_dir / "torch_trace.json").stat().st_size
        self.log(f"profiler: torch.profiler trace of global steps {self.start_step}-"
                 f"{self._last_step} written ({size / 1e6:.1f} MB, "
                 f"{time.perf_counter() - started:.1f} s)", flush=True)

    # ---- files -------------------------------------------------------------------------

    def _flush_steps(self) -> None:
        if self._steps_file is None or not self._steps:
            return
        for epoch, step, global_step, start, data, compute in self._steps:
            self._steps_file.write(json.dumps({
                "mode": "TRAIN", "epoch": epoch, "step": step, "global_step": global_step,
                "start": start, "data_seconds": data, "compute_seconds": compute}) + "\n")
        self._steps_file.flush()
        self._steps.clear()

    def _close(self) -> None:
        """Everything recorded goes to disk; also run at exit when training failed."""
        self._end_window()
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler = None
        if self._steps_file is not None:
            self._flush_steps()
            self._steps_file.close()
            self._steps_file = None


def top_operators(averages, on_gpu: bool, count: int = TOP_OPERATORS) -> list[dict]:
    """The `count` operators with the most self CPU time and, on a GPU, those with the most
    self device time (where a GPU job's time goes), most time first; times in ms. The
    ProfilerStep markers (`ProfilerStep#k`, and the `ProfilerStep*` total) are not
    operators."""
    rows = [{"name": event.key, "calls": event.count,
             "self_cpu_ms": event.self_cpu_time_total / 1000,
             "cpu_total_ms": event.cpu_time_total / 1000,
             "self_device_ms": getattr(event, "self_device_time_total", 0.0) / 1000}
            for event in averages if not event.key.startswith("ProfilerStep")]
    chosen = sorted(rows, key=lambda row: row["self_cpu_ms"], reverse=True)[:count]
    if on_gpu:
        by_device = sorted(rows, key=lambda row: row["self_device_ms"], reverse=True)[:count]
        chosen += [row for row in by_device if row not in chosen]
        chosen.sort(key=lambda row: (row["self_device_ms"], row["self_cpu_ms"]), reverse=True)
    return chosen
