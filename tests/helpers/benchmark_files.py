"""Tiny fake copies of each zoo benchmark, written in the real on-disk format learn2learn reads."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from metalab.data.zoo.common import learn2learn_datasets

PER_CLASS = 4  # images per class in the fakes: 1 shot + 3 queries at most
# Real class names where the fakes name classes (mini-ImageNet's Ravi split; CIFAR-100).
MINI = {
    "train": ["n01532829", "n01558993", "n01704323", "n01749939", "n01770081"],
    "validation": ["n01855672", "n02091244", "n02114548", "n02138441", "n02174001"],
    "test": ["n01930112", "n01981276", "n02099601", "n02110063", "n02110341"],
}
CIFAR = {
    "train": ["apple", "aquarium_fish", "baby", "bear", "beaver"],
    "val": ["otter", "porcupine", "possum", "raccoon", "ray"],
    "test": ["bed", "bee", "beetle", "bicycle", "bottle"],
}
FC100_LABELS = {
    "train": [0, 9, 10, 16, 28],
    "val": [1, 32, 67, 73, 91],
    "test": [3, 42, 43, 88, 97],
}
OURS = {"train": "train", "validation": "val", "test": "test"}


def fake_image(label: int, k: int, h: int, w: int | None = None) -> np.ndarray:
    """A ``uint8 [h, w, 3]`` image: a per-class colour plus per-image noise."""
    rng = np.random.default_rng(1000 * label + k)
    base = np.array([37 * label % 256, 91 * label % 256, 53 * label % 256])
    noise = rng.integers(-40, 41, size=(h, w or h, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def encoded(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


def dump(path: Path, value, protocol: int = 4) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(value, protocol=protocol))


# ----------------------------------------------------------------------------- fake benchmarks


def write_mini(root: Path) -> dict[str, np.ndarray]:
    """``mini-imagenet-cache-<mode>.pkl``: ``image_data [N,84,84,3]`` and ``class_dict``; the
    rows of the classes interleave (row j is class j % 5) to check the label mapping."""
    written = {}
    for offset, (mode, synsets) in enumerate(MINI.items()):
        n = len(synsets)
        rows = np.stack([fake_image(10 * offset + j % n, j, 84) for j in range(n * PER_CLASS)])
        class_dict = {s: list(range(c, n * PER_CLASS, n)) for c, s in enumerate(synsets)}
        dump(
            root / f"mini-imagenet-cache-{mode}.pkl", {"image_data": rows, "class_dict": class_dict}
        )
        written[OURS[mode]] = rows
    return written


def write_tiered(root: Path) -> dict[str, np.ndarray]:
    """``tiered-imagenet/<split>_images_png.pkl`` (PNG bytes as uint8 arrays) and
    ``<split>_labels.pkl`` with the real keys."""
    written = {}
    for offset, split in enumerate(("train", "val", "test")):
        labels = np.array([j % 5 for j in range(5 * PER_CLASS)])
        rows = np.stack([fake_image(10 * offset + c, j, 84) for j, c in enumerate(labels)])
        pngs = [np.frombuffer(encoded(r, "PNG"), dtype=np.uint8) for r in rows]
        folder = root / "tiered-imagenet"
        dump(folder / f"{split}_images_png.pkl", pngs)
        dump(
            folder / f"{split}_labels.pkl",
            {
                "label_specific": labels,
                "label_general": labels // 3,
                "label_specific_str": [f"n0{offset}00{c}" for c in range(5)],
                "label_general_str": ["category_a", "category_b"],
            },
        )
        written[split] = rows
    return written


def write_cifar_fs(root: Path) -> dict[str, np.ndarray]:
    """The unzipped ``cifar100.zip``: ``cifarfs/cifar100/data/<class>/*.png`` and the split lists
    ``cifarfs/cifar100/splits/bertinetto/<split>.txt`` (learn2learn builds ``processed/``)."""
    base = root / "cifarfs" / "cifar100"
    written = {}
    for offset, (split, classes) in enumerate(CIFAR.items()):
        rows = []
        for c, name in enumerate(classes):  # ImageFolder orders classes and files by name
            for k in range(PER_CLASS):
                rows.append(fake_image(10 * offset + c, k, 32))
                (base / "data" / name).mkdir(parents=True, exist_ok=True)
                (base / "data" / name / f"{name}_s_{k:06d}.png").write_bytes(
                    encoded(rows[-1], "PNG")
                )
        (base / "splits" / "bertinetto").mkdir(parents=True, exist_ok=True)
        (base / "splits" / "bertinetto" / f"{split}.txt").write_text("\n".join(classes) + "\n")
        written[split] = np.stack(rows)
    return written


def write_fc100(root: Path) -> dict[str, np.ndarray]:
    """``FC100_<split>.pickle`` (protocol 2, as MetaOptNet's): ``data`` and CIFAR-100 fine
    ``labels``."""
    written = {}
    for split, fine in FC100_LABELS.items():
        labels = [fine[j % 5] for j in range(5 * PER_CLASS)]
        rows = np.stack([fake_image(label, j, 32) for j, label in enumerate(labels)])
        dump(root / f"FC100_{split}.pickle", {"data": rows, "labels": labels}, protocol=2)
        written[split] = rows
    return written


CUB_DUPLICATE = ("014.Indigo_Bunting", "Indigo_Bunting_0063_11820.jpg")  # a train class


def write_cub(root: Path) -> None:
    """``cubirds200/CUB_200_2011/images/<class>/*.jpg`` for all 200 classes of learn2learn's
    split (2 photos each, of different sizes, plus one ImageNet duplicate), with ``images.txt``
    and ``bounding_boxes.txt``."""
    base = root / "cubirds200" / "CUB_200_2011"
    classes = sorted(sum(learn2learn_datasets().cu_birds200.SPLITS.values(), []))
    files = []
    for c, name in enumerate(classes):
        (base / "images" / name).mkdir(parents=True)
        for k, (h, w) in enumerate(((30, 40), (44, 28))):
            files.append((f"{name}/{name[4:]}_{k:04d}_{c}.jpg", fake_image(c, k, h, w)))
    files.append(("/".join(CUB_DUPLICATE), fake_image(999, 0, 36)))
    for rel, array in files:
        (base / "images" / rel).write_bytes(encoded(array, "JPEG"))
    (base / "images.txt").write_text(
        "".join(f"{i + 1} {rel}\n" for i, (rel, _) in enumerate(files))
    )
    (base / "bounding_boxes.txt").write_text(
        "".join(f"{i + 1} 2.0 3.0 20.0 16.0\n" for i in range(len(files)))
    )


# ----------------------------------------------------------------------------- loaders
