"""What MAML, ANIL and Reptile share: a backbone whose classifier head has ``ways`` outputs,
adapted to each task by gradient steps on its support set (inner_loop.py), also at evaluation."""

from __future__ import annotations

import torch
from torch import nn

from metalab.algorithms.base import MetaLearner
from metalab.algorithms.inner_loop import ENGINES, InnerLoop, Mode, check_engine
from metalab.data.episodes import Episodes
from metalab.errors import ConfigError, require_positive


class GradientMetaLearner(MetaLearner):
    """Shared by MAML and Reptile: a backbone whose classifier head has ``ways`` outputs, adapted
    to each task by gradient steps on its support set, also at evaluation."""

    needs_grad_at_eval = True
    engines: tuple[str, ...] = ENGINES

    def __init__(
        self,
        backbone,
        ways: int = 1,
        inner_lr: float = 0.4,
        inner_steps: int = 1,
        eval_inner_steps: int = 3,
        engine: str = "auto",
        eval_ways: int | None = None,
        head_init: str = "meta",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if head_init not in HEAD_INITS:
            raise ConfigError("algorithm.head_init", head_init, f"allowed: {', '.join(HEAD_INITS)}")
        require_positive("algorithm.inner_steps", inner_steps)
        require_positive("algorithm.eval_inner_steps", eval_inner_steps)
        check_engine(engine, self.engines)
        if self.task_kind.has_classes and eval_ways is not None and eval_ways != ways:
            raise ConfigError("dataset.ways", eval_ways, _ways_message(ways))
        self.ways, self.inner_lr, self.engine = ways, float(inner_lr), engine
        self.inner_steps, self.eval_inner_steps = inner_steps, eval_inner_steps
        self.net = backbone(out_dim=ways)
        self.inner = InnerLoop(self.adapted(), self.task)
        head = {id(p) for p in self.net.head.parameters()}
        #: the adapted parameters that every task starts from zero (``head_init: zero``)
        self.zeroed = {
            name
            for name, p in self.adapted().named_parameters()
            if head_init == "zero" and id(p) in head
        }

    def start_params(self) -> dict[str, torch.Tensor]:
        """The weights each task's adaptation starts from: the meta-learned ones, with the head
        at zero under ``head_init: zero`` (``p * 0``: still in the graph, so the head gets a
        zero meta-gradient rather than none, as DDP wants)."""
        return {
            name: p * 0 if name in self.zeroed else p for name, p in self.inner.params().items()
        }

    def adapt_and_predict(
        self, episodes: Episodes, steps: int, mode: Mode, training: bool, **options
    ) -> tuple[torch.Tensor, dict | None]:
        """``steps`` updates of the algorithm's inner rule (``self.rule()``) on each task's support
        set, then the query predictions, under the protocol of training or evaluation; the
        adapted parameters too if ``options`` ask for them (InnerLoop.run)."""
        return self.inner.run(
            self.start_params(),
            episodes.support_x,
            episodes.support_y,
            episodes.query_x,
            steps,
            self.rule(),
            mode,
            self.engine,
            protocol=self.protocol_for(training),
            **options,
        )

    def adapted(self) -> nn.Module:
        """The part of the network the inner loop adapts (ANIL: the head only)."""
        return self.net

    def check_ways(self, episodes: Episodes) -> None:
        """An evaluation episode must have as many classes as the head has outputs."""
        if self.task_kind.has_classes:
            ways = int(episodes.support_y.max()) + 1
            if ways != self.ways:
                raise ConfigError("dataset.ways", ways, _ways_message(self.ways))


#: ``meta``: the head's meta-learned weights; ``zero``: the zeroing trick (Kao et al., ICLR 2022)
HEAD_INITS = ("meta", "zero")


def _ways_message(ways: int) -> str:
    return (
        f"the classifier head has dataset.train_ways={ways} outputs, so the evaluation "
        f"episodes must have the same number of classes: set dataset.ways={ways}"
    )
