"""Non-episodic training data: ordinary shuffled mini-batches of all meta-train images, with
their class labels over all meta-train classes (the pretraining stage of Baseline, Baseline++,
RFS). Validation and test stay the fixed episodes of the EpisodeDataModule.

The order is a pure function of (seed, step): sample ``p = step * batch + i`` of the run is
position ``p % N`` of the permutation of epoch ``p // N`` (a new shuffle every pass over the
data). A resumed run draws the batches it would have drawn, and each sample's augmentation
has its own generator, so 1 and N processes train on the same global batches.
"""

from __future__ import annotations

import torch

from metalab.data.datamodule import EpisodeDataModule, _Batches
from metalab.data.sampler import ImageEpisodes, generator
from metalab.errors import ConfigError


def split_labels(source: ImageEpisodes) -> torch.Tensor:
    """Class ids ``[N]`` of a split's images, from its per-class positions."""
    table = source.index.table
    labels = torch.empty(int(source.index.counts.sum()), dtype=torch.long)
    classes = torch.arange(len(table))[:, None].expand_as(table)
    labels[table[table >= 0]] = classes[table >= 0]
    return labels


class ShuffledBatches:
    """Global mini-batch ``step`` of ``n`` samples: sample indices, epoch after epoch."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:  # batches come in order: one permutation held at a time
            self._epoch = epoch
            self._perm = torch.randperm(self.n, generator=generator(self.seed, 7, epoch))
        return self._perm

    def indices(self, step: int) -> torch.Tensor:
        positions = step * self.batch_size + torch.arange(self.batch_size)
        epochs, within = positions // self.n, positions % self.n
        return torch.cat([self.permutation(int(e))[within[epochs == e]] for e in epochs.unique()])


class BatchDataModule(EpisodeDataModule):
    """Training: this rank's share of each global mini-batch ``(x, y)``; evaluation: the fixed
    val/test episodes, as every other algorithm sees them."""

    def __init__(self, dataset, batch_size: int, **kwargs):
        super().__init__(dataset, **kwargs)
        self.batch_size = batch_size
        self.labels: torch.Tensor | None = None
        self.order: ShuffledBatches | None = None

    @property
    def n_classes(self) -> int:
        return len(self.sources["train"].index.counts)

    def check_train(self) -> None:
        """The train split is read as batches, not episodes: it must hold a whole batch."""
        source = self.sources["train"]
        if not isinstance(source, ImageEpisodes):
            raise ConfigError("dataset", self.cfg.name, "pretraining reads image datasets only")
        counts = source.index.counts
        if self.batch_size > int(counts.sum()):
            raise ConfigError(
                "algorithm.batch_size",
                self.batch_size,
                f"the train split of dataset={self.cfg.name} has only "
                f"{int(counts.sum())} samples ({len(counts)} classes of "
                f"{int(counts.min())}-{int(counts.max())}); use a smaller batch",
            )
        if int(counts.min()) < 2:  # a class seen once per epoch cannot be learned from batches
            raise ConfigError(
                "dataset",
                self.cfg.name,
                f"the train split has classes with only {int(counts.min())} "
                "sample; pretraining needs at least 2 per class",
            )
        self.labels = split_labels(source)
        self.order = ShuffledBatches(len(self.labels), self.batch_size, self.seed)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.batch_size % self.world:
            raise ConfigError(
                "algorithm.batch_size",
                self.batch_size,
                f"must divide by the number of processes ({self.world})",
            )
        self.labels = self.labels.to(self.sources["train"].images.device)

    def train_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of global batch ``step``: normalised images and class ids."""
        source = self.sources["train"]
        share = self.batch_size // self.world
        idx = self.order.indices(step)[self.rank * share : (self.rank + 1) * share]
        first = step * self.batch_size + self.rank * share  # the run's sample numbers
        x = source.images[idx.to(source.images.device)].float().div_(255)
        if source.augment is not None:
            x = torch.cat(
                [
                    source.augment(x[i : i + 1], generator(self.seed, 11, first + i))
                    for i in range(len(x))
                ]
            )
        return (x - source.mean) / source.std, self.labels[idx.to(self.labels.device)]

    def train_dataloader(self):
        return _Batches(
            self.steps_per_epoch, self.train_batch, start=lambda: self.trainer.global_step
        )
