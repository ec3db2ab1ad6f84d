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
heavier collections are opt-in. Rank 0 alone writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dogbreed.callbacks import Callback, StepResult, TrainState
from dogbreed.smdebug_trace import TraceWriter, reduce, reduction_name

DEFAULT_REDUCTIONS = ("l2", "mean", "std", "min", "max")
REDUCED = ("weights", "biases", "gradients", "relu_input")


class DebuggerHook(Callback):
    def __init__(self, out_dir: Path, collections: list[str], save_interval: int):
        self.out_dir = Path(out_dir)
        self.collections = list(collections)
        self.save_interval = save_interval
        self.writer: TraceWriter | None = None
        self._relu_inputs: dict[str, torch.Tensor] = {}  # one per call: a block reuses its ReLU
        self._handles: list = []
        self._capture = False

    # ---- the loop's events -------------------------------------------------------------

    def on_train_begin(self, state: TrainState) -> None:
        if not state.is_main:
            return
        self.writer = TraceWriter(self.out_dir)
        if "relu_input" in self.collections:
            for name, module in _unwrap(state.model).named_modules():
                if isinstance(module, torch.nn.ReLU):
                    self._handles.append(module.register_forward_pre_hook(
                        self._relu_pre_hook(name)))
        # The next TRAIN step decides whether relu inputs are kept (only on saved steps).
        self._capture = self._saves(state.global_step)

    def on_step_end(self, state: TrainState, step: StepResult) -> None:
        if self.writer is None:
            return
        mode_step = state.global_step - 1  # 0-based, as smdebug counts
        self._capture = self._saves(state.global_step)  # for the step that comes next
        if not self._saves(mode_step):
            self._relu_inputs.clear()
            return
        self.writer.begin_step(self._global(mode_step, state.epoch), "TRAIN", mode_step)
        named = dict(_unwrap(state.model).named_parameters())
        if "losses" in self.collections:
            self._value("losses", "loss", step.loss.float())
        if "metrics" in self.collections:
            accuracy = (step.outputs.argmax(dim=1) == step.labels).float().mean()
            self._value("metrics", "train_accuracy", accuracy)
        if "outputs" in self.collections:
            self._value("outputs", "predictions", step.outputs.argmax(dim=1))
        if "labels" in self.collections:
            self._value("labels", "labels", step.labels)
        for name, parameter in named.items():  # frozen ones too: their drift would be a bug
            kind = "biases" if name.endswith("bias") else "weights"
            if kind in self.collections:
                self._reduced(kind, name, parameter.detach())
            if "gradients" in self.collections and parameter.grad is not None:
                self._reduced("gradients", f"gradient/{name}", parameter.grad.detach())
        for name, tensor in self._relu_inputs.items():
            self._reduced("relu_input", name, tensor)
        self._relu_inputs.clear()
        self.writer.end_step()

    def on_epoch_end(self, state: TrainState, metrics: dict[str, float]) -> None:
        if self.writer is None or not {"losses", "metrics"} & set(self.collections):
            return
        epoch_index = state.epoch - 1
        self.writer.begin_step(state.global_step + epoch_index, "EVAL", epoch_index)
        if "losses" in self.collections:
            self._value("losses", "loss", torch.tensor(metrics["valid_loss"]))
        if "metrics" in self.collections:
            for name in ("valid_loss", "valid_accuracy"):
                self._value("metrics", name, torch.tensor(metrics[name]))
        self.writer.end_step()

    def on_train_end(self, state: TrainState) -> None:
        for handle in self._handles:
            handle.remove()
        if self.writer is not None:
            self.writer.close()

    # ---- helpers -----------------------------------------------------------------------

    def _saves(self, mode_step: int) -> bool:
        return mode_step % self.save_interval == 0

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

    def _value(self, collection: str, name: str, tensor: torch.Tensor) -> None:
        self.writer.add_to_collection(collection, name, save_interval=self.save_interval)
        self.writer.write(name, _numpy(tensor))

    def _reduced(self, collection: str, name: str, tensor: torch.Tensor) -> None:
        self.writer.add_to_collection(collection, name, DEFAULT_REDUCTIONS, save_raw=False,
                                      save_interval=self.save_interval)
        values = _numpy(tensor.float())
        for reduction in DEFAULT_REDUCTIONS:
            self.writer.write(reduction_name(name, reduction), reduce(values, reduction))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    array = tensor.detach().to("cpu")
    if array.dtype in (torch.bfloat16, torch.float16):
        array = array.float()
    return array.numpy()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DistributedDataParallel, so names match the artifact's."""
    return getattr(model, "module", model)
