"""The features pipeline in process: the head trained on features computed once equals the
head the normal loop trains on the same (un-augmented) inputs, evaluation on features
equals the full model's, and the pipeline is chosen, or refused, as the README says."""

from __future__ import annotations

import copy

import pytest
import torch

from dogbreed.debugging.config import debugger_config
from dogbreed.hyperparameters import HyperparameterError, parse_hyperparameters
from dogbreed.model import build_model
from dogbreed.training.callbacks import CallbackList, TrainState
from dogbreed.training.data import EpochSampler
from dogbreed.training.device_batches import DeviceBatches
from dogbreed.training.distributed import DistContext
from dogbreed.training.feature_cache import (FeatureBatches, FeatureHead, compute_features,
                                             eval_view)
from dogbreed.training.loop import EpochSums, Precision, evaluate, train_one_epoch
from dogbreed.training.run import choose_pipeline, make_optimizer
from dogbreed.transforms import eval_preprocessing

CPU = DistContext(0, 0, 1, torch.device("cpu"))
FP32 = Precision(dtype=None, scaler=torch.amp.GradScaler("cpu", enabled=False),
                 channels_last=False)
CLASSES, IMAGES, BATCH = 3, 10, 4
PREPROCESSING = eval_preprocessing(32)  # train records 37 px, the eval crop 32 px


@pytest.fixture
def train_records() -> torch.Tensor:
    """Train-store records (side `resize`) with labels that depend on their colour."""
    generator = torch.Generator().manual_seed(0)
    side = PREPROCESSING["resize"]
    return torch.randint(0, 256, (IMAGES, side, side, 3), dtype=torch.uint8,
                         generator=generator)


LABELS = [index % CLASSES for index in range(IMAGES)]


def train_epochs(model: torch.nn.Module, stepped: torch.nn.Module, loader, epochs: int
                 ) -> list[float]:
    """The job's own epoch function, `epochs` times; the epochs' loss sums."""
    hp = parse_hyperparameters({"trainable": "fc", "pretrained": "none", "lr": 0.01})
    state = TrainState(model=stepped, optimizer=make_optimizer(model, hp), epochs=epochs,
                       rank=0, world_size=1)
    losses = []
    for epoch in range(1, epochs + 1):
        loader.sampler.set_epoch(epoch)
        sums = EpochSums()
        train_one_epoch(state, loader, torch.nn.CrossEntropyLoss(), FP32, CPU,
                        CallbackList([]), sums, lambda: False)
        losses.append(sums.loss_sum)
    return losses


def shuffled_sampler() -> EpochSampler:
    return EpochSampler(IMAGES, shuffle=True, seed=7)


def test_the_head_on_cached_features_trains_as_the_normal_loop_without_augmentation(
        train_records):
    torch.manual_seed(0)
    normal = build_model(CLASSES, "none", "fc")
    cached = copy.deepcopy(normal)
    view = eval_view(train_records, PREPROCESSING["center_crop"])
    images = DeviceBatches(view, LABELS, shuffled_sampler(), BATCH, PREPROCESSING, CPU.device,
                           train=False)
    normal_losses = train_epochs(normal, normal, images, epochs=3)

    features = compute_features(cached, view, PREPROCESSING, BATCH, FP32, CPU,
                                log=lambda message: None)
    assert features.shape == (IMAGES, 2048)
    feature_batches = FeatureBatches(features, LABELS, shuffled_sampler(), BATCH)
    cached_losses = train_epochs(cached, FeatureHead(cached), feature_batches, epochs=3)

    assert cached_losses == pytest.approx(normal_losses, rel=1e-5)
    assert normal_losses[-1] < normal_losses[0]  # it did learn something
    for name, weight in normal.state_dict().items():
        torch.testing.assert_close(cached.state_dict()[name], weight, rtol=1e-5, atol=1e-6,
                                   msg=name)
    assert not torch.equal(normal.fc.weight, build_model(CLASSES, "none", "fc").fc.weight)


def test_evaluation_on_features_equals_the_full_models(train_records):
    torch.manual_seed(1)
    model = build_model(CLASSES, "none", "fc")
    view = eval_view(train_records, PREPROCESSING["center_crop"])
    ordered = EpochSampler(IMAGES, shuffle=False)
    on_images = evaluate(model, DeviceBatches(view, LABELS, ordered, BATCH, PREPROCESSING,
                                              CPU.device, train=False), FP32, CPU,
                         distributed=False)
    features = compute_features(model, view, PREPROCESSING, BATCH, FP32, CPU,
                                log=lambda message: None)
    on_features = evaluate(FeatureHead(model), FeatureBatches(features, LABELS, ordered, BATCH),
                           FP32, CPU, distributed=False)
    assert on_features[2] == on_images[2] == IMAGES
    assert on_features[:2] == pytest.approx(on_images[:2], rel=1e-5)


def test_the_eval_view_is_the_central_crop_as_torchvision_rounds_it(train_records):
    view = eval_view(train_records, 32)  # 37 px records: offset round(2.5) = 2
    assert view.shape == (IMAGES, 32, 32, 3)
    assert torch.equal(view, train_records[:, 2:34, 2:34, :])


def pipeline_for(tmp_path, **raw) -> str:
    hp = parse_hyperparameters(raw)
    return choose_pipeline(hp, debugger_config(hp, tmp_path / "no-config", tmp_path / "debug"))


def test_auto_picks_features_only_where_training_is_the_same(tmp_path):
    assert pipeline_for(tmp_path, trainable="fc") == "features"
    assert pipeline_for(tmp_path, trainable="layer4") == "cached"
    assert pipeline_for(tmp_path, trainable="all") == "cached"
    # Collections that read the backbone's layers in every step keep it running.
    for collections in ("relu_input", "losses,weights", "biases"):
        assert pipeline_for(tmp_path, trainable="fc",
                            **{"debugger-collections": collections}) == "cached"
    # A rule that reads relu_input turns it on, and so keeps the backbone running too.
    assert pipeline_for(tmp_path, trainable="fc", rules="PoorWeightInitialization") == "cached"
    assert pipeline_for(tmp_path, trainable="fc", **{"data-pipeline": "pil"}) == "pil"


def test_features_asked_where_they_cannot_be_computed_once_is_a_clear_error(tmp_path):
    with pytest.raises(HyperparameterError, match="data-pipeline=features needs trainable=fc: "
                       "with trainable=layer4 the backbone changes every step"):
        pipeline_for(tmp_path, trainable="layer4", **{"data-pipeline": "features"})
    with pytest.raises(HyperparameterError, match=r"debugger collection\(s\) relu_input would "
                       "record nothing"):
        pipeline_for(tmp_path, trainable="fc", **{"data-pipeline": "features",
                                                   "debugger-collections": "relu_input"})
    assert pipeline_for(tmp_path, trainable="fc", **{"data-pipeline": "features"}) == "features"
