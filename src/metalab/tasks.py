"""The kinds of task a dataset poses (``dataset.task``): classification, regression and
reinforcement learning. A kind knows its loss, its per-task metrics, the metric a run is judged by
and its direction, and what inputs its samples are; whatever differs by kind asks it here, so no
other module compares task names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from metalab.errors import ConfigError

#: what a classification dataset's samples are (``dataset.inputs``)
CLASSIFICATION_INPUTS = ("image", "text")
#: backbones to suggest for each kind of input
BACKBONES = {
    "image": "conv4, resnet12 or mlp",
    "text": "text_cnn, text_transformer or text_pretrained",
    "vector": "mlp",
}


def classification_metrics(preds: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-task query cross-entropy and accuracy ``[B]`` of logits ``[B, Nq, ways]``."""
    b, n, ways = preds.shape
    loss = F.cross_entropy(preds.reshape(b * n, ways), targets.reshape(-1), reduction="none")
    acc = (preds.argmax(-1) == targets).float().mean(1)
    return {"loss": loss.view(b, n).mean(1), "acc": acc}


def regression_metrics(preds: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-task query mean squared error ``[B]``; it is also the loss."""
    mse = (preds - targets).pow(2).flatten(1).mean(1)
    return {"loss": mse, "mse": mse}


def no_metrics(preds: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    raise TypeError("reinforcement-learning algorithms score rollouts themselves (returns)")


@dataclass(frozen=True)
class TaskKind:
    name: str
    #: the headline metric: val/<metric> chooses the best checkpoint, test/<metric> is compared
    metric: str
    higher_is_better: bool
    #: episodes hold classes (``ways``); a classifier head has ``train_ways`` outputs
    has_classes: bool
    #: the loss of one task's support set (the inner loop's), from predictions and targets
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
    #: per-task query metrics ``[B]`` (always a ``loss``) of predictions ``[B, Nq, out]``
    metrics: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]
    #: the input shape of a sample, from the dataset config
    shape_of: Callable[[DictConfig], tuple[int, ...]]
    #: the backbones to suggest; None: by input kind (BACKBONES)
    backbones: str | None = None

    @property
    def monitor(self) -> tuple[str, str]:
        """The validation metric a run's best checkpoint is chosen by, and max or min."""
        return f"val/{self.metric}", "max" if self.higher_is_better else "min"

    @property
    def direction(self) -> str:
        """Optuna's direction for the validation metric."""
        return "maximize" if self.higher_is_better else "minimize"

    def inputs(self, dataset: DictConfig) -> str:
        """image, text (token ids; ``inputs: text``) or vector (regression, RL observations)."""
        if not self.has_classes:
            return "vector"
        kind = dataset.get("inputs", "image")
        if kind not in CLASSIFICATION_INPUTS:
            raise ConfigError(
                "dataset.inputs", kind, f"allowed: {', '.join(CLASSIFICATION_INPUTS)}"
            )
        return kind

    def input_shape(self, dataset: DictConfig) -> tuple[int, ...]:
        """The shape of one sample: what a backbone is built for."""
        self.inputs(dataset)  # a wrong dataset.inputs is named first
        return self.shape_of(dataset)

    def suggest_backbones(self, dataset: DictConfig) -> str:
        return self.backbones or BACKBONES[self.inputs(dataset)]


def _classification_shape(dataset: DictConfig) -> tuple[int, ...]:
    if dataset.get("inputs", "image") == "text":
        return (dataset.max_length,)  # token ids
    return (dataset.channels, dataset.image_size, dataset.image_size)


def _observation_shape(dataset: DictConfig) -> tuple[int, ...]:
    from hydra.utils import get_class

    return (get_class(dataset.env._target_).obs_dim,)  # of the environment


CLASSIFICATION = TaskKind(
    "classification",
    "acc",
    True,
    True,
    F.cross_entropy,
    classification_metrics,
    _classification_shape,
)
REGRESSION = TaskKind(
    "regression", "mse", False, False, F.mse_loss, regression_metrics, lambda dataset: (1,), "mlp"
)  # x
RL = TaskKind("rl", "return", True, False, None, no_metrics, _observation_shape, "policy")

#: every kind, by its ``dataset.task`` name (this order: compare's choice of a shared metric)
KINDS = {kind.name: kind for kind in (CLASSIFICATION, REGRESSION, RL)}


def task_kind(name: str) -> TaskKind:
    if name not in KINDS:
        raise ConfigError("dataset.task", name, f"allowed: {', '.join(KINDS)}")
    return KINDS[name]
