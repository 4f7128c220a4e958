"""The benchmark zoo: tiny fake copies of each benchmark in the real on-disk format that
learn2learn reads, loaded through learn2learn into cached uint8 splits; end-to-end runs; the
errors for missing, truncated and corrupt files; training-time augmentation."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch

from helpers import TINY, assert_results_are_the_episode_means, compose, train_cli
from helpers.benchmark_files import (
    CIFAR,
    FC100_LABELS,
    MINI,
    PER_CLASS,
    dump,
    write_cifar_fs,
    write_cub,
    write_fc100,
    write_mini,
    write_tiered,
)
from metalab.data import zoo
from metalab.data.augment import Augment, augment, build_augment
from metalab.data.zoo import common
from metalab.data.zoo.common import learn2learn_datasets
from metalab.errors import ConfigError
from metalab.run.config import CONF_DIR, input_shape
from metalab.run.training import build_datamodule

L2L = learn2learn_datasets()


def _spy(monkeypatch, name: str) -> list[str]:
    """Record the modes learn2learn's ``name`` class is built with (it still does the work)."""
    real, modes = getattr(L2L, name), []

    def record(*args, **kwargs):
        modes.append(kwargs.get("mode"))
        return real(*args, **kwargs)

    monkeypatch.setattr(L2L, name, record)
    return modes


def _refuse(monkeypatch, name: str) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("learn2learn was called although the cache holds the split")

    monkeypatch.setattr(L2L, name, refuse)


def _as_chw(rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rows).permute(0, 3, 1, 2)


EXACT = {  # the lossless fakes: name -> (writer, learn2learn class, labels of row j)
    "mini_imagenet": (write_mini, "MiniImagenet"),
    "tiered_imagenet": (write_tiered, "TieredImagenet"),
    "fc100": (write_fc100, "FC100"),
    "cifar_fs": (write_cifar_fs, "CIFARFS"),
}


@pytest.mark.parametrize("name", list(EXACT))
def test_loader_reads_the_real_format_through_learn2learn_and_caches(name, tmp_path, monkeypatch):
    writer, l2l_class = EXACT[name]
    written = writer(tmp_path / "data")
    load = getattr(zoo, f"load_{name}")
    modes = _spy(monkeypatch, l2l_class)
    data = load(str(tmp_path / "data"), str(tmp_path / "cache"))
    assert {"train", "validation", "test"} <= set(modes)
    size = 32 if name in ("fc100", "cifar_fs") else 84
    for split, rows in written.items():
        got = data.split(split)
        assert got.images.shape == (5 * PER_CLASS, 3, size, size)
        assert got.n_classes == 5 and got.samples_per_class().tolist() == [PER_CLASS] * 5
        if name == "cifar_fs":  # an image folder: class by class, in name order
            assert got.class_names == CIFAR[split]
            assert torch.equal(got.images, _as_chw(rows))
        else:  # row j is class j % 5: the rows keep their order and get the right label
            assert torch.equal(got.images, _as_chw(rows))
            assert got.labels.tolist() == [j % 5 for j in range(5 * PER_CLASS)]
    if name == "mini_imagenet":
        assert data.val.class_names == MINI["validation"]
    if name == "fc100":
        assert data.test.class_names == [f"cifar100_fine_{k}" for k in FC100_LABELS["test"]]
    assert len(data.mean) == 3 and len(data.std) == 3
    # The second load reads the cache: learn2learn must not be touched.
    _refuse(monkeypatch, l2l_class)
    again = load(str(tmp_path / "data"), str(tmp_path / "cache"))
    assert torch.equal(again.train.images, data.train.images)
    assert again.test.class_names == data.test.class_names
    assert len(list((tmp_path / "cache").glob(f"{name}_*.pt"))) == 3


def test_cub_standard_split_resize_duplicates_and_boxes(tmp_path, monkeypatch):
    write_cub(tmp_path / "data")
    root, cache = str(tmp_path / "data"), str(tmp_path / "cache")
    modes = _spy(monkeypatch, "CUBirds200")
    data = zoo.load_cub(root, cache)
    assert set(modes) == {"train", "validation", "test"}
    for split, mode in (("train", "train"), ("val", "validation"), ("test", "test")):
        got = data.split(split)
        assert got.class_names == L2L.cu_birds200.SPLITS[mode]  # learn2learn's split
        assert got.images.shape == (2 * len(got.class_names), 3, 84, 84)
        assert got.samples_per_class().tolist() == [2] * len(got.class_names)
    assert (data.train.n_classes, data.val.n_classes, data.test.n_classes) == (140, 30, 30)
    with_dup = zoo.load_cub(root, cache, include_imagenet_duplicates=True)
    assert len(with_dup.train.images) == len(data.train.images) + 1
    cropped = zoo.load_cub(root, cache, bounding_box_crop=True)
    assert cropped.test.images.shape == data.test.images.shape
    assert not torch.equal(cropped.test.images, data.test.images)
    _refuse(monkeypatch, "CUBirds200")
    assert torch.equal(zoo.load_cub(root, cache).val.images, data.val.images)
    monkeypatch.undo()
    gone = tmp_path / "data" / "cubirds200" / "CUB_200_2011" / "images" / "046.Gadwall"
    for f in gone.iterdir():
        f.unlink()
    gone.rmdir()
    with pytest.raises(ConfigError, match=f"^dataset.root={gone}: not found"):
        zoo.load_cub(root, cache)


def test_large_split_shows_a_progress_bar(tmp_path, monkeypatch, capsys):
    write_fc100(tmp_path / "data")
    monkeypatch.setattr(common, "BAR_MIN", 5 * PER_CLASS)  # the fake splits count as large
    zoo.load_fc100(str(tmp_path / "data"), str(tmp_path / "cache"))
    err = capsys.readouterr().err
    assert "FC100 train" in err and f"{5 * PER_CLASS}/{5 * PER_CLASS}" in err
    zoo.load_fc100(str(tmp_path / "data"), str(tmp_path / "cache"))  # cached: no bar
    assert "FC100" not in capsys.readouterr().err


def test_resizing_to_another_image_size(tmp_path):
    write_fc100(tmp_path / "data")
    data = zoo.load_fc100(str(tmp_path / "data"), str(tmp_path / "cache"), image_size=20)
    assert data.train.images.shape == (5 * PER_CLASS, 3, 20, 20)
    # a resized flat-coloured class keeps its colour: compare to the written means
    written = write_fc100(tmp_path / "again")["train"]
    assert torch.allclose(
        data.train.images.float().mean(dim=(2, 3)),
        _as_chw(written).float().mean(dim=(2, 3)),
        atol=6,
    )


# ----------------------------------------------------------------------------- file errors


def test_missing_files_list_one_line_each_with_where_to_get_them(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError) as err:
        zoo.load_mini_imagenet(str(empty), str(tmp_path / "cache"))
    lines = str(err.value).splitlines()
    assert len(lines) == 4 and "3 files or folders" in lines[0]
    for line, mode in zip(lines[1:], ("train", "validation", "test")):
        assert str(empty / f"mini-imagenet-cache-{mode}.pkl") in line and "zenodo.org" in line
    for load, expected in (
        (zoo.load_tiered_imagenet, "tiered-imagenet/train_images_png.pkl"),
        (zoo.load_fc100, "FC100_val.pickle"),
        (zoo.load_cifar_fs, "cifarfs/cifar100/data"),
        (zoo.load_cub, "cubirds200/CUB_200_2011/images"),
    ):
        with pytest.raises(ConfigError, match=expected):
            load(str(empty), str(tmp_path / "cache"))
    assert list(empty.iterdir()) == []  # nothing created (learn2learn would mkdir)


def test_truncated_and_corrupt_files_are_named(tmp_path):
    root = tmp_path / "data"
    write_fc100(root)
    bad = root / "FC100_val.pickle"
    bad.write_bytes(bad.read_bytes()[:500])
    with pytest.raises(ConfigError, match=f"{bad}.*truncated or corrupt"):
        zoo.load_fc100(str(root), str(tmp_path / "cache"))
    # complete pickle, wrong content: learn2learn's KeyError becomes an error naming the file
    dump(bad, {"pixels": 1}, protocol=2)
    with pytest.raises(ConfigError, match=f"{bad}.*KeyError"):
        zoo.load_fc100(str(root), str(tmp_path / "cache"))
    write_tiered(root)
    labels = root / "tiered-imagenet" / "test_labels.pkl"
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(ConfigError, match=f"{labels}"):
        zoo.load_tiered_imagenet(str(root), str(tmp_path / "cache"))
    write_cifar_fs(root)
    png = root / "cifarfs" / "cifar100" / "data" / "otter" / "otter_s_000002.png"
    png.write_bytes(png.read_bytes()[:40])
    with pytest.raises(ConfigError, match="processed/val/otter/otter_s_000002.png"):
        zoo.load_cifar_fs(str(root), str(tmp_path / "cache"))


def test_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        assert kwargs.get("download") is True
        raise ConnectionError("no route to host")

    monkeypatch.setattr(L2L, "FC100", offline)  # this machine may be offline: make it so
    with pytest.raises(ConfigError, match="dataset.download=True: downloading FC100.*no route"):
        zoo.load_fc100(str(tmp_path / "data"), str(tmp_path / "cache"), download=True)


def test_without_learn2learn_a_first_load_says_so(tmp_path, monkeypatch):
    write_fc100(tmp_path / "data")
    monkeypatch.setitem(sys.modules, "learn2learn.vision.datasets", None)  # as if not installed
    with pytest.raises(ConfigError, match="^dataset=.*needs learn2learn"):
        zoo.load_fc100(str(tmp_path / "data"), str(tmp_path / "cache"))


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"image_size": 0}, "dataset.image_size"),
        ({"download": "yes"}, "dataset.download"),
        ({"mean": [0.5, 0.5]}, "dataset.mean"),
        ({"std": [0.2, 0.0, 0.2]}, "dataset.std"),
        ({"root": ""}, "dataset.root"),
    ],
)
def test_bad_loader_arguments(kwargs, key, tmp_path):
    args = {"root": str(tmp_path), "cache_dir": str(tmp_path / "cache"), **kwargs}
    with pytest.raises(ConfigError, match=f"^{key}="):
        zoo.load_mini_imagenet(**args)


def test_bad_cub_option(tmp_path):
    with pytest.raises(ConfigError, match="^dataset.bounding_box_crop=1"):
        zoo.load_cub(str(tmp_path), str(tmp_path / "cache"), bounding_box_crop=1)


def _stderr_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def test_cli_missing_and_truncated_file_stop_with_one_line(tmp_path):
    root = tmp_path / "data"
    write_mini(root)
    (root / "mini-imagenet-cache-test.pkl").unlink()
    args = ("dataset=mini_imagenet", f"dataset.root={root}", f"paths.cache_dir={tmp_path}/c")
    proc = train_cli(tmp_path / "run1", *args, *TINY, "logger=csv")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(_stderr_lines(proc)) == 1
    assert f"{root}/mini-imagenet-cache-test.pkl" in proc.stderr and "zenodo" in proc.stderr
    write_mini(root)
    train = root / "mini-imagenet-cache-train.pkl"
    train.write_bytes(train.read_bytes()[:100_000])
    proc = train_cli(tmp_path / "run2", *args, *TINY, "logger=csv")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = _stderr_lines(proc)
    assert len(lines) == 1 and str(train) in lines[0] and "truncated or corrupt" in lines[0]


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def fake_mini(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mini")
    write_mini(root)
    return root


@pytest.fixture(scope="module")
def mini_cache(tmp_path_factory) -> Path:
    """One cache for the end-to-end runs: only the first converts the fake set."""
    return tmp_path_factory.mktemp("mini_cache")


def _run_args(fake: Path, cache: Path) -> list[str]:
    return [
        "dataset=mini_imagenet",
        f"dataset.root={fake}",
        f"paths.cache_dir={cache}",
        "dataset.queries=2",
        "backbone.hidden=8",
        *TINY,
        "logger=csv",
        "pixel_baseline=false",
    ]


def test_protonet_trains_on_mini_imagenet_end_to_end(fake_mini, mini_cache, tmp_path):
    proc = train_cli(tmp_path / "run", *_run_args(fake_mini, mini_cache))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = assert_results_are_the_episode_means(tmp_path / "run")
    assert results["test/episodes"] == 10
    assert len(list(mini_cache.glob("mini_imagenet_*.pt"))) == 3


@pytest.mark.skipif(
    not (Path(CONF_DIR) / "algorithm" / "maml.yaml").is_file(),
    reason="conf/algorithm/maml.yaml is not there yet (added by another change)",
)
def test_maml_trains_on_mini_imagenet_end_to_end(fake_mini, mini_cache, tmp_path):
    proc = train_cli(
        tmp_path / "run",
        *_run_args(fake_mini, mini_cache),
        "algorithm=maml",
        "algorithm.meta_batch=2",
        "algorithm.eval_inner_steps=1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test/episodes"] == 10


@pytest.mark.parametrize("backbone", ["conv4", "resnet12"])
@pytest.mark.parametrize("dataset, size", [("cifar_fs", 32), ("mini_imagenet", 84)])
def test_backbones_take_three_channel_benchmark_images(backbone, dataset, size):
    overrides = [f"dataset={dataset}", f"backbone={backbone}"]
    overrides += ["backbone.hidden=8"] if backbone == "conv4" else ["backbone.channels=[4,4,4,4]"]
    cfg = compose(overrides)
    assert input_shape(cfg.dataset) == (3, size, size)
    spec = {k: v for k, v in cfg.backbone.items() if k != "name"}
    net = hydra.utils.instantiate(spec, in_shape=input_shape(cfg.dataset), out_dim=5)
    out = net(torch.rand(2, 3, size, size))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


# ----------------------------------------------------------------------------- augmentation


def _batch(n: int = 6, size: int = 12) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_augment_keeps_shapes_and_range_and_disabled_is_identity():
    x = _batch()
    assert torch.equal(augment(x, _gen()), x)
    out = augment(x, _gen(), crop_padding=3, flip=True, color_jitter=0.4)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert build_augment(None) is None and build_augment({}) is None
    assert build_augment({"crop_padding": 0, "flip": False, "color_jitter": 0}) is None


def test_flip_and_crop_move_pixels_as_specified():
    x = _batch(n=64)
    flipped = augment(x, _gen(), flip=True)
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and 10 < int(mirrored.sum()) < 54  # about half
    pad = 2
    cropped = augment(x, _gen(), crop_padding=pad)
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    for img, src in zip(cropped, padded):  # each output is one window of the padded image
        windows = src.unfold(1, 12, 1).unfold(2, 12, 1)  # [C, 5, 5, 12, 12]
        match = (windows == img[:, None, None]).flatten(3).all(-1).all(0)
        assert match.any()
    assert not torch.equal(cropped, x)


def test_color_jitter_changes_colours_not_geometry():
    x = _batch()
    out = augment(x, _gen(), color_jitter=0.4)
    assert not torch.allclose(out, x)
    # brightness/contrast/saturation are per-pixel colour maps: a constant image stays constant
    flat = torch.full((4, 3, 8, 8), 0.5)
    assert (augment(flat, _gen(), color_jitter=0.4).std(dim=(2, 3)) < 1e-6).all()


def test_augment_is_deterministic_for_a_seed():
    x = _batch()
    settings = {"crop_padding": 4, "flip": True, "color_jitter": 0.4}
    assert torch.equal(augment(x, _gen(3), **settings), augment(x, _gen(3), **settings))
    assert not torch.equal(augment(x, _gen(3), **settings), augment(x, _gen(4), **settings))
    assert Augment(4, True, 0.4)(x, _gen(3)).equal(augment(x, _gen(3), **settings))


@pytest.mark.parametrize(
    "block, key",
    [
        ({"crop_padding": -1}, "dataset.augment.crop_padding"),
        ({"crop_padding": 2.5}, "dataset.augment.crop_padding"),
        ({"flip": "sometimes"}, "dataset.augment.flip"),
        ({"color_jitter": 1.5}, "dataset.augment.color_jitter"),
        ({"color_jitter": "lots"}, "dataset.augment.color_jitter"),
        ({"rotate": 90}, "dataset.augment.rotate"),
    ],
)
def test_bad_augmentation_values(block, key):
    with pytest.raises(ConfigError, match=f"^{key}="):
        build_augment(block)


def test_training_episodes_only_are_augmented_deterministically(fake_mini, tmp_path):
    def datamodule(*overrides):
        cfg = compose(
            [
                "dataset=mini_imagenet",
                f"dataset.root={fake_mini}",
                f"paths.cache_dir={tmp_path}",
                "dataset.queries=2",
                "algorithm.meta_batch=2",
                "test_episodes=4",
                "val_episodes=4",
                *overrides,
            ]
        )
        dm = build_datamodule(cfg)
        dm.load()
        return dm

    on, again, off = datamodule(), datamodule(), datamodule("dataset.augment=null")
    assert torch.equal(on.train_episodes(3).query_x, again.train_episodes(3).query_x)
    assert not torch.equal(on.train_episodes(3).query_x, off.train_episodes(3).query_x)
    assert torch.equal(on.train_episodes(3).query_y, off.train_episodes(3).query_y)
    ids = on.eval_ids("test")[0]
    assert torch.equal(
        on.eval_episodes("test", ids).query_x, off.eval_episodes("test", ids).query_x
    )
    # ranks share the same augmented tasks
    on.rank, on.world = 1, 2
    assert torch.equal(on.train_episodes(3).query_x, again.train_episodes(3).query_x[1:])


def test_bad_augmentation_stops_before_the_data_is_read(tmp_path):
    cfg = compose(
        ["dataset=cifar_fs", f"dataset.root={tmp_path}/absent", "dataset.augment.flip=maybe"]
    )
    with pytest.raises(ConfigError, match="^dataset.augment.flip=maybe"):
        build_datamodule(cfg).load()
    assert not os.path.exists(tmp_path / "absent")
