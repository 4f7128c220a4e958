"""The DataModule: loads a dataset once, holds each split on the training device, and serves
training task batches keyed by global step and fixed evaluation episodes split across ranks."""

from __future__ import annotations

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from metalab.data.augment import build_augment
from metalab.data.sampler import ImageEpisodes, generator
from metalab.data.tensors import ImageDataset
from metalab.errors import ConfigError


def load_sources(dataset_cfg: DictConfig) -> dict:
    """Instantiate the dataset's loader and wrap each split in an episode source."""
    augment = build_augment(dataset_cfg.get("augment"))  # checked before the heavy load
    loaded = hydra.utils.instantiate(dataset_cfg.load)
    if isinstance(loaded, ImageDataset):
        sources = {n: ImageEpisodes(loaded.split(n), loaded.mean, loaded.std, n)
                   for n in ("train", "val", "test")}
        sources["train"].augment = augment  # training episodes only
        return sources
    return loaded  # task generators (regression) are sources already


class _Batches:
    """A sized iterable of batches made on demand: Lightning only needs len() and iter().
    ``start()`` is read when an epoch begins, so training tasks follow the global step."""

    def __init__(self, n: int, make, start=lambda: 0):
        self.n, self.make, self.start = n, make, start

    def __len__(self):
        return self.n

    def __iter__(self):
        first = self.start()
        return (self.make(first + i) for i in range(self.n))


class EpisodeDataModule(pl.LightningDataModule):
    def __init__(self, dataset: DictConfig, meta_batch: int, seed: int, eval_seed: int,
                 steps_per_epoch: int, val_episodes: int, test_episodes: int, eval_batch: int):
        super().__init__()
        self.cfg = dataset
        self.meta_batch, self.seed, self.eval_seed = meta_batch, seed, eval_seed
        self.steps_per_epoch, self.eval_batch = steps_per_epoch, eval_batch
        self.n_episodes = {"val": val_episodes, "test": test_episodes}
        self.sources: dict | None = None
        self.plans: dict[str, torch.Tensor] = {}
        self.rank, self.world = 0, 1

    # -- shapes ---------------------------------------------------------------------------
    @property
    def train_shape(self) -> tuple[int, int, int]:
        c = self.cfg
        return c.get("train_ways", c.get("ways", 1)), c.train_shots, c.train_queries

    @property
    def eval_shape(self) -> tuple[int, int, int]:
        return self.cfg.get("ways", 1), self.cfg.shots, self.cfg.queries

    # -- setup ----------------------------------------------------------------------------
    def load(self) -> None:
        """Load the data and check the episode shapes against it (no device placement)."""
        if self.sources is not None:
            return
        self.sources = load_sources(self.cfg)
        for split in ("test", "val"):
            self.sources[split].check("", *self.eval_shape)
        self.check_train()
        for split, n in self.n_episodes.items():
            self.plans[split] = self.fixed_plan(split, n)

    def check_train(self) -> None:
        self.sources["train"].check("train_", *self.train_shape)

    def fixed_plan(self, split: str, n: int) -> torch.Tensor:
        # Episode e depends only on (eval_seed, split, e): the first 100 episodes are the same
        # whether 100 or 600 are asked for, and the same for every run.
        salt = {"val": 1, "test": 2}[split]
        plans = [self.sources[split].plan(generator(self.eval_seed, salt, e), 1, *self.eval_shape)
                 for e in range(n)]
        return torch.cat(plans) if plans else torch.empty(0)

    def setup(self, stage: str | None = None) -> None:
        self.load()
        if self.trainer is not None:
            self.rank, self.world = self.trainer.global_rank, self.trainer.world_size
            if self.meta_batch % self.world:
                raise ConfigError("algorithm.meta_batch", self.meta_batch,
                                  f"must divide by the number of processes ({self.world})")
            device = self.trainer.strategy.root_device
            for source in self.sources.values():
                source.to(device)

    # -- batches --------------------------------------------------------------------------
    def train_episodes(self, step: int):
        """This rank's share of the global meta-batch of ``step``."""
        plan = self.sources["train"].plan(generator(self.seed, step), self.meta_batch,
                                          *self.train_shape)
        share = self.meta_batch // self.world
        first, last = self.rank * share, (self.rank + 1) * share
        # one augmentation generator per task: the same tasks for any number of ranks
        gens = [generator(self.seed, step, task) for task in range(first, last)]
        return self.sources["train"].episodes(plan[first:last], self.train_shape[1], gens)

    def eval_ids(self, split: str) -> list[torch.Tensor]:
        ids = torch.arange(len(self.plans[split]))[self.rank::self.world]
        return list(ids.split(self.eval_batch))

    def eval_episodes(self, split: str, ids: torch.Tensor):
        return self.sources[split].episodes(self.plans[split][ids], self.eval_shape[1])

    def train_dataloader(self):
        return _Batches(self.steps_per_epoch, self.train_episodes,
                        start=lambda: self.trainer.global_step)

    def _eval_loader(self, split: str):
        batches = self.eval_ids(split)
        return _Batches(len(batches), lambda i: (batches[i], self.eval_episodes(split, batches[i])))

    def val_dataloader(self):
        return self._eval_loader("val")

    def test_dataloader(self):
        return self._eval_loader("test")
