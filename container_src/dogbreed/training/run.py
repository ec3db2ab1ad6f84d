"""The training program: `python -m dogbreed.train`, the training image's `train`.

Reads SageMaker's /opt/ml tree (or `SAGEMAKER_BASE_DIR`), fine-tunes ResNet50 on the
`train` channel, early-stops on `valid_loss`, tests the best epoch on `test`, writes the
artifact to model/, a checkpoint every epoch (and on SIGTERM) to checkpoints/, and
output/success or output/failure. Read top to bottom: one function per stage.
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from dogbreed import artifact, metrics
from dogbreed.debugging.config import DebuggerConfig, DebuggerConfigError, debugger_config
from dogbreed.debugging.hook import DebuggerHook
from dogbreed.gpu_check import GpuUnusable, require_usable_gpus
from dogbreed.hyperparameters import HyperparameterError, Hyperparameters, parse_hyperparameters
from dogbreed.job import (JobConfigError, JobEnvironment, JobPaths, job_paths, read_job_environment,
                          write_failure, write_success)
from dogbreed.model import ARCHITECTURE, PretrainedWeightsError, build_model, parameter_groups
from dogbreed.profiling.profiler import build_profiler
from dogbreed.reporting import report
from dogbreed.training import checkpoint
from dogbreed.training.callbacks import Callback, CallbackList, ProgressLogger, TrainState, describe
from dogbreed.training.compiling import CompileRefused, choose_compile, compiled
from dogbreed.training.data import (Channel, ChannelError, EpochSampler, ImageListDataset,
                                    scan_channel)
from dogbreed.training.device_batches import DeviceBatches
from dogbreed.training.distributed import (DistContext, StepVote, all_reduce_sum,
                                           broadcast_from_main, broadcast_state_from_main,
                                           gather_objects, init_worker, is_torchrun_worker,
                                           launch_plan, run_torchrun, shutdown, sync_buffers)
from dogbreed.training.feature_cache import (FeatureBatches, FeatureHead, compute_features,
                                             eval_view)
from dogbreed.training.image_store import StoreDoesNotFit, prepare_stores
from dogbreed.training.loop import (EpochSums, Precision, evaluate, reduce_epoch_sums,
                                    train_one_epoch)
from dogbreed.transforms import (eval_decode_size, eval_preprocessing, eval_transform,
                                 train_transform)

EXIT_FAILED = 1
# Debugger collections that read the backbone's layers (which the features pipeline runs
# once per job, not in every step).
BACKBONE_COLLECTIONS = ("relu_input", "weights", "biases")
RULES_FILE = "rules.json"  # the debugger rules' statuses, in output/data/
EXIT_INTERRUPTED = 128 + signal.SIGTERM
SKIPPED_PATHS_SHOWN = 3
# The user's mistakes: reported as one line, without a traceback.
USER_ERRORS = (HyperparameterError, ChannelError, JobConfigError, PretrainedWeightsError,
               checkpoint.ResumeError, DebuggerConfigError, GpuUnusable, StoreDoesNotFit,
               CompileRefused)


class TrainingInterrupted(Exception):
    """SIGTERM (spot reclaim, StopTrainingJob): the checkpoint is saved, the job ends."""


class TrainingDiverged(Exception):
    """No epoch produced a finite validation loss: there is no model worth saving."""


def job_debugger_config(hp: Hyperparameters, env: JobEnvironment) -> DebuggerConfig | None:
    """The debugger's collections and rules: from the hyperparameters and SageMaker's
    hook configuration file."""
    return debugger_config(hp, env.paths.base / "input" / "config",
                           env.paths.output_data / "debug")


def extra_callbacks(hp: Hyperparameters, env: JobEnvironment,
                    debugging: DebuggerConfig | None) -> list[Callback]:
    """Where the debugger and profiler plug into the loop."""
    callbacks: list[Callback] = []
    if debugging is not None:
        callbacks.append(DebuggerHook(debugging, env.paths.output_data / RULES_FILE,
                                      env.paths.output / _failure_name()))
    profiling = build_profiler(hp, env.paths.output_data / "profiler")
    if profiling is not None:
        callbacks.append(profiling)
    return callbacks


def main() -> int:
    """Runs the job, then (in the top process, after the outcome is written) its report."""
    code = _train()
    if not is_torchrun_worker():
        write_report(job_paths())
    return code


def write_report(paths: JobPaths) -> None:
    """output/data/report.html; a report that cannot be built must not fail the job."""
    try:
        written = report.write_job_report(paths.base)
        if written is not None:
            print(f"report written to {written}", flush=True)
    except Exception as error:  # noqa: BLE001 - the job's outcome is already decided
        print(f"WARNING no report: {type(error).__name__}: {error}", file=sys.stderr,
              flush=True)


def _train() -> int:
    paths = job_paths()
    context: DistContext | None = None
    try:
        env = read_job_environment()
        hp = parse_hyperparameters(env.hyperparameters)
        if not is_torchrun_worker():
            # A GPU host whose driver this CUDA cannot use must not train on its CPU.
            require_usable_gpus(env.num_gpus)
            plan = launch_plan(env.hosts, env.current_host, env.num_gpus, env.num_cpus,
                               env.network_interface)
            if plan.world_size > 1:
                return _run_distributed(plan, paths)
        context = init_worker()
        return run_job(env, hp, context)
    except TrainingInterrupted as stop:
        _log(f"stopped: {stop}", context)
        _write_failure(paths, f"interrupted: {stop}")
        return EXIT_INTERRUPTED
    except (*USER_ERRORS, TrainingDiverged) as error:
        return _fail(paths, str(error), context)
    except Exception as error:  # a bug or an environment problem: keep the traceback
        traceback.print_exc()
        return _fail(paths, f"{type(error).__name__}: {error}", context)
    finally:
        if context is not None:
            shutdown(context)


def run_job(env: JobEnvironment, hp: Hyperparameters, context: DistContext) -> int:
    """The recipe: set up, resume, train epoch by epoch, finish."""
    stop_signal = _catch_sigterm()
    use_deterministic_algorithms(hp)
    _seed_everything(hp.seed + context.rank)
    _log(f"dogbreed training: {hp.as_dict()}", context)
    debugging = job_debugger_config(hp, env)
    job = set_up(env, hp, context, debugging)
    progress = resume(env.paths, hp, job.channels["train"].class_folders, job.training,
                      context)
    network = wrap_for_ddp(job.stepped, hp, context)
    state = TrainState(model=compiled(network) if job.compiled else network,
                       optimizer=job.training.optimizer, epochs=hp.epochs,
                       rank=context.rank, world_size=context.world_size,
                       epoch=progress.epoch, global_step=progress.global_step,
                       history=progress.history)
    callbacks = CallbackList([ProgressLogger()] + extra_callbacks(hp, env, debugging))
    _log(f"callbacks: {describe(callbacks.callbacks)}", context)
    callbacks.on_train_begin(state)
    try:  # the hooks close their files also when training fails or is interrupted
        train_epochs(env, hp, context, job, progress, state, callbacks, stop_signal)
    finally:
        callbacks.on_train_end(state)
    if context.is_main:
        finish(env, hp, context, job, state, progress)
    return EXIT_FAILED if progress.early_stop.stopped_by_callback else 0


@dataclass
class TrainingObjects:
    """What a checkpoint saves and restores, besides the loop's own state."""
    model: torch.nn.Module  # unwrapped (not the DDP wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision  # the loop's (no channels_last for the head on features)


Loader = DataLoader | DeviceBatches | FeatureBatches


@dataclass
class Job:
    """Everything set up before the first step: the data, its loaders and the model."""
    channels: dict[str, Channel]
    preprocessing: dict
    # features (the head on backbone features computed once), cached (the uint8 store,
    # augmented on the device) or pil
    pipeline: str
    train_loader: Loader
    valid_loader: Loader
    test_loader: Loader | None  # rank 0 alone evaluates the test set
    num_workers: int
    criterion: torch.nn.Module
    training: TrainingObjects
    # What the loop trains and evaluates: the model, or its head alone (features).
    stepped: torch.nn.Module
    compiled: bool = False  # the training step through torch.compile (evaluation stays eager)


def set_up(env: JobEnvironment, hp: Hyperparameters, context: DistContext,
           debugging: DebuggerConfig | None = None) -> Job:
    channels = shared_channels(env.channels, context)
    preprocessing = eval_preprocessing(hp.image_size)
    precision = choose_precision(hp, context)
    wanted = choose_pipeline(hp, debugging)
    images_per_worker = hp.epochs * math.ceil(len(channels["train"].samples)
                                              / context.world_size)
    compile_step, compile_reason = choose_compile(
        hp.compile, context.device, images_per_worker,
        debugging.collections if debugging is not None else ())
    if hp.pretrained == "none" and hp.trainable != "all":
        _log(f"WARNING pretrained=none with trainable={hp.trainable}: the frozen layers keep "
             "their random weights; use trainable=all to train from scratch", context)
    model = build_model(len(channels["train"].class_folders), hp.pretrained, hp.trainable)
    model = model.to(context.device, memory_format=_memory_format(precision))
    pipeline, num_workers, loaders = data_loaders(hp, wanted, channels, preprocessing,
                                                  precision, context, env.num_cpus, model)
    stepped: torch.nn.Module = model
    if pipeline == "features":
        stepped, precision = FeatureHead(model), replace(precision, channels_last=False)
    optimizer = make_optimizer(model, hp)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=hp.epochs,
                                                           eta_min=hp.lr * 0.01)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=hp.label_smoothing)
    _log(f"device {context.device}, {context.world_size} worker(s), precision "
         f"{precision.dtype or 'fp32'}, channels_last {precision.channels_last}, "
         f"data pipeline {pipeline}"
         f"{f' ({num_workers} loader workers)' if pipeline == 'pil' else ''}, "
         f"{compile_reason}, "
         f"batch size {hp.batch_size} per worker, "
         f"{len(channels['train'].samples)} train / {len(channels['valid'].samples)} valid "
         f"images, {len(channels['train'].class_folders)} classes", context)
    return Job(channels, preprocessing, pipeline, loaders["train"], loaders["valid"],
               loaders.get("test"), num_workers, criterion,
               TrainingObjects(model, optimizer, scheduler, precision), stepped, compile_step)


def choose_pipeline(hp: Hyperparameters, debugging: DebuggerConfig | None) -> str:
    """The pipeline the job asks for (the store may still not fit: `data_loaders`).
    auto = features where that is the same training (a frozen backbone, and no debugger
    collection that reads its layers in every step), else cached."""
    reads_backbone = sorted(set(BACKBONE_COLLECTIONS) & set(debugging.collections)) \
        if debugging is not None else []
    if hp.data_pipeline == "features":
        if hp.trainable != "fc":
            raise HyperparameterError(
                f"data-pipeline=features needs trainable=fc: with trainable={hp.trainable} "
                "the backbone changes every step and its features cannot be computed once; "
                "use data-pipeline=auto or cached")
        if reads_backbone:
            raise HyperparameterError(
                f"data-pipeline=features runs the backbone once per job, not in every step, "
                f"so the debugger collection(s) {', '.join(reads_backbone)} would record "
                "nothing of it; use data-pipeline=cached, or leave those collections (and "
                "the rules that read them) out")
        return "features"
    if hp.data_pipeline == "auto":
        return "features" if hp.trainable == "fc" and not reads_backbone else "cached"
    return hp.data_pipeline


def wrap_for_ddp(model: torch.nn.Module, hp: Hyperparameters,
                 context: DistContext) -> torch.nn.Module:
    """The model the loop steps: DDP's wrapper when there are several workers."""
    if not context.enabled:
        return model
    # Gradients as views into DDP's buckets (no copy, less memory); no buffer broadcast
    # before every forward pass: BatchNorm statistics are synced before evaluation.
    network = DistributedDataParallel(model, device_ids=[context.device.index]
                                      if context.device.type == "cuda" else None,
                                      gradient_as_bucket_view=True, broadcast_buffers=False)
    if hp.gradient_compression == "bf16":
        # Half the bytes on the wire between hosts, gradients rounded to bf16 for the sum.
        network.register_comm_hook(None, default_hooks.bf16_compress_hook)
    return network


def train_epochs(env: JobEnvironment, hp: Hyperparameters, context: DistContext, job: Job,
                 progress: "Progress", state: TrainState, callbacks: CallbackList,
                 stop_signal: "_StopSignal") -> None:
    """Epochs until the last one, early stopping, a rule's stop or SIGTERM (checkpoint
    saved, TrainingInterrupted raised). A checkpoint after every epoch."""
    early_stop = progress.early_stop
    model = job.training.model
    sampler: EpochSampler = job.train_loader.sampler
    vote = StepVote(context)

    def stop_now() -> bool:
        """Asked after every step; under DDP answered one step late, without a wait."""
        votes = vote([float(stop_signal.requested()), float(state.stop_reason is not None)])
        return votes is not None and any(value > 0 for value in votes)

    def save() -> None:
        save_progress(env.paths, hp, job.channels, job.training, state, progress.sums,
                      early_stop, context)

    while state.epoch <= hp.epochs and not early_stop.stopped_early:
        sampler.set_epoch(state.epoch, start=progress.sums.step * hp.batch_size)
        cut_short = train_one_epoch(state, job.train_loader, job.criterion,
                                    job.training.precision, context, callbacks,
                                    progress.sums, stop_now)
        vote.drain()
        sigterm, callback_stop = agreed_stop(stop_signal, state, context) if cut_short \
            else (False, False)
        if sigterm:
            progress.sums = reduce_epoch_sums(progress.sums, context)
            save()
            raise TrainingInterrupted(f"SIGTERM during epoch {state.epoch} after step "
                                      f"{progress.sums.step}; checkpoint saved, a restarted "
                                      "job resumes")
        if callback_stop:
            early_stop.stop(_stop_reason(state), by_callback=True)
            _log(f"stopping early during epoch {state.epoch}: {early_stop.stopped_early}",
                 context)
            return
        epoch_metrics = reduce_epoch_sums(progress.sums, context).metrics()
        sync_buffers(job.stepped, context)
        valid_loss, valid_accuracy, _ = evaluate(job.stepped, job.valid_loader,
                                                 job.training.precision, context,
                                                 distributed=True)
        epoch_metrics.update(valid_loss=valid_loss, valid_accuracy=valid_accuracy)
        _log(metrics.format_epoch_line(state.epoch, epoch_metrics), context)
        state.history.append({"epoch": state.epoch, **epoch_metrics})
        if early_stop.record(state.epoch, valid_loss) and context.is_main:
            # Written before the checkpoint that names it: a kill between the two never
            # pairs a checkpoint with another epoch's weights.
            artifact.save_weights(env.paths.checkpoints / early_stop.best_file,
                                    model.state_dict())
        callbacks.on_epoch_end(state, epoch_metrics)
        job.training.scheduler.step()
        state.epoch += 1
        progress.sums = EpochSums()
        sigterm, callback_stop = agreed_stop(stop_signal, state, context)
        if callback_stop:
            early_stop.stop(_stop_reason(state), by_callback=True)
        elif hp.patience and early_stop.bad_epochs >= hp.patience:
            early_stop.stop(f"valid_loss did not improve for {hp.patience} epoch(s) "
                            f"(best {early_stop.best_valid_loss:.4f} at epoch "
                            f"{early_stop.best_epoch})")
        save()  # with the stop decision: a resumed job must not train on
        if early_stop.stopped_early:
            _log(f"stopping early: {early_stop.stopped_early}", context)
        elif sigterm and state.epoch <= hp.epochs:
            raise TrainingInterrupted(f"SIGTERM after epoch {state.epoch - 1}; checkpoint "
                                      "saved, a restarted job resumes")


def agreed_stop(stop_signal: "_StopSignal", state: TrainState,
                context: DistContext) -> tuple[bool, bool]:
    """(SIGTERM seen, a callback asked to stop) on any rank: every rank must take the same
    branch, or the next collective operation hangs."""
    sigterm, callback = all_reduce_sum(
        [float(stop_signal.requested()), float(state.stop_reason is not None)], context)
    return sigterm > 0, callback > 0


def _stop_reason(state: TrainState) -> str:
    return state.stop_reason or "a callback on another rank asked to stop"


def shared_channels(channel_dirs: dict[str, Path], context: DistContext) -> dict[str, Channel]:
    """Rank 0 lists and checks the images once and every rank gets its list: all ranks
    opening every image up front costs world_size times the I/O, and ranks must agree
    on the list anyway (a file that becomes readable in between would split them)."""
    found, error = None, None
    if context.is_main:
        try:
            found = load_channels(channel_dirs, context)
        except ChannelError as refused:
            error = str(refused)
    found, error = broadcast_from_main((found, error), context)
    if error:
        raise ChannelError(error)
    return found


def load_channels(channel_dirs: dict[str, Path], context: DistContext) -> dict[str, Channel]:
    """train and valid are required, test is optional; all share train's class order."""
    missing = [name for name in ("train", "valid") if name not in channel_dirs]
    if missing:
        raise ChannelError(f"missing channel(s) {', '.join(missing)}: the job needs 'train' "
                           f"and 'valid' (and optionally 'test'); got "
                           f"{', '.join(sorted(channel_dirs)) or 'none'}")
    channels = {"train": scan_channel("train", channel_dirs["train"])}
    for name in ("valid", "test"):
        if name in channel_dirs:
            channels[name] = scan_channel(name, channel_dirs[name],
                                          channels["train"].class_folders)
    for channel in channels.values():
        if channel.skipped:
            shown = ", ".join(channel.skipped[:SKIPPED_PATHS_SHOWN])
            more = len(channel.skipped) - SKIPPED_PATHS_SHOWN
            _log(f"WARNING skipped {len(channel.skipped)} unreadable or non-image file(s) in "
                 f"channel {channel.name}: {shown}{f' (+{more} more)' if more > 0 else ''}",
                 context)
    return channels


def choose_precision(hp: Hyperparameters, context: DistContext) -> Precision:
    """amp=auto: bf16 on GPUs that have it, else fp16 on GPU; never on CPU (slow there)."""
    on_gpu = context.device.type == "cuda"
    dtype = None
    if on_gpu and hp.amp != "off":
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        if hp.amp == "bf16" or (hp.amp == "auto" and native_bf16):
            dtype = torch.bfloat16
        else:
            dtype = torch.float16
    elif hp.amp in ("bf16", "fp16"):
        _log(f"amp={hp.amp} ignored: no GPU, training in fp32", context)
    scaler = torch.amp.GradScaler(context.device.type, enabled=dtype == torch.float16)
    return Precision(dtype=dtype, scaler=scaler, channels_last=on_gpu)


def choose_num_workers(hp: Hyperparameters, context: DistContext, num_cpus: int) -> int:
    """auto: on GPU, up to 8 decoding processes per GPU, leaving a core for the trainer;
    on CPU, one: decoding is cheap beside a CPU forward pass, and more workers would
    only take cores from it."""
    if hp.num_workers != "auto":
        return int(hp.num_workers)
    cpus_per_worker = max(1, num_cpus // max(1, torch.cuda.device_count()
                                              if context.device.type == "cuda" else 1))
    if context.device.type == "cuda":
        return max(1, min(8, cpus_per_worker - 1))
    return 1


def make_loader(channel: Channel, transform, hp: Hyperparameters, context: DistContext,
                num_workers: int, shuffle: bool,
                decode_size: tuple[int, int] | None = None) -> DataLoader:
    sampler = EpochSampler(len(channel.samples), shuffle=shuffle, seed=hp.seed,
                           rank=context.rank, world_size=context.world_size, seeded=shuffle)
    drop_last = drops_lone_last_batch(sampler, hp.batch_size, shuffle)
    return DataLoader(ImageListDataset(channel.samples, transform, decode_size),
                      batch_size=hp.batch_size,
                      sampler=sampler, num_workers=num_workers, worker_init_fn=_ignore_sigterm,
                      pin_memory=context.device.type == "cuda",
                      persistent_workers=num_workers > 0, drop_last=drop_last)


def drops_lone_last_batch(sampler: EpochSampler, batch_size: int, train: bool) -> bool:
    """A last training batch of one sample breaks BatchNorm: dropped in that case only."""
    return train and len(sampler) % batch_size == 1


def data_loaders(hp: Hyperparameters, wanted: str, channels: dict[str, Channel],
                 preprocessing: dict, precision: Precision, context: DistContext, num_cpus: int,
                 model: torch.nn.Module) -> tuple[str, int, dict[str, Loader]]:
    """(pipeline, PIL loader workers, a loader per channel): train and valid sharded over
    the ranks, test whole (rank 0 alone evaluates it). `wanted`: `choose_pipeline`'s."""
    stores = image_stores(hp, channels, preprocessing, context, num_cpus) \
        if wanted != "pil" else None
    contexts = {"train": context, "valid": context,
                "test": DistContext(0, 0, 1, context.device)}
    if stores is not None and wanted == "features":
        return "features", 0, feature_loaders(stores, channels, preprocessing, hp, precision,
                                              contexts, model)
    if stores is not None:
        return "cached", 0, {name: make_store_loader(
            stores[name], channel, preprocessing, hp, contexts[name], precision,
            train=name == "train") for name, channel in channels.items()}
    workers = choose_num_workers(hp, context, num_cpus)
    return "pil", workers, {name: make_loader(
        channel, (train_transform if name == "train" else eval_transform)(preprocessing), hp,
        contexts[name], workers, shuffle=name == "train",
        decode_size=None if name == "train" else eval_decode_size(preprocessing))
        for name, channel in channels.items()}


def image_stores(hp: Hyperparameters, channels: dict[str, Channel], preprocessing: dict,
                 context: DistContext, num_cpus: int) -> dict[str, torch.Tensor] | None:
    """Each channel decoded once (data-pipeline features, cached, or auto); None: the PIL
    loader."""
    if hp.data_pipeline == "pil":
        return None
    try:
        return prepare_stores(channels, preprocessing, context, num_cpus,
                              log=lambda message: _log(message, context))
    except StoreDoesNotFit as error:
        if hp.data_pipeline != "auto":
            raise StoreDoesNotFit(f"data-pipeline={hp.data_pipeline}: {error}") from None
        _log(f"WARNING data-pipeline=auto falls back to the PIL loader: {error}", context)
        return None


def make_store_loader(records: torch.Tensor, channel: Channel, preprocessing: dict,
                      hp: Hyperparameters, context: DistContext, precision: Precision,
                      train: bool) -> DeviceBatches:
    sampler = EpochSampler(len(channel.samples), shuffle=train, seed=hp.seed,
                           rank=context.rank, world_size=context.world_size)
    return DeviceBatches(records, [label for _, label in channel.samples], sampler,
                         hp.batch_size, preprocessing, context.device, train=train,
                         channels_last=precision.channels_last,
                         drop_last=drops_lone_last_batch(sampler, hp.batch_size, train))


def feature_loaders(stores: dict[str, torch.Tensor], channels: dict[str, Channel],
                    preprocessing: dict, hp: Hyperparameters, precision: Precision,
                    contexts: dict[str, DistContext], model: torch.nn.Module
                    ) -> dict[str, FeatureBatches]:
    """The frozen backbone run once over each channel's eval view (`feature_cache`); the
    test set by rank 0 alone. Every rank computes with rank 0's backbone (with
    pretrained=none each rank drew its own)."""
    broadcast_state_from_main(model, contexts["train"])
    # The pass runs channels_last on the CPU too: 1.19-1.27x the images/s of the default
    # layout there for inference (benchmarks/channels_last_cpu.py).
    model.to(memory_format=torch.channels_last)
    precision = replace(precision, channels_last=True)
    loaders = {}
    for name, channel in channels.items():
        context = contexts[name]
        if name == "test" and not contexts["train"].is_main:
            continue
        records = stores[name]
        if name == "train":
            records = eval_view(records, preprocessing["center_crop"])
        features = compute_features(model, records, preprocessing, hp.batch_size, precision,
                                    context, log=lambda message: _log(
                                        f"channel {name}: {message}", context))
        train = name == "train"
        sampler = EpochSampler(len(channel.samples), shuffle=train, seed=hp.seed,
                               rank=context.rank, world_size=context.world_size)
        loaders[name] = FeatureBatches(
            features, [label for _, label in channel.samples], sampler, hp.batch_size,
            drop_last=drops_lone_last_batch(sampler, hp.batch_size, train))
    return loaders


def make_optimizer(model: torch.nn.Module, hp: Hyperparameters) -> torch.optim.Optimizer:
    """On GPUs the fused kernels (one launch for all parameters instead of several per
    tensor); elsewhere torch's default (foreach where it applies)."""
    groups = parameter_groups(model, hp.lr, hp.weight_decay, hp.pretrained)
    fused = {"fused": True} if next(model.parameters()).is_cuda else {}
    if hp.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=hp.lr, momentum=0.9, nesterov=True, **fused)
    if hp.optimizer == "adam":
        return torch.optim.Adam(groups, lr=hp.lr, **fused)
    return torch.optim.AdamW(groups, lr=hp.lr, **fused)


@dataclass
class EarlyStopping:
    """The best epoch so far and whether (and why) training stopped before its last
    epoch; saved in every checkpoint (`state_dict`), so a resumed job neither forgets its
    best epoch nor trains on after a stop."""
    best_valid_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    best_file: str | None = None  # the best epoch's weights, in checkpoints/
    stopped_early: str | None = None  # why training stopped early
    stopped_by_callback: bool = False  # a debugger rule's stop: the job ends as failed

    def record(self, epoch: int, valid_loss: float) -> bool:
        """Count an epoch; True when it is the new best (its weights must be saved)."""
        if math.isfinite(valid_loss) and valid_loss < self.best_valid_loss:
            self.best_valid_loss, self.best_epoch, self.bad_epochs = valid_loss, epoch, 0
            self.best_file = checkpoint.best_weights_name(epoch)
            return True
        self.bad_epochs += 1
        return False

    def stop(self, reason: str, by_callback: bool = False) -> None:
        self.stopped_early, self.stopped_by_callback = reason, by_callback

    def state_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_state_dict(cls, saved: dict[str, Any]) -> "EarlyStopping":
        return cls(**{name: saved[name] for name in cls.__dataclass_fields__ if name in saved})


@dataclass
class Progress:
    """Where training stands: fresh, or restored from a checkpoint."""
    epoch: int = 1
    global_step: int = 0
    history: list[dict] = field(default_factory=list)
    sums: EpochSums = field(default_factory=EpochSums)  # of the epoch under way
    early_stop: EarlyStopping = field(default_factory=EarlyStopping)
    resumed_from: dict | None = None  # {"epoch", "step"} of the checkpoint


def resume(paths: JobPaths, hp: Hyperparameters, class_folders: list[str],
           training: TrainingObjects, context: DistContext) -> Progress:
    """Start from checkpoints/ when a checkpoint is there (rank 0 reads, all ranks load;
    a refused checkpoint fails every rank, not only the one that read it)."""
    saved, error = None, None
    if context.is_main:
        try:
            saved = checkpoint.load_checkpoint(paths.checkpoints)
            if saved is not None:
                checkpoint.check_compatible(saved, hp.as_dict(), class_folders)
        except checkpoint.ResumeError as refused:
            saved, error = None, str(refused)
    saved, error = broadcast_from_main((saved, error), context)
    if error:
        raise checkpoint.ResumeError(error)
    if saved is None:
        return Progress()
    training.model.load_state_dict(saved["model"])
    training.optimizer.load_state_dict(saved["optimizer"])
    training.scheduler.load_state_dict(saved["scheduler"])
    training.scheduler.T_max = hp.epochs  # epochs may differ from the interrupted job's
    checkpoint.restore_scaler(training.precision.scaler, saved["scaler"])
    checkpoint.set_rng_state(saved["rng"][min(context.rank, len(saved["rng"]) - 1)])
    # The saved sums are already totals over all ranks: rank 0 carries them on.
    sums = EpochSums(**saved["sums"]) if context.is_main else EpochSums(step=saved["sums"]["step"])
    _log(f"resuming from checkpoint: epoch {saved['epoch']}, {sums.step} step(s) into it, "
         f"global step {saved['global_step']}", context)
    return Progress(epoch=saved["epoch"], global_step=saved["global_step"],
                    history=list(saved["history"]), sums=sums,
                    early_stop=EarlyStopping.from_state_dict(saved["early_stop"]),
                    resumed_from={"epoch": saved["epoch"], "step": sums.step})


def save_progress(paths: JobPaths, hp: Hyperparameters, channels: dict[str, Channel],
                  training: TrainingObjects, state: TrainState, sums: EpochSums,
                  early_stop: EarlyStopping, context: DistContext) -> None:
    """Checkpoint (rank 0 writes; RNG states of all ranks are gathered first). `sums` must
    be totals over all ranks. Best-weight files the checkpoint no longer names go after."""
    rng = gather_objects(checkpoint.rng_state(), context)
    if not context.is_main:
        return
    checkpoint.save_checkpoint(paths.checkpoints, {
        "epoch": state.epoch, "global_step": state.global_step, "sums": vars(sums),
        "model": training.model.state_dict(), "optimizer": training.optimizer.state_dict(),
        "scheduler": training.scheduler.state_dict(),
        "scaler": training.precision.scaler.state_dict(),
        "rng": rng, "history": state.history, "early_stop": early_stop.state_dict(),
        "hyperparameters": hp.as_dict(), "class_folders": channels["train"].class_folders,
    })
    checkpoint.remove_best_weights(paths.checkpoints, keep=early_stop.best_file)


def finish(env: JobEnvironment, hp: Hyperparameters, context: DistContext, job: Job,
           state: TrainState, progress: Progress) -> None:
    """Best epoch's weights -> test metrics -> model/ artifact -> output/success (or
    output/failure when a rule stopped the job: the model of the best epoch so far is
    still written)."""
    early_stop = progress.early_stop
    model, precision = job.training.model, job.training.precision
    if early_stop.best_epoch == 0:
        if early_stop.stopped_early:
            raise TrainingDiverged(f"stopped before any epoch gave a finite valid_loss: "
                                   f"{early_stop.stopped_early}")
        raise TrainingDiverged("valid_loss was not finite in any epoch: training diverged; "
                               "lower lr (or use amp=off)")
    model.load_state_dict(artifact.load_weights(env.paths.checkpoints /
                                                  early_stop.best_file))
    best_metrics = next(row for row in state.history if row["epoch"] == early_stop.best_epoch)
    final = dict(best_metrics)
    channels = job.channels
    if job.test_loader is not None:
        test_loss, test_accuracy, _ = evaluate(job.stepped, job.test_loader, precision, context,
                                               distributed=False)
        final.update(test_loss=test_loss, test_accuracy=test_accuracy)
        _log(metrics.format_test_line(final), context)
    else:
        _log("no 'test' channel: skipping the test evaluation", context)
    train = channels["train"]
    artifact.write_artifact(
        env.paths.model, state_dict=model.state_dict(), architecture=ARCHITECTURE,
        class_folders=train.class_folders, class_names=train.class_names,
        preprocessing=job.preprocessing, hyperparameters=hp.as_dict(), metrics=final,
        history=state.history,
        training={"best_epoch": early_stop.best_epoch, "epochs_run": len(state.history),
                  "stopped_early": early_stop.stopped_early,
                  "resumed_from": progress.resumed_from,
                  "world_size": context.world_size, "device": context.device.type,
                  "precision": str(precision.dtype or "fp32"),
                  "skipped_files": {name: len(channel.skipped)
                                    for name, channel in channels.items()},
                  "images": {name: len(channel.samples) for name, channel in channels.items()},
                  "data_pipeline": job.pipeline, "loader_workers": job.num_workers,
                  "compiled": job.compiled})
    if early_stop.stopped_by_callback:
        _write_failure(env.paths, f"stopped early: {early_stop.stopped_early}")
    else:
        write_success(env.paths, {"best_epoch": early_stop.best_epoch, "metrics": final})
    _log(f"model written to {env.paths.model} (best epoch {early_stop.best_epoch})", context)


class _StopSignal:
    def __init__(self):
        self._requested = False

    def request(self, signum, frame) -> None:
        self._requested = True

    def requested(self) -> bool:
        return self._requested


def _catch_sigterm() -> _StopSignal:
    stop = _StopSignal()
    signal.signal(signal.SIGTERM, stop.request)
    return stop


def _ignore_sigterm(worker_id: int) -> None:
    """Loader workers leave SIGTERM to the trainer: torchrun signals the whole process
    group, and a worker dying first would turn a checkpoint-and-exit into a crash."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def use_deterministic_algorithms(hp: Hyperparameters) -> None:
    """deterministic=on: the same weights from the same seed on a GPU too (cuDNN and
    cuBLAS pick deterministic kernels, often slower; ops without one fail the job). On
    the CPU, runs are deterministic without it."""
    if hp.deterministic != "on":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)


def _memory_format(precision: Precision) -> torch.memory_format:
    return torch.channels_last if precision.channels_last else torch.contiguous_format


def _run_distributed(plan, paths: JobPaths) -> int:
    """This process only launches. Workers that fail write output/failure.rank<N>; the
    first one written is the cause (the others are ranks torchrun stopped because of it),
    and it becomes this host's output/failure."""
    code, interrupted = run_torchrun(plan, "dogbreed.train")
    rank_failures = sorted(paths.output.glob("failure.rank*"), key=lambda p: p.stat().st_mtime)
    if code != 0:
        if rank_failures:
            first = rank_failures[0]
            reason = f"{first.name.removeprefix('failure.')}: {first.read_text().strip()}"
        else:
            reason = (f"distributed training failed (torchrun exit code {code}); see the "
                      "job log for the failing rank")
        write_failure(paths, reason)
    for path in rank_failures:
        path.unlink()
    if code == 0:
        return 0
    return EXIT_INTERRUPTED if interrupted else EXIT_FAILED


def _fail(paths: JobPaths, reason: str, context: DistContext | None) -> int:
    print(f"ERROR {reason}", file=sys.stderr, flush=True)
    _write_failure(paths, reason)
    return EXIT_FAILED


def _failure_name() -> str:
    """This process's failure file: failure.rank<N> under torchrun (the launcher picks)."""
    return f"failure.rank{os.environ['RANK']}" if is_torchrun_worker() else "failure"


def _write_failure(paths: JobPaths, reason: str) -> None:
    """output/failure, or failure.rank<N> under torchrun (the launcher picks the cause)."""
    write_failure(paths, reason, name=_failure_name())


def _log(message: str, context: DistContext | None) -> None:
    if context is None or context.is_main:
        print(message, flush=True)
