"""The DataModule: loads a dataset's episode sources once (metalab.data.source), holds each split
on the training device, and serves training task batches keyed by global step and fixed
evaluation episodes split across ranks. It talks to the sources through their contract only:
images, text, regression tasks and RL environments are served the same way."""

from __future__ import annotations

import inspect

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import get_object
from omegaconf import DictConfig

from metalab.data.augment import build_augment
from metalab.data.episodes import EpisodeShape
from metalab.data.sampler import ImageEpisodes, generator
from metalab.data.source import EpisodeSource
from metalab.data.tensors import ImageDataset
from metalab.errors import ConfigError

#: the salt of each evaluation split's episodes
SALT = {"val": 1, "test": 2}


def load_sources(dataset_cfg: DictConfig) -> dict[str, EpisodeSource]:
    """The episode source of each split: from the dataset's loader (``load``), or, for meta-RL,
    from its environment (``env``)."""
    if "env" in dataset_cfg:
        from metalab.rl.tasks import env_sources

        return env_sources(dataset_cfg)
    augment = build_augment(dataset_cfg.get("augment"))  # checked before the heavy load
    loaded = hydra.utils.instantiate(dataset_cfg.load, **loader_arguments(dataset_cfg))
    if isinstance(loaded, ImageDataset):  # training episodes only are augmented
        return {
            n: ImageEpisodes(
                loaded.split(n), loaded.mean, loaded.std, n, augment if n == "train" else None
            )
            for n in ("train", "val", "test")
        }
    return loaded  # text and regression loaders return their sources


def loader_arguments(dataset_cfg: DictConfig) -> dict:
    """The dataset keys its loader (``load._target_``) takes as arguments, so that each knob is
    set in one place, ``dataset.<key>``; a key also given under ``load`` keeps that value."""
    params = inspect.signature(get_object(dataset_cfg.load._target_)).parameters
    return {
        key: dataset_cfg[key]
        for key, p in params.items()
        if key in dataset_cfg
        and key not in dataset_cfg.load
        and key != "load"
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


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
    def __init__(
        self,
        dataset: DictConfig,
        meta_batch: int,
        seed: int,
        eval_seed: int,
        steps_per_epoch: int,
        val_episodes: int,
        test_episodes: int,
        eval_batch: int,
    ):
        super().__init__()
        self.cfg = dataset
        self.meta_batch, self.seed, self.eval_seed = meta_batch, seed, eval_seed
        self.steps_per_epoch, self.eval_batch = steps_per_epoch, eval_batch
        self.n_episodes = {"val": val_episodes, "test": test_episodes}
        self.sources: dict[str, EpisodeSource] | None = None
        self.plans: dict[str, torch.Tensor] = {}
        self.rank, self.world = 0, 1

    # -- shapes ---------------------------------------------------------------------------
    @property
    def train_shape(self) -> tuple[int, int, int]:
        return EpisodeShape.of(self.cfg, training=True).sizes

    @property
    def eval_shape(self) -> tuple[int, int, int]:
        return EpisodeShape.of(self.cfg, training=False).sizes

    # -- setup ----------------------------------------------------------------------------
    def load(self) -> None:
        """Load the data and check the episode shapes against it (no device placement)."""
        if self.sources is not None:
            return
        self.sources = load_sources(self.cfg)
        for split in ("test", "val"):
            self.sources[split].check(EpisodeShape.of(self.cfg, training=False))
        self.check_train()
        for split, n in self.n_episodes.items():
            self.plans[split] = self.fixed_plan(split, n)

    def check_train(self) -> None:
        """The training split can make the training episodes (pretraining: its batches)."""
        self.sources["train"].check(EpisodeShape.of(self.cfg, training=True))

    def fixed_plan(self, split: str, n: int) -> torch.Tensor:
        # Episode e depends only on (eval_seed, split, e): the first 100 episodes are the same
        # whether 100 or 600 are asked for, and the same for every run.
        plans = [
            self.sources[split].plan(generator(self.eval_seed, SALT[split], e), 1, *self.eval_shape)
            for e in range(n)
        ]
        return torch.cat(plans) if plans else torch.empty(0)

    def setup(self, stage: str | None = None) -> None:
        self.load()
        if self.trainer is not None:
            self.rank, self.world = self.trainer.global_rank, self.trainer.world_size
            if self.meta_batch % self.world:
                raise ConfigError(
                    "algorithm.meta_batch",
                    self.meta_batch,
                    f"must divide by the number of processes ({self.world})",
                )
            device = self.trainer.strategy.root_device
            for source in self.sources.values():
                source.to(device)

    # -- batches --------------------------------------------------------------------------
    def train_episodes(self, step: int):
        """This rank's share of the global meta-batch of ``step``."""
        plan = self.sources["train"].plan(
            generator(self.seed, step), self.meta_batch, *self.train_shape
        )
        share = self.meta_batch // self.world
        first, last = self.rank * share, (self.rank + 1) * share
        # one generator per task (augmentation, RL's noise): the same on any number of ranks
        gens = [generator(self.seed, step, task) for task in range(first, last)]
        return self.sources["train"].episodes(plan[first:last], self.train_shape[1], gens)

    def eval_ids(self, split: str) -> list[torch.Tensor]:
        ids = torch.arange(len(self.plans[split]))[self.rank :: self.world]
        return list(ids.split(self.eval_batch))

    def eval_episodes(self, split: str, ids: torch.Tensor):
        # one generator per episode, for sources with random streams (RL); images ignore them,
        # since only training episodes are augmented
        gens = [generator(self.eval_seed, SALT[split], int(e), 1) for e in ids]
        return self.sources[split].episodes(self.plans[split][ids], self.eval_shape[1], gens)

    def train_dataloader(self):
        return _Batches(
            self.steps_per_epoch, self.train_episodes, start=lambda: self.trainer.global_step
        )

    def _eval_loader(self, split: str):
        batches = self.eval_ids(split)
        return _Batches(len(batches), lambda i: (batches[i], self.eval_episodes(split, batches[i])))

    def val_dataloader(self):
        return self._eval_loader("val")

    def test_dataloader(self):
        return self._eval_loader("test")
