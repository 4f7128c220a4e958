"""Finding an Omniglot set (an unpacked folder or the authors' zip) under ``root``, or downloading
a standard one through torchvision."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metalab.errors import ConfigError

# Sets that torchvision.datasets.Omniglot can download (background=True / False).
DOWNLOADABLE = {"images_background": True, "images_evaluation": False}
SOURCE_URL = "https://github.com/brendenlake/omniglot"


@dataclass(frozen=True)
class OmniglotSet:
    """Where one set was found: an unpacked folder or the authors' zip."""

    name: str
    path: Path
    is_zip: bool


def _candidates(root: Path, name: str) -> list[Path]:
    return [
        root / name,
        root / f"{name}.zip",
        root / "omniglot-py" / name,
        root / "omniglot-py" / f"{name}.zip",
    ]


def find_set(root: str | Path, name: str) -> OmniglotSet | None:
    """The first existing location of set ``name`` under ``root``, or None."""
    for path in _candidates(Path(root), name):
        if path.is_dir():
            # Tolerate a zip unpacked into a folder of its own name: <root>/<set>/<set>/<alphabet>.
            inner = path / name
            if inner.is_dir():
                path = inner
            return OmniglotSet(name, path, is_zip=False)
        if path.is_file() and path.suffix == ".zip":
            return OmniglotSet(name, path, is_zip=True)
    return None


def _missing(root: Path, name: str, download: bool) -> ConfigError:
    looked = ", ".join(str(p) for p in _candidates(root, name))
    if download:  # only reached for names torchvision cannot download
        how = (
            f"dataset.download only fetches {' and '.join(DOWNLOADABLE)}; unzip the authors' "
            f"{name}.zip from {SOURCE_URL} into {root}"
        )
    else:
        how = (
            f"set dataset.download=true on a machine with internet, or unzip the authors' "
            f"{name}.zip from {SOURCE_URL} into {root}"
        )
    return ConfigError(
        "dataset.root", root, f"no Omniglot set '{name}' found (looked in {looked}); {how}"
    )


def _download(root: Path, name: str) -> None:
    """Fetch a standard set through torchvision into ``<root>/omniglot-py/``."""
    from torchvision import datasets  # imported late: slow, and only needed here

    root.mkdir(parents=True, exist_ok=True)
    try:
        datasets.Omniglot(str(root), background=DOWNLOADABLE[name], download=True)
    except Exception as err:  # no network, bad checksum, ...: one line for the user
        raise ConfigError(
            "dataset.download",
            True,
            f"downloading Omniglot '{name}' into {root / 'omniglot-py'} failed "
            f"({type(err).__name__}: {err}); unzip the authors' {name}.zip from {SOURCE_URL} "
            f"into {root} instead",
        ) from err


def locate(root: Path, name: str, download: bool) -> OmniglotSet:
    source = find_set(root, name)
    if source is None and download and name in DOWNLOADABLE:
        _download(root, name)
        source = find_set(root, name)
    if source is None:
        raise _missing(root, name, download)
    return source
