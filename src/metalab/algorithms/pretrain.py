"""Pretrain-then-fine-tune: a backbone trained as an ordinary classifier of all meta-train
classes on shuffled mini-batches (metalab.data.batches), then tested on the same fixed episodes
as every meta-learner, by a classifier fitted to each episode's support features
(metalab.algorithms.episode_heads):

- Baseline (Chen et al. 2019): linear classifier in pretraining, a new linear one per episode;
- Baseline++: cosine classifiers in both;
- RFS (Tian et al. 2020): linear in pretraining; per episode, L2-normalised features and
  logistic regression; optional self-distillation: ``teacher=<an RFS run>`` trains a new
  network on ``ce_weight * CE + kd_weight * KL(teacher || student at temperature T) * T^2``.

``meta_batch`` is the number of equal groups each global batch is normalised in (batch-norm
statistics per group): on N processes at least N, so that 1 and N processes compute the same.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from metalab.algorithms.base import MetaLearner
from metalab.algorithms.episode_heads import HEADS, cosine_logits, episode_logits
from metalab.data.episodes import Episodes
from metalab.errors import ConfigError, require_positive
from metalab.tasks import CLASSIFICATION, task_kind

CLASSIFIERS = ("linear", "cosine")


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """Hinton's distillation term, as RFS: KL(teacher || student) of the softened
    predictions, summed over classes, averaged over samples, times T^2."""
    return (
        F.kl_div(
            F.log_softmax(student / t, -1),
            F.log_softmax(teacher / t, -1),
            log_target=True,
            reduction="batchmean",
        )
        * t
        * t
    )


class CosineClassifier(nn.Module):
    """Baseline++'s classifier: ``scale`` times the cosine of features and class weights."""

    def __init__(self, dim: int, classes: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(classes, dim))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Linear's initialisation
        self.scale = scale

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return cosine_logits(z, self.weight, self.scale)


class Pretrainer(MetaLearner):
    tasks = (CLASSIFICATION.name,)
    needs_grad_at_eval = True  # each episode's classifier is fitted by gradient steps
    #: metalab.run.training builds a BatchDataModule (shuffled mini-batches) for it
    batches = True

    def __init__(
        self,
        backbone,
        batch_size: int = 128,
        classifier: str = "linear",
        scale: float = 10.0,
        eval_head: str = "linear",
        normalize: bool = False,
        finetune_steps: int = 100,
        finetune_lr: float = 0.01,
        finetune_scale: float = 2.0,
        finetune_weight_decay: float = 1e-3,
        c: float = 1.0,
        teacher: str | None = None,
        kd_temperature: float = 4.0,
        kd_weight: float = 0.5,
        ce_weight: float = 0.5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if classifier not in CLASSIFIERS:
            raise ConfigError(
                "algorithm.classifier", classifier, f"allowed: {', '.join(CLASSIFIERS)}"
            )
        if eval_head not in HEADS:
            raise ConfigError("algorithm.eval_head", eval_head, f"allowed: {', '.join(HEADS)}")
        for key, value in (("batch_size", batch_size), ("finetune_steps", finetune_steps)):
            require_positive(f"algorithm.{key}", value)
        self.net = backbone(out_dim=None)
        self.batch_size, self.kind, self.scale = batch_size, classifier, scale
        self.eval_head, self.normalize = eval_head, normalize
        self.finetune = {
            "steps": finetune_steps,
            "lr": finetune_lr,
            "weight_decay": finetune_weight_decay,
            "scale": finetune_scale,
            "c": c,
        }
        self.kd = (kd_temperature, kd_weight, ce_weight)
        self.classifier: nn.Module | None = None  # sized by the number of training classes
        self._teacher: list[nn.Module] = []  # a list: not a submodule, not in checkpoints
        if teacher:
            self._teacher.append(self.load_teacher(teacher))

    @classmethod
    def check_run(cls, cfg) -> None:
        """Before any data: the batch splits into the batch-norm groups, and images come in."""
        from metalab.run.config import processes

        a = cfg.algorithm
        require_positive("algorithm.batch_size", a.batch_size)
        groups = processes(cfg.hardware) if a.meta_batch == 1 else a.meta_batch
        if a.batch_size % groups:
            raise ConfigError(
                "algorithm.batch_size",
                a.batch_size,
                f"must divide into {groups} equal batch-norm groups "
                "(algorithm.meta_batch, at least one per process)",
            )
        inputs = task_kind(cfg.dataset.task).inputs(cfg.dataset)
        if inputs != "image":
            raise ConfigError(
                "algorithm",
                a.name,
                f"pretrains on image datasets only, and "
                f"dataset={cfg.dataset.name} has {inputs} inputs",
            )

    # -- the training classifier, sized when the data are known ---------------------------------
    def make_classifier(self, classes: int) -> nn.Module:
        dim = self.net.feature_dim
        if self.kind == "cosine":
            return CosineClassifier(dim, classes, self.scale)
        return nn.Linear(dim, classes)

    def setup(self, stage: str) -> None:
        if self.classifier is None:
            # drawn from the run's seed, whatever the draws before: every process count and
            # every launcher starts from the same classifier
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(torch.initial_seed())
                self.classifier = self.make_classifier(self.trainer.datamodule.n_classes)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        if self.classifier is None and "classifier.weight" in state_dict:
            self.classifier = self.make_classifier(len(state_dict["classifier.weight"]))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def load_teacher(self, path: str) -> nn.Module:
        """The teacher network (backbone and classifier) of an earlier pretraining run."""
        from metalab.run.init_from import load_backbone, read_state

        state = read_state("algorithm.teacher", path)
        if "classifier.weight" not in state:
            raise ConfigError(
                "algorithm.teacher",
                path,
                "not a pretraining run (baseline, "
                "baseline_pp or rfs): it has no classifier of the training classes",
            )
        teacher = copy.deepcopy(self)
        load_backbone(teacher, "algorithm.teacher", path)
        teacher.classifier = self.make_classifier(len(state["classifier.weight"]))
        teacher.classifier.load_state_dict(
            {k[len("classifier.") :]: v for k, v in state.items() if k.startswith("classifier.")}
        )
        return teacher.requires_grad_(False)

    # -- pretraining -------------------------------------------------------------------------
    def logits(self, x: torch.Tensor, groups: int) -> torch.Tensor:
        """Class logits of a batch, normalised in ``groups`` equal groups."""
        z = torch.cat([self.net.embed(part) for part in x.chunk(groups)])
        return self.classifier(z)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        groups = self.meta_batch // self.trainer.world_size  # this process's share
        logits = self.logits(x, groups)
        loss = F.cross_entropy(logits, y)
        if self._teacher:
            t, kd_weight, ce_weight = self.kd
            teacher = self._teacher[0].to(x.device)
            with torch.no_grad():
                teacher_logits = teacher.logits(x, groups)
            kd = distill_loss(logits, teacher_logits, t)
            self.log("train/kd", kd, sync_dist=True)
            loss = ce_weight * loss + kd_weight * kd
        self.log("train/loss", loss, sync_dist=True)
        self.log(
            "train/acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True, sync_dist=True
        )
        return loss

    # -- evaluation: a classifier fitted to each episode's support set -----------------------
    def predict(self, episodes: Episodes, training: bool) -> torch.Tensor:
        ways = int(episodes.support_y.max()) + 1
        protocol, logits = self.protocol_for(training), []
        for task in range(episodes.num_tasks):  # one forward per task: batch-norm statistics
            s, q = episodes.support_x[task], episodes.query_x[task]
            zs, zq = protocol.embed(self.net.embed, s, q)
            if zs.dim() > zq.dim():  # support_plus_query: each query with its own support set
                logits.append(
                    torch.cat(
                        [
                            self.score(zs[i], episodes.support_y[task], zq[i : i + 1], ways)
                            for i in range(len(zq))
                        ]
                    )
                )
            else:
                logits.append(self.score(zs, episodes.support_y[task], zq, ways))
        return torch.stack(logits)

    def score(self, zs, ys, zq, ways: int) -> torch.Tensor:
        if self.normalize:  # RFS: L2-normalised features
            zs, zq = F.normalize(zs, dim=-1), F.normalize(zq, dim=-1)
        return episode_logits(self.eval_head, zs, ys, zq, ways, **self.finetune)
