"""Every dataset x algorithm x backbone that makes sense composes and builds; the rest is
refused with a clear error before any data is loaded."""

from pathlib import Path

import pytest

from helpers import compose
from metalab.errors import ConfigError
from metalab.run.config import CONF_DIR, check_config
from metalab.run.training import build_model


def options(group):
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


DATASETS, ALGORITHMS, BACKBONES = options("dataset"), options("algorithm"), options("backbone")


TEXT_BACKBONES = {"text_cnn", "text_transformer", "text_pretrained"}
RL_ALGORITHMS = ("maml_rl", "pretrained_rl", "random_rl", "reptile_rl")
PRETRAIN = ("baseline", "baseline_pp", "rfs")
CLASSIFIERS = ("protonet", "r2d2", "metaoptnet", "matching", "relation", "meta_baseline", *PRETRAIN)
#: the default suite builds every backbone on one dataset of each kind and the small backbones
#: on a dataset of each image size too; the whole grid is marked slow (make test-all)
KIND_EXAMPLES = {"glyphs", "sinusoid", "nav2d", "clinc150"}
SMALL_BACKBONES = {"conv4", "mlp", "policy", "text_cnn", "text_pretrained"}
SIZES = {"mini_imagenet", "text"}


def in_default_suite(dataset: str, backbone: str) -> bool:
    return dataset in KIND_EXAMPLES or (dataset in SIZES and backbone in SMALL_BACKBONES)


def refusal(dataset_cfg, algorithm, backbone):
    """Why a combination cannot work, or None."""
    if dataset_cfg.task == "regression" and algorithm in CLASSIFIERS:
        return "classification tasks only"
    if (dataset_cfg.task == "rl") != (algorithm in RL_ALGORITHMS):
        return "tasks only"
    text = dataset_cfg.get("inputs") == "text"
    if algorithm in PRETRAIN and text:
        return "pretrains on image datasets only"
    if algorithm == "meta_baseline":  # no init_from given
        return "trains from a pretrained backbone"
    if algorithm == "relation" and (
        backbone in ("mlp", "policy", "timm") or backbone in TEXT_BACKBONES
    ):
        return "need a convolutional backbone"
    if dataset_cfg.task in ("regression", "rl") and backbone not in ("mlp", "policy"):
        return (
            r"needs (image|text) inputs, and dataset=\w+ is a (regression|rl) dataset; "
            "use backbone=(mlp|policy)"
        )
    if text and backbone not in TEXT_BACKBONES:
        return "has text inputs"
    if not text and backbone in TEXT_BACKBONES:
        return "needs text inputs"
    if backbone == "text_pretrained":  # no model folder given
        return "backbone.path=None"
    return None


@pytest.mark.parametrize(
    ("dataset", "algorithm", "backbone"),
    [
        pytest.param(d, a, b, marks=() if in_default_suite(d, b) else pytest.mark.slow)
        for b in BACKBONES
        for a in ALGORITHMS
        for d in DATASETS
    ],
)
def test_combination_builds_or_is_refused(dataset, algorithm, backbone, tmp_path):
    cfg = compose(
        [f"dataset={dataset}", f"algorithm={algorithm}", f"backbone={backbone}"],
        output_dir=tmp_path,
    )
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
    cfg = compose(["dataset.ways=20", "dataset.train_ways=60", "dataset.train_queries=5"])
    d = cfg.dataset
    assert (d.ways, d.train_ways, d.shots, d.train_shots, d.train_queries) == (20, 60, 1, 1, 5)


@pytest.mark.parametrize(
    ("dataset", "direction"), [("sinusoid", "minimize"), ("glyphs", "maximize")]
)
def test_search_optimises_val_mse_downwards_for_regression(dataset, direction):
    """conf/search's objective direction, resolved against the run config: an Optuna search
    minimises val/mse on regression and maximises val/acc on classification (the objective
    itself, the best validation value of best.ckpt, is checked in test_resume)."""
    from omegaconf import OmegaConf

    import metalab.run.sweep  # noqa: F401  (registers the resolver conf/search uses)

    search = OmegaConf.load(Path(CONF_DIR) / "search" / "_optuna.yaml")
    cfg = OmegaConf.to_container(compose([f"dataset={dataset}", "backbone=mlp", "algorithm=maml"]))
    cfg["hydra"] = OmegaConf.to_container(search.hydra)  # unresolved: ${dataset.task} etc.
    assert OmegaConf.create(cfg).hydra.sweeper.direction == direction
    searches = [p for p in (Path(CONF_DIR) / "search").glob("*.yaml") if p.stem[0] != "_"]
    for path in searches:  # every search takes its direction from there
        spec = OmegaConf.load(path)
        assert "_optuna" in spec.defaults and "direction" not in spec.hydra.sweeper, path.stem
