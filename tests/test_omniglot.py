"""The Omniglot loader: real small sets (zip and folder), splits, rotations, cache, errors."""

from __future__ import annotations

import io
import os
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import compose
from metalab.data.omniglot import load_omniglot, reading
from metalab.errors import ConfigError

SMALL = (Path(__file__).parents[1] / "../shared/data/omniglot-small").resolve()
SMALL1, SMALL2 = "images_background_small1", "images_background_small2"
needs_small = pytest.mark.skipif(
    not (SMALL / f"{SMALL1}.zip").is_file() or not (SMALL / f"{SMALL2}.zip").is_file(),
    reason=f"real Omniglot small sets not found at {SMALL} (shared data folder absent)",
)
SMALL1_ALPHABETS = {"Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"}
TEST_ALPHABETS = {"Japanese_(katakana)", "Sanskrit", "Tagalog"}


def _chars_in_zip(name: str) -> Counter:
    """Images per ``alphabet/character`` in a small zip, read independently of the loader."""
    with zipfile.ZipFile(SMALL / f"{name}.zip") as zf:
        return Counter("/".join(n.split("/")[1:3]) for n in zf.namelist() if n.endswith(".png"))


def _alphabets(split) -> set[str]:
    return {c.split("/")[0].split("@")[0] for c in split.class_names}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the real-data tests: the two zips are decoded once per test session."""
    return tmp_path_factory.mktemp("omniglot_cache")


@pytest.fixture(scope="module")
def small(cache_dir):
    return load_omniglot(str(SMALL), str(cache_dir), [SMALL1], [SMALL2])


# ----------------------------------------------------------------------------- tiny fake sets


def _png(seed: int) -> bytes:
    """A 105x105 1-bit PNG like the authors': a black stroke on white."""
    rng = np.random.default_rng(seed)
    arr = np.ones((105, 105), dtype=bool)
    r, c = rng.integers(10, 60, size=2)
    arr[r : r + 40, c : c + 6] = False
    arr[r : r + 6, c : c + 35] = False
    img = Image.fromarray(arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _write_set(folder: Path, alphabets: dict[str, int], drawers: int = 2, seed: int = 0) -> None:
    """``<folder>/<alphabet>/characterNN/<drawer>_NN.png`` in the real layout."""
    k = seed
    for alphabet, n_chars in alphabets.items():
        for c in range(1, n_chars + 1):
            d = folder / alphabet / f"character{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for j in range(1, drawers + 1):
                (d / f"{1000 + k:04d}_{j:02d}.png").write_bytes(_png(k * 31 + j))
            k += 1


# ----------------------------------------------------------------------------- real small sets


@needs_small
def test_alphabet_split_on_small_sets(small):
    small1, small2 = _chars_in_zip(SMALL1), _chars_in_zip(SMALL2)
    assert len(small1) == 136  # README
    test_chars = {c for c in small2 if c.split("/")[0] in TEST_ALPHABETS}

    assert _alphabets(small.test) == TEST_ALPHABETS  # Greek and Latin are in both: not test
    assert set(small.test.class_names) == test_chars
    assert small.test.n_classes == len(test_chars) == 106
    assert _alphabets(small.train) | _alphabets(small.val) == SMALL1_ALPHABETS
    assert not _alphabets(small.train) & _alphabets(small.val)
    assert len(_alphabets(small.val)) == 1  # default: round(5 / 6), leaving 4 for train
    assert set(small.train.class_names) | set(small.val.class_names) == set(small1)
    assert small.train.n_classes + small.val.n_classes == 136

    for split in (small.train, small.val, small.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 28, 28)
        assert split.labels.dtype == torch.int64
        assert split.labels.unique().tolist() == list(range(split.n_classes))
        assert (split.samples_per_class() == 20).all()
        assert "/character" in split.class_names[0]
        # Bright strokes on a dark background: mostly black, full-white stroke pixels, dark border.
        x = split.images.float() / 255
        assert x.mean() < 0.2 and split.images.max() == 255
        assert split.images[..., 0, :].float().mean() < 20

    x = small.train.images.double() / 255
    assert small.mean[0] == pytest.approx(x.mean().item(), abs=1e-6)
    assert small.std[0] == pytest.approx(x.std(unbiased=False).item(), abs=1e-6)


@needs_small
def test_folder_gives_the_same_tensors_as_zip(small, tmp_path):
    with zipfile.ZipFile(SMALL / f"{SMALL1}.zip") as zf:
        zf.extractall(tmp_path / "root")
    (tmp_path / "root" / f"{SMALL2}.zip").symlink_to(SMALL / f"{SMALL2}.zip")
    assert (tmp_path / "root" / SMALL1 / "Greek").is_dir()
    unpacked = load_omniglot(str(tmp_path / "root"), str(tmp_path / "cache"), [SMALL1], [SMALL2])
    for name in ("train", "val", "test"):
        a, b = small.split(name), unpacked.split(name)
        assert a.class_names == b.class_names
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert unpacked.mean == small.mean and unpacked.std == small.std


@needs_small
def test_cache_is_reused(small, cache_dir, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("rebuilt a cached set")

    monkeypatch.setattr(reading, "build_set", boom)
    again = load_omniglot(str(SMALL), str(cache_dir), [SMALL1], [SMALL2])
    assert torch.equal(again.train.images, small.train.images)
    assert again.test.class_names == small.test.class_names


@needs_small
def test_rotations_quadruple_train_classes(small, cache_dir):
    rot = load_omniglot(str(SMALL), str(cache_dir), [SMALL1], [SMALL2], rotations=True)
    c = small.train.n_classes
    assert rot.train.n_classes == 4 * c and len(rot.train.images) == 4 * len(small.train.images)
    assert rot.val.n_classes == small.val.n_classes and rot.test.n_classes == small.test.n_classes
    assert rot.train.class_names[:c] == small.train.class_names
    for k, deg in enumerate((90, 180, 270), start=1):
        name = f"{small.train.class_names[7]}@rot{deg}"
        label = rot.train.class_names.index(name)
        rotated = rot.train.images[rot.train.labels == label]
        original = small.train.images[small.train.labels == 7]
        assert torch.equal(rotated, torch.rot90(original, k, dims=(-2, -1)))
    assert rot.mean == pytest.approx(small.mean) and rot.std == pytest.approx(small.std)

    every = load_omniglot(
        str(SMALL),
        str(cache_dir),
        [SMALL1],
        [SMALL2],
        rotations=True,
        rotate_splits=["train", "test"],
    )
    assert every.test.n_classes == 4 * small.test.n_classes
    assert every.val.n_classes == small.val.n_classes


@needs_small
def test_classes_split(cache_dir):
    both = [SMALL1, SMALL2]
    ds = load_omniglot(str(SMALL), str(cache_dir), both, [], split="classes")
    n = len(set(_chars_in_zip(SMALL1)) | set(_chars_in_zip(SMALL2)))
    assert n == 242  # 136 + 156 - the 50 Greek and Latin characters in both
    # 1100 / 100 / 423 of 1623, scaled: round(242 * 1100 / 1623), round(242 * 100 / 1623), rest
    assert (ds.train.n_classes, ds.val.n_classes, ds.test.n_classes) == (164, 15, 63)
    names = [set(ds.split(s).class_names) for s in ("train", "val", "test")]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    assert len(set.union(*names)) == n

    same = load_omniglot(str(SMALL), str(cache_dir), [SMALL1], [SMALL2], split="classes")
    assert same.train.class_names == ds.train.class_names  # fixed seed, same characters

    sized = load_omniglot(
        str(SMALL),
        str(cache_dir),
        both,
        [],
        split="classes",
        n_train_classes=100,
        n_val_classes=20,
        split_seed=1,
    )
    assert (sized.train.n_classes, sized.val.n_classes, sized.test.n_classes) == (100, 20, 122)
    assert sized.train.class_names != ds.train.class_names[:100]
    with pytest.raises(ConfigError, match="n_train_classes"):
        load_omniglot(str(SMALL), str(cache_dir), both, [], split="classes", n_train_classes=242)


@needs_small
def test_evaluation_without_new_alphabets_is_an_error(cache_dir):
    with pytest.raises(ConfigError, match="no test alphabets") as err:
        load_omniglot(str(SMALL), str(cache_dir), [SMALL1, SMALL2], [SMALL1])
    assert err.value.key == "dataset.evaluation"
    with pytest.raises(ConfigError, match="val_alphabets"):
        load_omniglot(str(SMALL), str(cache_dir), [SMALL1], [SMALL2], val_alphabets=5)


@needs_small
def test_hydra_config_instantiates(cache_dir):
    from hydra.utils import instantiate

    from metalab.data.datamodule import loader_arguments

    cfg = compose(
        [
            "dataset=omniglot",
            f"dataset.root={SMALL}",
            f"dataset.background=[{SMALL1}]",
            f"dataset.evaluation=[{SMALL2}]",
            f"paths.cache_dir={cache_dir}",
        ]
    )
    for key in ("name", "task", "channels", "image_size", "ways", "shots", "queries", "load"):
        assert key in cfg.dataset
    ds = instantiate(cfg.dataset.load, **loader_arguments(cfg.dataset))
    assert ds.test.n_classes == 106 and cfg.dataset.train_ways == 5


# ----------------------------------------------------------------------------- errors, download


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_omniglot(str(tmp_path), str(tmp_path / "cache"), ["images_background"], [])
    msg = str(err.value)
    assert "\n" not in msg and err.value.key == "dataset.root"
    assert "no Omniglot set 'images_background' found" in msg
    for where in (
        tmp_path / "images_background",
        tmp_path / "images_background.zip",
        tmp_path / "omniglot-py" / "images_background",
    ):
        assert str(where) in msg
    assert "dataset.download=true" in msg and "github.com/brendenlake/omniglot" in msg


def test_bad_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="alphabets, classes") as err:
        load_omniglot(str(tmp_path), str(tmp_path), ["images_background"], [], split="chars")
    assert err.value.key == "dataset.split"
    with pytest.raises(ConfigError) as err:
        load_omniglot(str(tmp_path), str(tmp_path), ["b"], [], rotate_splits=["training"])
    assert err.value.key == "dataset.rotate_splits"


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeOmniglot:
        def __init__(self, root, background=True, download=False, **kwargs):
            calls.append((root, background, download))
            name = "images_background" if background else "images_evaluation"
            letters = {"Alpha": 2, "Beta": 2} if background else {"Gamma": 3}
            _write_set(Path(root) / "omniglot-py" / name, letters, seed=10 * len(calls))

    monkeypatch.setattr(torchvision.datasets, "Omniglot", FakeOmniglot)
    root = tmp_path / "omniglot"
    ds = load_omniglot(
        str(root),
        str(tmp_path / "cache"),
        ["images_background"],
        ["images_evaluation"],
        download=True,
    )
    assert calls == [(str(root), True, True), (str(root), False, True)]
    assert ds.test.class_names == [f"Gamma/character{i:02d}" for i in (1, 2, 3)]
    assert ds.train.n_classes + ds.val.n_classes == 4 and ds.val.n_classes == 2
    assert (ds.train.samples_per_class() == 2).all()

    # Present now: a second call finds the sets and downloads nothing.
    load_omniglot(
        str(root),
        str(tmp_path / "cache"),
        ["images_background"],
        ["images_evaluation"],
        download=True,
    )
    assert len(calls) == 2
    # A set torchvision does not provide cannot be downloaded: the error says so.
    with pytest.raises(ConfigError, match="only fetches"):
        load_omniglot(
            str(root), str(tmp_path / "cache"), ["images_background_small1"], [], download=True
        )


def test_corrupt_zip_and_png_name_the_file(tmp_path):
    bad = tmp_path / "images_background.zip"
    bad.write_bytes(b"this is not a zip file" * 10)
    with pytest.raises(ConfigError, match="not a readable zip") as err:
        load_omniglot(str(tmp_path), str(tmp_path / "cache"), ["images_background"], [])
    assert str(bad) in str(err.value)

    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("images_background/Alpha/character01/0001_01.png", _png(1))
        zf.writestr("images_background/Alpha/character01/0001_02.png", b"\x89PNG broken")
    with pytest.raises(ConfigError, match="corrupt") as err:
        load_omniglot(str(tmp_path), str(tmp_path / "cache"), ["images_background"], [])
    assert f"{bad}:images_background/Alpha/character01/0001_02.png" in str(err.value)


def test_changed_source_is_rebuilt(tmp_path, monkeypatch):
    root = tmp_path / "root"
    _write_set(root / "images_background", {"Alpha": 2, "Beta": 1, "Delta": 1})
    _write_set(root / "images_evaluation", {"Gamma": 2}, seed=50)
    args = (str(root), str(tmp_path / "cache"), ["images_background"], ["images_evaluation"])
    first = load_omniglot(*args, image_size=14)
    assert first.train.images.shape[-2:] == (14, 14)

    built = []
    real = reading.build_set
    monkeypatch.setattr(reading, "build_set", lambda *a: built.append(a[0].name) or real(*a))
    load_omniglot(*args, image_size=14)
    assert built == []  # unchanged: all from the cache
    png = root / "images_evaluation" / "Gamma" / "character01" / "1050_01.png"
    png.write_bytes(_png(999))
    st = png.stat()
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = load_omniglot(*args, image_size=14)
    assert built == ["images_evaluation"]  # only the changed set is decoded again
    assert not torch.equal(changed.test.images, first.test.images)
    load_omniglot(*args, image_size=20)
    assert built == ["images_evaluation", "images_background", "images_evaluation"]


def test_empty_evaluation_is_an_error_for_the_alphabet_split(tmp_path):
    _write_set(tmp_path / "images_background", {"Alpha": 1, "Beta": 1})
    with pytest.raises(ConfigError, match="is empty") as err:
        load_omniglot(str(tmp_path), str(tmp_path / "cache"), ["images_background"], [])
    assert err.value.key == "dataset.evaluation"
