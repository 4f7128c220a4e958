"""The benchmark dataset zoo: standard few-shot image benchmarks with their standard class splits,
read through learn2learn's dataset classes (its file formats, splits and downloads) and converted
once into the cached uint8 tensor per split (``ImageDataset``) that the episode sampler uses."""

from metalab.data.zoo.cifar_fs import load_cifar_fs
from metalab.data.zoo.cub import load_cub
from metalab.data.zoo.fc100 import load_fc100
from metalab.data.zoo.mini_imagenet import load_mini_imagenet
from metalab.data.zoo.tiered_imagenet import load_tiered_imagenet

__all__ = ["load_cifar_fs", "load_cub", "load_fc100", "load_mini_imagenet", "load_tiered_imagenet"]
