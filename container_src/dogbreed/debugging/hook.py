"""The debugger hook: tensors saved during training in smdebug's trace format.

SageMaker Debugger is closed to new customers and smdebug breaks on current PyTorch, so
the training program carries its own hook. It saves SageMaker Debugger's collections,
named as there, into `output/data/debug/` (shipped with the job's output), readable by
`smdebug.trials.create_trial`:

| collection  | tensors                                       | saved as                 |
|-------------|-----------------------------------------------|--------------------------|
| losses      | `loss` (the training objective of the batch)  | value                    |
| metrics     | `train_accuracy` per batch; `valid_loss`, `valid_accuracy` per epoch (EVAL) | value |
| weights     | every `*.weight` (frozen ones too)            | reductions               |
| biases      | every `*.bias`                                | reductions               |
| gradients   | `gradient/<parameter>`                        | reductions               |
| relu_input  | `<relu module>_input_<call>` (pre-activation: a forward pre-hook, since torchvision's ReLU is in-place and each block calls its ReLU three times) | reductions |
| outputs     | `predictions` (argmax class per image)        | value                    |
| labels      | `labels`                                      | value                    |

Reductions are l2, mean, std, min and max, stored as smdebug stores them (so
`trial.tensor(name).reduction_value(step, "l2")` reads them). TRAIN steps are saved every
`debugger-save-interval` steps; after every epoch one EVAL step holds the validation
metrics. On by default with `losses,metrics` (what SageMaker's default hook saves); the
heavier collections are opt-in, and a `debughookconfig.json` adds collections with their
own intervals, reductions and raw tensors (`dogbreed.debugging.config`). Rank 0 writes.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import torch

from dogbreed.debugging.config import DebuggerConfig
from dogbreed.debugging.rules import RuleRunner, probe_name, write_results
from dogbreed.debugging.trace import TraceWriter, reduce, reduction_name
from dogbreed.training.callbacks import Callback, StepResult, TrainState


class DebuggerHook(Callback):
    def __init__(self, config: DebuggerConfig, rules_file: Path, failure_file: Path,
                 log=print):
        self.config = config
        self.collections = config.collections
        self.writer: TraceWriter | None = None
        self.rules = RuleRunner(config.rules, config.rule_parameters, log) \
            if config.rules else None
        self.rules_file = rules_file
        self.failure_file = failure_file
        self.log = log
        self._relu_inputs: dict[str, torch.Tensor] = {}  # one per call: a block reuses its ReLU
        self._handles: list = []
        self._capture = False
        self._previous_weights: dict[str, torch.Tensor] = {}  # for WeightUpdateRatio
        self._watchdog: StallWatchdog | None = None
        self._mode_step = 0
        self._percentiles: tuple[str, np.ndarray] | None = None  # p05 and p95 of one tensor

    # ---- the loop's events -------------------------------------------------------------

    def on_train_begin(self, state: TrainState) -> None:
        if not state.is_main:
            return
        self.writer = TraceWriter(self.config.out_dir)
        if "relu_input" in self.collections:
            for name, module in _unwrap(state.model).named_modules():
                if isinstance(module, torch.nn.ReLU):
                    self._handles.append(module.register_forward_pre_hook(
                        self._relu_pre_hook(name)))
        # Relu inputs are kept only for a step that saves them (they are large).
        self._capture = self._keeps_relu(state.global_step)
        if self.rules is not None and "StalledTrainingRule" in self.rules.rules:
            self._watchdog = StallWatchdog(self.rules, self.config.rules["StalledTrainingRule"],
                                           self.rules_file, self.failure_file, self.log)

    def on_step_end(self, state: TrainState, step: StepResult) -> None:
        if self.writer is None:
            return
        mode_step = state.global_step - 1  # 0-based, as smdebug counts
        self._mode_step = mode_step
        if self._watchdog is not None:
            self._watchdog.beat()
        self._capture = self._keeps_relu(state.global_step)  # for the step that comes next
        self._percentiles = None
        saving = self.config.saving(mode_step)
        if not saving or step.optimizer_skipped:
            # A step fp16's loss scaler skipped changed no weight and left inf gradients
            # behind: saving it would fire ExplodingTensor on a healthy run.
            self._relu_inputs.clear()
            return
        self.writer.begin_step(self._global(mode_step, state.epoch), "TRAIN", mode_step)
        if "losses" in saving:
            self._save("losses", "loss", step.loss.float())
        if "metrics" in saving:
            accuracy = (step.outputs.argmax(dim=1) == step.labels).float().mean()
            self._save("metrics", "train_accuracy", accuracy)
        if "outputs" in saving:
            self._save("outputs", "predictions", step.outputs.argmax(dim=1))
        if "labels" in saving:
            self._save("labels", "labels", step.labels)
        for name, parameter in _unwrap(state.model).named_parameters():
            # Frozen parameters too: a frozen layer that drifts would be a bug.
            kind = "biases" if name.endswith("bias") else "weights"
            if kind in saving:
                self._save(kind, name, parameter.detach(), parameter.requires_grad)
            if "gradients" in saving and parameter.grad is not None:
                self._save("gradients", f"gradient/{name}", parameter.grad.detach())
        if "relu_input" in saving:
            for name, tensor in self._relu_inputs.items():
                self._save("relu_input", name, tensor)
        self._relu_inputs.clear()
        self._end_step(state)

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        if self._watchdog is not None:
            self._watchdog.beat()  # validation is progress too
        if self.writer is None or not {"losses", "metrics"} & set(self.collections):
            return
        epoch_index = state.epoch - 1
        self.writer.begin_step(state.global_step + epoch_index, "EVAL", epoch_index)
        if "losses" in self.collections:
            self._save("losses", "loss", torch.tensor(metrics["valid_loss"]))
        if "metrics" in self.collections:
            for name in ("valid_loss", "valid_accuracy"):
                self._save("metrics", name, torch.tensor(metrics[name]))
        self._end_step(state)

    def on_train_end(self, state: TrainState) -> None:
        for handle in self._handles:
            handle.remove()
        if self._watchdog is not None:
            self._watchdog.stop()
        if self.writer is not None:
            self.writer.close()
            if self.rules is not None:
                write_results(self.rules.finish(), self.rules_file)

    def _end_step(self, state: TrainState) -> None:
        """Write the step, then let the rules judge exactly what was written."""
        self.writer.end_step()
        if self.rules is None or self.writer.last_step is None:
            return
        fired = self.rules.observe(self.writer.last_step)
        for result in fired:
            if result.action == "stop" and state.stop_reason is None:
                state.stop_reason = f"rule {result.rule} found an issue {result.evidence}"
        if fired:  # the file changes when a rule fires, and at the end (on_train_end)
            self.rules.write(self.rules_file)

    # ---- helpers -----------------------------------------------------------------------

    def _keeps_relu(self, mode_step: int) -> bool:
        relu = self.collections.get("relu_input")
        return relu is not None and relu.saves(mode_step)

    @staticmethod
    def _global(mode_step: int, epoch: int) -> int:
        """Unique global steps across modes: each finished epoch added one EVAL step."""
        return mode_step + epoch - 1

    def _relu_pre_hook(self, name: str):
        def keep_input(module, inputs):
            # Training steps only: evaluation runs without grad (and frozen layers stay in
            # eval mode while training, so module.training cannot tell them apart).
            if self._capture and torch.is_grad_enabled():
                calls = sum(1 for key in self._relu_inputs if key.startswith(f"{name}_input_"))
                # A copy: the in-place ReLU overwrites its input right after this hook,
                # so a view would record the rectified (never negative) values.
                self._relu_inputs[f"{name}_input_{calls}"] = inputs[0].detach().clone()
        return keep_input

    def _save(self, collection: str, name: str, tensor: torch.Tensor,
              trained: bool = True) -> None:
        config = self.collections[collection]
        self.writer.add_to_collection(collection, name, config.reductions, config.save_raw,
                                      config.save_interval)
        values = _numpy(tensor)
        if config.save_raw:
            self.writer.write(name, values)
        floats = values.astype(np.float32, copy=False)
        for reduction in config.reductions:
            absolute = reduction.startswith("abs_")
            reduction = reduction.removeprefix("abs_")
            self.writer.write(reduction_name(name, reduction, absolute),
                              reduce(floats, reduction, absolute))
        for probe in config.probes:
            value = self._probe(probe, name, tensor, floats, trained, config)
            if value is not None:
                self.writer.write(probe_name(probe, name), value)

    def _probe(self, probe: str, name: str, tensor: torch.Tensor, floats: np.ndarray,
               trained: bool, config) -> np.ndarray | None:
        """The values a rule needs beyond smdebug's reductions (see dogbreed.debugging.rules)."""
        if probe in ("p05", "p95"):
            # PoorWeightInitialization's, for its first steps only: percentiles of a
            # ResNet50's gradients cost about half a second.
            if self._mode_step >= config.first_steps:
                return None
            if self._percentiles is None or self._percentiles[0] != name:
                self._percentiles = (name, np.percentile(floats, [5, 95]).astype(np.float32))
            return self._percentiles[1][0 if probe == "p05" else 1]
        if probe == "zero_fraction":
            return np.asarray(np.count_nonzero(floats == 0) / max(floats.size, 1),
                              dtype=np.float32)
        if probe == "active_fraction":  # per channel: the share of inputs above zero
            dims = [d for d in range(tensor.dim()) if d != 1]
            return _numpy((tensor > 0).float().mean(dim=dims))
        if probe == "update_l2" and trained:
            previous = self._previous_weights.get(name)
            self._previous_weights[name] = tensor.detach().clone()
            if previous is not None:
                return _numpy(torch.linalg.vector_norm((tensor - previous).float()))
        return None


class StallWatchdog:
    """StalledTrainingRule online: a thread that notices when no step has finished for
    `threshold` seconds (a stalled loop cannot check anything itself). With the stop
    action it writes output/failure and ends the process, as StopTrainingJob would."""

    def __init__(self, rules: RuleRunner, action: str, rules_file: Path, failure_file: Path,
                 log=print):
        self.rules, self.action, self.log = rules, action, log
        self.rules_file, self.failure_file = rules_file, failure_file
        self.threshold = rules.results["StalledTrainingRule"].parameters["threshold"]
        self._last = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watchdog",
                                        daemon=True)
        self._thread.start()

    def beat(self) -> None:
        self._last = time.monotonic()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stopped.wait(min(max(self.threshold / 4, 0.05), 10.0)):
            result = self.rules.observe_time(time.monotonic(), self._last)
            if result is None:
                continue
            self.rules.write(self.rules_file)
            if self.action == "stop" and not self._stopped.is_set():
                self.failure_file.parent.mkdir(parents=True, exist_ok=True)
                self.failure_file.write_text(f"rule StalledTrainingRule found an issue: "
                                             f"{result.evidence}\n")
                self.log("stopping: StalledTrainingRule (the training loop is stuck)",
                         flush=True)
                os._exit(1)
            return


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    array = tensor.detach().to("cpu")
    if array.dtype in (torch.bfloat16, torch.float16):
        array = array.float()
    return array.numpy()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside torch.compile's and DistributedDataParallel's wrappers, so names
    match the artifact's."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)
