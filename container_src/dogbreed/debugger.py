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
own intervals, reductions and raw tensors (`dogbreed.debugger_config`). Rank 0 writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dogbreed.callbacks import Callback, StepResult, TrainState
from dogbreed.debugger_config import DebuggerConfig
from dogbreed.smdebug_trace import TraceWriter, reduce, reduction_name


class DebuggerHook(Callback):
    def __init__(self, config: DebuggerConfig):
        self.config = config
        self.collections = config.collections
        self.writer: TraceWriter | None = None
        self._relu_inputs: dict[str, torch.Tensor] = {}  # one per call: a block reuses its ReLU
        self._handles: list = []
        self._capture = False

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

    def on_step_end(self, state: TrainState, step: StepResult) -> None:
        if self.writer is None:
            return
        mode_step = state.global_step - 1  # 0-based, as smdebug counts
        self._capture = self._keeps_relu(state.global_step)  # for the step that comes next
        saving = self.config.saving(mode_step)
        if not saving:
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
                self._save(kind, name, parameter.detach())
            if "gradients" in saving and parameter.grad is not None:
                self._save("gradients", f"gradient/{name}", parameter.grad.detach())
        if "relu_input" in saving:
            for name, tensor in self._relu_inputs.items():
                self._save("relu_input", name, tensor)
        self._relu_inputs.clear()
        self.writer.end_step()

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        if self.writer is None or not {"losses", "metrics"} & set(self.collections):
            return
        epoch_index = state.epoch - 1
        self.writer.begin_step(state.global_step + epoch_index, "EVAL", epoch_index)
        if "losses" in self.collections:
            self._save("losses", "loss", torch.tensor(metrics["valid_loss"]))
        if "metrics" in self.collections:
            for name in ("valid_loss", "valid_accuracy"):
                self._save("metrics", name, torch.tensor(metrics[name]))
        self.writer.end_step()

    def on_train_end(self, state: TrainState) -> None:
        for handle in self._handles:
            handle.remove()
        if self.writer is not None:
            self.writer.close()

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
                self._relu_inputs[f"{name}_input_{calls}"] = inputs[0].detach()
        return keep_input

    def _save(self, collection: str, name: str, tensor: torch.Tensor) -> None:
        config = self.collections[collection]
        self.writer.add_to_collection(collection, name, config.reductions, config.save_raw,
                                      config.save_interval)
        values = _numpy(tensor)
        if config.save_raw:
            self.writer.write(name, values)
        for reduction in config.reductions:
            self.writer.write(reduction_name(name, reduction),
                              reduce(values.astype(np.float32, copy=False), reduction))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    array = tensor.detach().to("cpu")
    if array.dtype in (torch.bfloat16, torch.float16):
        array = array.float()
    return array.numpy()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel, so names match the artifact's."""
    return getattr(model, "module", model)
