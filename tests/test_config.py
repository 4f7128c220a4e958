"""Every dataset x algorithm x backbone that makes sense composes and builds; the rest is
refused with a clear error before any data is loaded."""

from pathlib import Path

import pytest

from conftest import compose_train
from metalab.config import CONF_DIR, check_config
from metalab.errors import ConfigError
from metalab.run import build_model


def options(group):
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


DATASETS, ALGORITHMS, BACKBONES = options("dataset"), options("algorithm"), options("backbone")


TEXT_BACKBONES = {"text_cnn", "text_transformer", "text_pretrained"}


def refusal(dataset_cfg, algorithm, backbone):
    """Why a combination cannot work, or None."""
    if dataset_cfg.task == "regression" and algorithm == "protonet":
        return "classification tasks only"
    if dataset_cfg.task == "regression" and backbone != "mlp":
        return "needs (image|text) inputs, and dataset=sinusoid is a regression dataset"
    text = dataset_cfg.get("inputs") == "text"
    if text and backbone not in TEXT_BACKBONES:
        return "has text inputs"
    if not text and backbone in TEXT_BACKBONES:
        return "needs text inputs"
    if backbone == "text_pretrained":  # no model folder given
        return "backbone.path=None"
    return None


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_combination_builds_or_is_refused(dataset, algorithm, backbone, tmp_path):
    cfg = compose_train([f"dataset={dataset}", f"algorithm={algorithm}",
                         f"backbone={backbone}"], output_dir=tmp_path)
    reason = refusal(cfg.dataset, algorithm, backbone)
    if reason:
        with pytest.raises(ConfigError, match=reason):
            check_config(cfg)
        return
    check_config(cfg)
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_groups_hold_the_documented_options():
    assert {"glyphs", "omniglot", "sinusoid"} <= set(DATASETS)
    assert {"protonet"} <= set(ALGORITHMS)
    assert {"conv4", "resnet12", "mlp"} <= set(BACKBONES)
    assert {"cpu", "gpu", "ddp_cpu"} <= set(options("hardware"))
    assert {"wandb", "csv", "tensorboard", "none"} <= set(options("logger"))


def test_episode_shape_is_set_separately_for_training():
    cfg = compose_train(["dataset.ways=20", "dataset.train_ways=60", "dataset.train_queries=5"])
    d = cfg.dataset
    assert (d.ways, d.train_ways, d.shots, d.train_shots, d.train_queries) == (20, 60, 1, 1, 5)
