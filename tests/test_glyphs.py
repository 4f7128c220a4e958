"""The procedural ``glyphs`` dataset: size, splits, determinism, cache and difficulty."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from metalab.data.glyphs import load_glyphs
from metalab.data.glyphs import loading as glyphs  # where the cache is chosen
from metalab.errors import ConfigError

# a small configuration for the tests that generate more than once
SMALL = dict(image_size=16, n_alphabets=10, drawers=3, min_chars=2, max_chars=3)


@pytest.fixture(scope="module")
def default(tmp_path_factory):
    cache_dir = tmp_path_factory.mktemp("glyphs-cache")
    return cache_dir, load_glyphs(str(cache_dir))


def _all_splits(ds):
    return [ds.train, ds.val, ds.test]


def test_sizes_shapes_and_dtypes(default):
    _, ds = default
    # the README's numbers: 1,377 characters in 50 alphabets, each drawn by 20 drawers, and the
    # 411 test classes its error example names; alphabets split 60/10/30% (conf/dataset/glyphs)
    assert sum(s.n_classes for s in _all_splits(ds)) == 1377
    assert [len({n.split("/")[0] for n in s.class_names}) for s in _all_splits(ds)] == [30, 5, 15]
    assert ds.test.n_classes == 411
    for split in _all_splits(ds):
        assert split.images.dtype == torch.uint8
        assert split.images.shape[1:] == (1, 28, 28)
        assert split.labels.dtype == torch.int64
        assert torch.equal(split.samples_per_class(), torch.full((split.n_classes,), 20))
        assert split.labels.min() == 0 and split.labels.max() == split.n_classes - 1
        assert len(set(split.class_names)) == split.n_classes
        # dark background, bright strokes; no blank drawings
        assert split.images.float().mean() < 60
        assert (split.images.flatten(1).amax(1) > 128).all()
    train = ds.train.images.float() / 255
    assert ds.mean[0] == pytest.approx(train.mean().item(), abs=1e-4)
    assert ds.std[0] == pytest.approx(train.std().item(), abs=1e-4)


def test_splits_are_disjoint_by_alphabet(default):
    _, ds = default
    alphabets = [{n.split("/")[0] for n in s.class_names} for s in _all_splits(ds)]
    assert all(alphabets)
    assert not alphabets[0] & alphabets[1]
    assert not alphabets[0] & alphabets[2]
    assert not alphabets[1] & alphabets[2]


def test_drawings_of_one_character_are_more_alike_than_of_different_ones(default):
    _, ds = default
    x = ds.test.images.float().div(255).flatten(1)
    g = torch.Generator().manual_seed(0)
    chars = torch.randperm(ds.test.n_classes, generator=g)[:100]
    x = x.view(ds.test.n_classes, 20, -1)[chars]  # [100, 20, P]
    within = torch.cdist(x, x).sum((1, 2)) / (20 * 19)  # mean over distinct pairs
    between = torch.cdist(x[:, 0], x.roll(1, dims=0)[:, 1])  # drawing 0 vs another char
    assert within.mean() < 0.95 * between.diagonal().mean()


def test_same_seed_is_bit_identical_and_another_seed_differs(tmp_path):
    a = load_glyphs(str(tmp_path / "a"), seed=3, **SMALL)
    b = load_glyphs(str(tmp_path / "b"), seed=3, **SMALL)
    c = load_glyphs(str(tmp_path / "c"), seed=4, **SMALL)
    for sa, sb in zip(_all_splits(a), _all_splits(b)):
        assert torch.equal(sa.images, sb.images)
        assert torch.equal(sa.labels, sb.labels)
        assert sa.class_names == sb.class_names
    assert a.mean == b.mean and a.std == b.std
    assert not torch.equal(a.train.images, c.train.images)


def test_cache_is_reused(default, monkeypatch):
    cache_dir, ds = default
    files = list(cache_dir.glob("glyphs-*.pt"))
    assert len(files) == 1

    def boom(**kwargs):
        raise AssertionError("the generator ran although the cache file exists")

    monkeypatch.setattr(glyphs, "generate", boom)
    again = load_glyphs(str(cache_dir))
    for sa, sb in zip(_all_splits(ds), _all_splits(again)):
        assert torch.equal(sa.images, sb.images)
        assert torch.equal(sa.labels, sb.labels)
    assert list(cache_dir.glob("glyphs-*.pt")) == files


def test_cache_name_changes_with_generator_version_and_parameters(tmp_path, monkeypatch):
    params = dict(seed=0, image_size=28, n_alphabets=50)
    path = glyphs.cache_path(tmp_path, **params)
    assert path.parent == tmp_path
    assert glyphs.cache_path(tmp_path, **params) == path
    assert glyphs.cache_path(tmp_path, **{**params, "seed": 1}) != path
    assert glyphs.cache_path(tmp_path, **{**params, "image_size": 32}) != path
    monkeypatch.setattr(glyphs, "GENERATOR_VERSION", glyphs.GENERATOR_VERSION + 1)
    assert glyphs.cache_path(tmp_path, **params) != path


def test_image_size_parameter(tmp_path):
    ds = load_glyphs(str(tmp_path), seed=0, **{**SMALL, "image_size": 20})
    assert ds.train.images.shape[1:] == (1, 20, 20)
    assert ds.test.images.shape[1:] == (1, 20, 20)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"image_size": 15}, "dataset.image_size"),
        ({"image_size": 28.0}, "dataset.image_size"),
        ({"n_alphabets": 2}, "dataset.load.n_alphabets"),
        ({"n_alphabets": 4, "val_fraction": 0.05}, "dataset.load.n_alphabets"),
        ({"drawers": 1}, "dataset.load.drawers"),
        ({"seed": -1}, "dataset.load.seed"),
        ({"min_chars": 1}, "dataset.load.min_chars"),
        ({"min_chars": 10, "max_chars": 5}, "dataset.load.max_chars"),
        ({"val_fraction": 0.0}, "dataset.load.val_fraction"),
        ({"test_fraction": 1.0}, "dataset.load.test_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "dataset.load.test_fraction"),
        ({"jitter": -0.5}, "dataset.load.jitter"),
    ],
)
def test_bad_arguments_raise_config_error(tmp_path, monkeypatch, kwargs, key):
    monkeypatch.setattr(glyphs, "generate", lambda **kw: pytest.fail("generated anyway"))
    with pytest.raises(ConfigError) as err:
        load_glyphs(str(tmp_path), **kwargs)
    assert err.value.key == key
    assert list(tmp_path.iterdir()) == []


def test_metalab_cache_moves_the_cache(default, tmp_path, monkeypatch):
    """METALAB_CACHE (README): every dataset's cache folder follows it, and a run's glyphs
    load from the cache file there without generating."""
    import shutil

    from helpers import compose
    from metalab.data.datamodule import load_sources
    from metalab.run.config import CONF_DIR

    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "elsewhere"))
    datasets = sorted(p.stem for p in (Path(CONF_DIR) / "dataset").glob("*.yaml"))
    for name in datasets:
        load = compose([f"dataset={name}"]).dataset.get("load") or {}  # RL: no data
        if "cache_dir" in load:
            assert load.cache_dir == str(tmp_path / "elsewhere"), name
    cache_dir, ds = default
    (cached,) = cache_dir.glob("glyphs-*.pt")
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(cached, tmp_path / "elsewhere")
    monkeypatch.setattr(glyphs, "generate", lambda **kw: pytest.fail("generated anyway"))
    sources = load_sources(compose([]).dataset)
    assert torch.equal(sources["test"].images, ds.test.images)
