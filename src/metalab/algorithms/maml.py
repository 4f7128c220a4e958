"""MAML (Finn et al. 2017): learn an initialisation from which a few gradient steps on a task's
support set fit the task. Second order by default; ``first_order: true`` is first-order MAML
(the ``fomaml`` preset); ``learn_inner_lr: true`` learns one inner learning rate per parameter
entry (Meta-SGD, Li et al. 2017). The inner loop is metalab.inner_loop (engine: loop, fused,
vmap, learn2learn or auto); ``checkpoint: true`` recomputes each task's query forward in the
backward pass instead of keeping its activations (less memory, a per-task engine)."""

from __future__ import annotations

import torch
from torch import nn

from metalab.algorithms.base import MetaLearner
from metalab.data.episodes import Episodes
from metalab.errors import ConfigError, require_positive
from metalab.inner_loop import ENGINES, SGD, InnerLoop, Mode, check_engine, resolve_engine


class GradientMetaLearner(MetaLearner):
    """Shared by MAML and Reptile: a backbone whose classifier head has ``ways`` outputs, adapted
    to each task by gradient steps on its support set, also at evaluation."""

    needs_grad_at_eval = True
    engines: tuple[str, ...] = ENGINES

    def __init__(self, backbone, ways: int = 1, inner_lr: float = 0.4, inner_steps: int = 1,
                 eval_inner_steps: int = 3, engine: str = "auto", eval_ways: int | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        require_positive("algorithm.inner_steps", inner_steps)
        require_positive("algorithm.eval_inner_steps", eval_inner_steps)
        check_engine(engine, self.engines)
        if self.task == "classification" and eval_ways is not None and eval_ways != ways:
            raise ConfigError("dataset.ways", eval_ways, _ways_message(ways))
        self.ways, self.inner_lr, self.engine = ways, float(inner_lr), engine
        self.inner_steps, self.eval_inner_steps = inner_steps, eval_inner_steps
        self.net = backbone(out_dim=ways)
        self.inner = InnerLoop(self.adapted(), self.task)

    def adapted(self) -> nn.Module:
        """The part of the network the inner loop adapts (ANIL: the head only)."""
        return self.net

    def check_ways(self, episodes: Episodes) -> None:
        """An evaluation episode must have as many classes as the head has outputs."""
        if self.task == "classification":
            ways = int(episodes.support_y.max()) + 1
            if ways != self.ways:
                raise ConfigError("dataset.ways", ways, _ways_message(self.ways))


def _ways_message(ways: int) -> str:
    return (f"the classifier head has dataset.train_ways={ways} outputs, so the evaluation "
            f"episodes must have the same number of classes: set dataset.ways={ways}")


class MAML(GradientMetaLearner):
    def __init__(self, backbone, first_order: bool = False, learn_inner_lr: bool = False,
                 checkpoint: bool = False, **kwargs):
        super().__init__(backbone, **kwargs)
        self.first_order, self.learn_inner_lr = bool(first_order), bool(learn_inner_lr)
        if not isinstance(checkpoint, bool):
            raise ConfigError("algorithm.checkpoint", checkpoint, "true or false")
        self.checkpoint = checkpoint
        resolve_engine(self.engine, torch.device("cpu"), checkpoint)  # a per-task engine?
        if learn_inner_lr and self.engine == "learn2learn":
            raise ConfigError("algorithm.engine", self.engine,
                              "learn_inner_lr=true needs engine loop, fused, vmap or auto")
        # Meta-SGD: a learned learning rate per parameter entry, initialised to inner_lr
        self.inner_lrs = nn.ParameterDict({
            _key(name): nn.Parameter(torch.full_like(p, self.inner_lr))
            for name, p in self.adapted().named_parameters()
        }) if learn_inner_lr else None

    def rule(self) -> SGD:
        if self.inner_lrs is None:
            return SGD(self.inner_lr)
        return SGD({name: self.inner_lrs[_key(name)]
                    for name, _ in self.adapted().named_parameters()})

    def mode_and_steps(self, episodes: Episodes, training: bool) -> tuple[Mode, int]:
        if training:
            return Mode.FIRST_ORDER if self.first_order else Mode.SECOND_ORDER, self.inner_steps
        self.check_ways(episodes)
        return Mode.DETACHED, self.eval_inner_steps

    def predict(self, episodes: Episodes, training: bool) -> torch.Tensor:
        mode, steps = self.mode_and_steps(episodes, training)
        preds, _ = self.inner.run(self.inner.params(), episodes.support_x, episodes.support_y,
                                  episodes.query_x, steps, self.rule(), mode, self.engine,
                                  protocol=self.protocol_for(training),
                                  checkpoint=self.checkpoint and training)
        return preds


def _key(name: str) -> str:
    return name.replace(".", "__")  # parameter names cannot contain dots
