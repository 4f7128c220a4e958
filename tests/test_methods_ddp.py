"""ANIL, R2-D2, MetaOptNet, Matching and Relation Networks: two CPU processes (DDP over gloo)
end a run with the same parameters and test metrics as one process (as tests/test_ddp.py does
for the other algorithms); each method builds and predicts on conv4 and resnet12 at every image
size of the datasets; bad combinations stop in check_config, before any data is loaded."""

from __future__ import annotations

import pytest
import torch

from helpers import compose, train_cli
from helpers.ddp import SGD, one_and_two_processes_agree
from metalab.data.episodes import Episodes
from metalab.errors import ConfigError
from metalab.run.config import check_config, input_shape
from metalab.run.training import build_model

METHODS = ("anil", "r2d2", "metaoptnet", "matching", "relation")
SMALL = {
    "anil": ["backbone.hidden=16", "algorithm.eval_inner_steps=1", *SGD],
    "r2d2": ["backbone.hidden=16", *SGD],
    # SGD 0.01, not 0.1: at 0.1 this run amplifies rounding step after step (DDP's all-reduce
    # sums the gradient in another order, ~1e-8 apart, and 4 steps later the weights are
    # 1.8e-4 apart); at 0.01 the same 4 steps end 3e-8 apart. The QP solver is smooth there
    # (a 1e-7 change of the features moves its solution by ~2e-8), so no DDP or solver error.
    "metaoptnet": ["backbone.hidden=16", *SGD, "algorithm.optimizer.lr=0.01"],
    "matching": ["backbone.hidden=16", "algorithm.fce=true", *SGD],
    "relation": ["backbone.hidden=16", *SGD],
}


@pytest.mark.slow  # four training processes per method: ~20 s each on a quiet 2-core machine
@pytest.mark.parametrize("algorithm", METHODS)
def test_two_processes_equal_one(tmp_path, algorithm):
    one_and_two_processes_agree(tmp_path, algorithm, SMALL[algorithm])


# conv4 and resnet12 (made narrow) at the smallest and the largest image size of the datasets:
# 28x28 (glyphs, omniglot) and 84x84 (mini_imagenet, tiered_imagenet, cub); the other
# backbones (small) at 28x28
SHAPES = {"glyphs": [], "mini_imagenet": ["dataset.root=/nonexistent"]}
BACKBONES = {
    "conv4": ["backbone.hidden=8"],
    "resnet12": ["backbone.channels=[8,8,8,8]"],
    "wrn": ["backbone.depth=10", "backbone.widen=1"],
    "resnet18": [],
    "timm": ["backbone.model=test_resnet"],
}
# (timm's pooled vectors are no feature maps for Relation Networks: a config error, below)
COMBINATIONS = [
    (a, b, d)
    for a in METHODS
    for b in BACKBONES
    for d in SHAPES
    if (b in ("conv4", "resnet12") or d == "glyphs") and (a, b) != ("relation", "timm")
]


@pytest.mark.parametrize("algorithm, backbone, dataset", COMBINATIONS)
def test_every_method_runs_on_every_backbone_and_image_size(
    algorithm, backbone, dataset, one_thread
):
    cfg = compose(
        [
            f"algorithm={algorithm}",
            f"backbone={backbone}",
            f"dataset={dataset}",
            *SHAPES[dataset],
            *BACKBONES[backbone],
            "dataset.ways=3",
        ]
    )
    check_config(cfg)
    model = build_model(cfg)
    shape = input_shape(cfg.dataset)
    g = torch.Generator().manual_seed(0)
    sx = torch.randn(2, 3, *shape, generator=g)
    qx = torch.randn(2, 6, *shape, generator=g)
    sy = torch.arange(3).expand(2, 3)
    qy = torch.arange(3).repeat(2).expand(2, 6)
    loss, _ = model.meta_loss(Episodes(sx, sy, qx, qy))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.net.features.parameters())


@pytest.mark.parametrize(
    "overrides, key, allowed",
    [
        (
            ["algorithm=r2d2", "dataset=sinusoid", "backbone=mlp"],
            "algorithm=r2d2",
            "classification tasks only",
        ),
        (
            ["algorithm=metaoptnet", "dataset=sinusoid", "backbone=mlp"],
            "algorithm=metaoptnet",
            "classification tasks only",
        ),
        (
            ["algorithm=matching", "dataset=sinusoid", "backbone=mlp"],
            "algorithm=matching",
            "classification tasks only",
        ),
        (["algorithm=relation", "backbone=mlp"], "backbone=mlp", "need a convolutional backbone"),
        (["algorithm=relation", "backbone=timm"], "backbone=timm", "need a convolutional backbone"),
        # every backbone a config can build is a metalab Backbone (features + a linear head)
        (
            ["algorithm=anil", "backbone._target_=torch.nn.Identity"],
            "backbone._target_=torch.nn.Identity",
            "not allowed",
        ),
    ],
)
def test_bad_combinations_stop_in_check_config(overrides, key, allowed):
    cfg = compose(overrides)
    with pytest.raises(ConfigError, match=allowed) as error:
        check_config(cfg)
    assert str(error.value).startswith(f"{key}:")


def test_bad_combination_is_one_line_before_training(tmp_path):
    proc = train_cli(
        tmp_path / "run", "algorithm=metaoptnet", "dataset=sinusoid", "backbone=mlp", "logger=csv"
    )
    assert proc.returncode == 2
    assert "algorithm=metaoptnet: learns classification tasks only" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run" / "checkpoints").exists()
