"""The Lightning meta-learner: owns the outer loop, optimizer, metrics and evaluation.

An algorithm implements ``predict(episodes, training)`` -> query predictions ``[B, Nq, out]``
(class logits, or regression outputs); the base turns them into per-task losses and metrics.
Evaluation runs on the fixed episodes of the DataModule, split across ranks and gathered back
in episode order, so the mean and 95% CI are the same on any number of processes.
"""

from __future__ import annotations

import contextlib
import inspect

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from metalab.algorithms.baselines import raw_input_baselines
from metalab.algorithms.protocols import TRANSDUCTIVE, Protocol
from metalab.compare.statistics import mean_ci95
from metalab.data.episodes import Episodes
from metalab.tasks import CLASSIFICATION, REGRESSION, task_kind


class MetaLearner(pl.LightningModule):
    #: dataset tasks this algorithm can learn
    tasks: tuple[str, ...] = (CLASSIFICATION.name, REGRESSION.name)
    #: adaptation needs gradients, also under validation and test
    needs_grad_at_eval = False

    def __init__(
        self,
        optimizer,
        task: str = "classification",
        scheduler=None,
        meta_batch: int = 1,
        pixel_baseline: bool = True,
        protocol: str = "transductive",
        inductive_stats: str = "support",
    ):
        super().__init__()
        self.task = task
        self.task_kind = task_kind(task)  # its metrics, its monitored metric
        #: how validation and test episodes are predicted (metalab.algorithms.protocols)
        self.protocol = Protocol(protocol, inductive_stats)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.meta_batch = meta_batch
        self.pixel_baseline = pixel_baseline and self.task_kind.has_classes
        self._outputs: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
        #: per-episode metrics of the last evaluation of each split, in episode order
        self.episode_metrics: dict[str, dict[str, torch.Tensor]] = {}
        #: the last evaluation's summary per split: name -> float (means, CIs, episode count)
        self.summary: dict[str, dict[str, float]] = {}

    @classmethod
    def config_keys(cls) -> set[str]:
        """The keyword arguments its ``__init__`` takes, through the ``**kwargs`` it passes up to
        its base classes: the keys an ``algorithm`` config may set."""
        keys = set()
        for klass in cls.__mro__:
            if "__init__" not in vars(klass):
                continue
            params = inspect.signature(vars(klass)["__init__"]).parameters.values()
            keys |= {
                p.name
                for p in params
                if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            }
            if klass is MetaLearner or all(p.kind is not p.VAR_KEYWORD for p in params):
                break
        return keys

    # -- what an algorithm provides ------------------------------------------------------------
    @classmethod
    def check_backbone(cls, backbone: type, name: str) -> None:
        """Raise ConfigError if this algorithm cannot use the backbone class ``backbone``
        (config ``backbone=name``); called by check_config before any data is loaded."""

    def predict(self, episodes: Episodes, training: bool) -> torch.Tensor:
        raise NotImplementedError

    def meta_loss(self, episodes: Episodes) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss whose gradient is the meta-gradient, and per-task metrics."""
        metrics = self.task_metrics(self.predict(episodes, training=True), episodes.query_y)
        return metrics["loss"].mean(), metrics

    def protocol_for(self, training: bool) -> Protocol:
        """Training predicts queries as the papers train (transductive batch statistics);
        validation and test under the configured protocol."""
        return TRANSDUCTIVE if training else self.protocol

    # -- metrics -------------------------------------------------------------------------------
    def task_metrics(self, preds: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-task query loss and accuracy (classification) or MSE (regression), ``[B]``."""
        return self.task_kind.metrics(preds, targets)

    # -- training ------------------------------------------------------------------------------
    def training_step(self, episodes: Episodes, batch_idx: int) -> torch.Tensor:
        loss, metrics = self.meta_loss(episodes)
        for name, values in metrics.items():
            self.log(f"train/{name}", values.mean(), prog_bar=name != "loss", sync_dist=True)
        return loss

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        schedule = {"scheduler": scheduler, "interval": "step"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    # -- evaluation on fixed episodes ----------------------------------------------------------
    def _eval_step(self, batch, split: str) -> None:
        ids, episodes = batch
        grad = torch.enable_grad() if self.needs_grad_at_eval else contextlib.nullcontext()
        with grad:
            preds = self.predict(episodes, training=False)
        metrics = {k: v.detach() for k, v in self.task_metrics(preds, episodes.query_y).items()}
        if split == "test" and self.pixel_baseline:
            metrics.update(raw_input_baselines(episodes))
        self._outputs.append((ids.to(self.device), metrics))

    def _eval_epoch_end(self, split: str) -> None:
        ids = torch.cat([i for i, _ in self._outputs])
        metrics = {k: torch.cat([m[k] for _, m in self._outputs]) for k in self._outputs[0][1]}
        self._outputs.clear()
        if self.trainer.world_size > 1:
            ids, metrics = self._gather(ids, metrics)
        order = ids.argsort()
        self.episode_metrics[split] = {k: v[order].cpu() for k, v in metrics.items()}
        summary = {f"{split}/episodes": float(len(ids))}
        for name, values in self.episode_metrics[split].items():
            summary[f"{split}/{name}"], summary[f"{split}/{name}_ci95"] = mean_ci95(values)
        self.summary[split] = summary
        for name, value in summary.items():
            self.log(name, value, prog_bar=name == f"{split}/{self.task_kind.metric}")

    def _gather(self, ids, metrics):
        """All ranks' episodes, padded to equal length for all_gather, padding dropped."""
        longest = self.all_gather(torch.tensor(len(ids), device=self.device)).max()
        pad = int(longest) - len(ids)
        ids = F.pad(ids, (0, pad), value=-1)
        metrics = {k: F.pad(v, (0, pad)) for k, v in metrics.items()}
        ids = self.all_gather(ids).flatten()
        keep = ids >= 0
        return ids[keep], {k: self.all_gather(v).flatten()[keep] for k, v in metrics.items()}

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self):
        if self._outputs:
            self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_test_epoch_end(self):
        if self._outputs:
            self._eval_epoch_end("test")
