"""Few-shot episode sampling as index tensors, gathered from one in-memory tensor per split.

Tasks are a pure function of (seed, step) or (eval_seed, episode id): nothing to checkpoint,
the same tasks on any device and any number of ranks, and evaluation episodes that are the
same for every run, so runs compare episode by episode.
"""

from __future__ import annotations

import torch

from metalab.data.episodes import Episodes, EpisodeShape
from metalab.data.tensors import ImageSplit
from metalab.errors import ConfigError, require_positive


def generator(*seeds: int) -> torch.Generator:
    """A CPU generator seeded from several integers (e.g. run seed and step)."""
    mixed = 0
    for s in seeds:
        mixed = (mixed * 1_000_003 + int(s)) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


class ClassIndex:
    """Per-class sample positions of a split, padded to the largest class."""

    def __init__(self, labels: torch.Tensor, n_classes: int):
        order = torch.argsort(labels, stable=True)
        self.counts = torch.bincount(labels, minlength=n_classes)
        offsets = torch.cumsum(self.counts, 0) - self.counts
        width = int(self.counts.max())
        pos = torch.arange(width)
        table = order[(offsets[:, None] + pos).clamp(max=len(labels) - 1)]
        self.table = torch.where(pos < self.counts[:, None], table, -1)  # [n_classes, width]

    def check(self, split: str, shape: EpisodeShape) -> None:
        n_classes = len(self.counts)
        if shape.ways > n_classes:
            raise ConfigError(
                shape.key("ways"), shape.ways, f"the {split} split has only {n_classes} classes"
            )
        fewest, per_class = int(self.counts.min()), shape.shots + shape.queries
        if per_class > fewest:
            raise ConfigError(
                f"{shape.key('shots')} + {shape.key('queries')}",
                per_class,
                f"the {split} split has classes with only {fewest} samples",
            )

    def draw(
        self,
        gen: torch.Generator,
        num_tasks: int,
        ways: int,
        per_class: int,
        allowed: torch.Tensor | None = None,
    ):
        """Indices ``[T, ways, per_class]`` of distinct samples from ``ways`` distinct classes;
        ``allowed`` ``[T, n_classes]`` (bool): the classes each task may take (e.g. one domain)."""
        n_classes, width = self.table.shape
        scores = torch.rand(num_tasks, n_classes, generator=gen)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, 2.0)
        classes = scores.argsort(dim=1)[:, :ways]
        rows = self.table[classes]  # [T, W, width]
        scores = torch.rand(num_tasks, ways, width, generator=gen).masked_fill(rows < 0, 2.0)
        picks = scores.topk(per_class, dim=2, largest=False).indices
        return rows.gather(2, picks)


class ImageEpisodes:
    """Draws classification episodes from one split held on the training device (an
    EpisodeSource). ``augment``: (x ``[N, C, H, W]`` in [0, 1], generator) -> x, applied to the
    episodes made with generators (training's)."""

    def __init__(self, split: ImageSplit, mean, std, name: str = "train", augment=None):
        self.name = name
        self.images = split.images
        self.index = ClassIndex(split.labels, split.n_classes)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.augment = augment

    def to(self, device) -> ImageEpisodes:
        self.images = self.images.to(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def check(self, shape: EpisodeShape) -> None:
        check_episode_shape(shape)
        self.index.check(self.name, shape)

    def plan(self, gen: torch.Generator, num_tasks: int, ways: int, shots: int, queries: int):
        """Cheap CPU description of ``num_tasks`` tasks: sample indices ``[T, W, S+Q]``."""
        return self.index.draw(gen, num_tasks, ways, shots + queries)

    def episodes(self, idx: torch.Tensor, shots: int, gens=None) -> Episodes:
        """Turn indices ``[T, W, shots+queries]`` into normalised episodes on the data device;
        ``gens`` (one generator per task) turn on ``augment``."""
        t, ways, per_class = idx.shape
        x = self.images[idx.to(self.images.device).flatten()].float().div_(255)
        if self.augment is not None and gens is not None:
            x = torch.cat([self.augment(task, g) for task, g in zip(x.chunk(t), gens)])
        x = ((x - self.mean) / self.std).view(t, ways, per_class, *x.shape[1:])
        return split_support_query(x, shots)


def split_support_query(x: torch.Tensor, shots: int) -> Episodes:
    """Samples ``[T, ways, per_class, ...]`` -> episodes: the first ``shots`` of each class are
    its support set, the rest its queries; a sample's label is its class's position."""
    t, ways, per_class = x.shape[:3]
    y = torch.arange(ways, device=x.device).view(1, ways, 1).expand(t, ways, per_class)

    def flat(a):
        return a.reshape(t, ways * a.shape[2], *a.shape[3:])

    support, query = (slice(None, shots), slice(shots, None))
    return Episodes(
        flat(x[:, :, support]), flat(y[:, :, support]), flat(x[:, :, query]), flat(y[:, :, query])
    )


def check_episode_shape(shape: EpisodeShape) -> None:
    for what in ("ways", "shots", "queries"):
        require_positive(shape.key(what), getattr(shape, what))
    if shape.ways < 2:
        raise ConfigError(shape.key("ways"), shape.ways, "a classification task needs ways >= 2")
