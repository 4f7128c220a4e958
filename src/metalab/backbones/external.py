"""Backbones from other libraries: torchvision's ResNets (ResNet-18 is the Closer Look
backbone) and any timm model by name. Weights come from a local file only (``weights=<path>``,
a state dict, e.g. saved from the library's own pretrained model on a machine with internet):
nothing is downloaded at run time. Their batch norms are switched to batch statistics in every
pass, as metalab's own backbones (a task's predictions depend on its own images only)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from metalab.backbones.base import Backbone
from metalab.errors import ConfigError


def batch_statistics_only(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
    return module


def load_weights(model: nn.Module, weights: str | None, ignore: tuple[str, ...] = ()) -> None:
    """Load a local state dict (or a checkpoint holding one under ``state_dict``) into a model
    without running statistics; the keys in ``ignore`` (a classifier that was removed) and the
    file's running statistics are left over."""
    if weights is None:
        return
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(
            "backbone.weights",
            weights,
            f"no such file: {path} (weights load from a local file only; null trains from scratch)",
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    state = {
        k: v
        for k, v in state.items()
        if not k.startswith(ignore)
        and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        raise ConfigError(
            "backbone.weights",
            weights,
            "does not fit the model: " + str(exc).strip().splitlines()[-1].strip(),
        ) from None
    missing = [k for k in missing if not k.startswith(ignore)]  # the classifier, dropped here
    if missing or unexpected:
        raise ConfigError(
            "backbone.weights",
            weights,
            f"does not fit the model: {len(missing)} missing keys (e.g. "
            f"{missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})",
        )


class TorchvisionResNet(Backbone):
    """``torchvision.models.<arch>`` without its classifier: the pooled features."""

    def __init__(self, in_shape, out_dim=None, arch: str = "resnet18", weights: str | None = None):
        import torchvision

        if arch not in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
            raise ConfigError(
                "backbone.arch", arch, "allowed: resnet18, resnet34, resnet50, resnet101, resnet152"
            )
        net = batch_statistics_only(getattr(torchvision.models, arch)(weights=None))
        load_weights(net, weights, ignore=("fc.",))
        if in_shape[0] != 3:  # grey images: a first convolution for their channels
            net.conv1 = nn.Conv2d(in_shape[0], 64, 7, stride=2, padding=3, bias=False)
        features = nn.Sequential(*list(net.children())[:-1])  # all but fc
        super().__init__(features, in_shape, out_dim)


class TimmBackbone(Backbone):
    """``timm.create_model(model, num_classes=0)``: any timm model, its pooled features."""

    #: the features are pooled vectors (any architecture, transformers too), not maps
    feature_maps = False

    def __init__(self, in_shape, out_dim=None, model: str = "resnet18", weights: str | None = None):
        import timm

        if not timm.list_models(model):
            raise ConfigError(
                "backbone.model", model, "not a timm model name (timm.list_models() lists them)"
            )
        net = batch_statistics_only(
            timm.create_model(model, pretrained=False, num_classes=0, in_chans=in_shape[0])
        )
        load_weights(net, weights, ignore=(net.default_cfg.get("classifier", "fc") + ".",))
        super().__init__(net, in_shape, out_dim)
