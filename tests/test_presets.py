"""Paper presets (conf/experiment/): each composes with the published settings it cites, and
each runs end to end for a few steps on the local data (the real small Omniglot sets, a tiny fake
mini-ImageNet in its real pickle format, the sinusoid generator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from conftest import OMNIGLOT_ARGS, OMNIGLOT_SMALL, TINY, compose_train, needs_omniglot, run_cli
from metalab.config import CONF_DIR
from test_zoo import write_mini

PRESETS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))

# The settings each preset must hold, as the papers (and the authors' code) state them.
PAPER = {
    "maml_omniglot_5w1s": {
        "dataset.name": "omniglot", "algorithm.name": "maml", "backbone.name": "conv4",
        "dataset.ways": 5, "dataset.shots": 1, "dataset.rotations": True,
        "dataset.split": "classes", "algorithm.inner_lr": 0.4, "algorithm.inner_steps": 1,
        "algorithm.eval_inner_steps": 3, "algorithm.meta_batch": 32,
        "algorithm.first_order": False, "algorithm.optimizer.lr": 1e-3,
        "algorithm.optimizer._target_": "torch.optim.Adam", "backbone.hidden": 64,
        "backbone.max_pool": False,
    },
    "maml_omniglot_20w1s": {
        "dataset.name": "omniglot", "algorithm.name": "maml", "dataset.ways": 20,
        "dataset.train_ways": 20, "dataset.shots": 1, "dataset.rotations": True,
        "algorithm.inner_lr": 0.1, "algorithm.inner_steps": 5, "algorithm.eval_inner_steps": 5,
        "algorithm.meta_batch": 16, "algorithm.optimizer.lr": 1e-3, "backbone.hidden": 64,
        "backbone.max_pool": False,
    },
    "maml_mini_imagenet_5w1s": {
        "dataset.name": "mini_imagenet", "algorithm.name": "maml", "dataset.ways": 5,
        "dataset.shots": 1, "dataset.train_queries": 15, "dataset.augment": None,
        "algorithm.inner_lr": 0.01, "algorithm.inner_steps": 5,
        "algorithm.eval_inner_steps": 10, "algorithm.meta_batch": 4,
        "algorithm.optimizer.lr": 1e-3, "backbone.hidden": 32, "backbone.max_pool": True,
    },
    "reptile_omniglot_5w1s": {
        "dataset.name": "omniglot", "algorithm.name": "reptile", "dataset.ways": 5,
        "dataset.shots": 1, "dataset.train_shots": 10, "dataset.rotations": True,
        "algorithm.inner_optimizer": "adam", "algorithm.inner_lr": 1e-3,
        "algorithm.inner_betas": [0.0, 0.999], "algorithm.inner_steps": 5,
        "algorithm.inner_batch": 10, "algorithm.eval_inner_steps": 50,
        "algorithm.meta_batch": 5, "algorithm.optimizer.lr": 1.0,
        "algorithm.scheduler.start_factor": 1.0, "algorithm.scheduler.end_factor": 0.0,
        "backbone.hidden": 64, "backbone.max_pool": False,
    },
    "protonet_omniglot_5w1s": {
        "dataset.name": "omniglot", "algorithm.name": "protonet", "dataset.ways": 5,
        "dataset.shots": 1, "dataset.train_ways": 60, "dataset.train_shots": 1,
        "dataset.train_queries": 5, "dataset.rotations": True, "algorithm.meta_batch": 1,
        "algorithm.optimizer.lr": 1e-3, "algorithm.scheduler.step_size": 2000,
        "algorithm.scheduler.gamma": 0.5, "backbone.hidden": 64, "backbone.max_pool": True,
    },
    "maml_sinusoid": {
        "dataset.name": "sinusoid", "algorithm.name": "maml", "backbone.name": "mlp",
        "dataset.shots": 10, "algorithm.inner_lr": 0.01, "algorithm.inner_steps": 1,
        "algorithm.meta_batch": 25, "algorithm.optimizer.lr": 1e-3, "backbone.hidden": [40, 40],
    },
    "anil_omniglot_20w1s": {
        "dataset.name": "omniglot", "algorithm.name": "anil", "backbone.name": "conv4",
        "dataset.ways": 20, "dataset.shots": 1, "dataset.rotations": True,
        "algorithm.inner_lr": 0.1, "algorithm.inner_steps": 5, "algorithm.eval_inner_steps": 5,
        "algorithm.meta_batch": 16, "algorithm.first_order": False,
        "algorithm.optimizer.lr": 1e-3, "backbone.hidden": 64, "backbone.max_pool": False,
    },
    "metaoptnet_mini_imagenet_5w1s": {
        "dataset.name": "mini_imagenet", "algorithm.name": "metaoptnet",
        "backbone.name": "resnet12", "backbone.channels": [64, 160, 320, 640],
        "dataset.ways": 5, "dataset.shots": 1, "dataset.queries": 15, "dataset.train_shots": 15,
        "dataset.train_queries": 6, "algorithm.c": 0.1, "algorithm.dual_ridge": 1.0,
        "algorithm.max_iter": 15, "algorithm.meta_batch": 8,
        "algorithm.optimizer._target_": "torch.optim.SGD", "algorithm.optimizer.lr": 0.1,
        "algorithm.optimizer.momentum": 0.9, "algorithm.optimizer.nesterov": True,
        "algorithm.optimizer.weight_decay": 5e-4,
    },
    "r2d2_mini_imagenet_5w1s": {
        "dataset.name": "mini_imagenet", "algorithm.name": "r2d2", "backbone.name": "resnet12",
        "backbone.channels": [64, 160, 320, 640], "dataset.ways": 5, "dataset.shots": 1,
        "dataset.train_shots": 15, "dataset.train_queries": 6, "algorithm.lam": 50.0,
        "algorithm.learn_lam": True, "algorithm.meta_batch": 8,
        "algorithm.optimizer._target_": "torch.optim.SGD", "algorithm.optimizer.lr": 0.1,
    },
    "matching_omniglot_5w1s": {
        "dataset.name": "omniglot", "algorithm.name": "matching", "backbone.name": "conv4",
        "dataset.ways": 5, "dataset.shots": 1, "dataset.rotations": True, "algorithm.fce": False,
        "backbone.hidden": 64, "backbone.max_pool": True,
    },
    "relation_omniglot_5w1s": {
        "dataset.name": "omniglot", "algorithm.name": "relation", "backbone.name": "conv4",
        "dataset.ways": 5, "dataset.shots": 1, "dataset.train_queries": 19,
        "dataset.rotations": True, "algorithm.hidden": 8, "algorithm.optimizer.lr": 1e-3,
        "algorithm.scheduler.step_size": 100000, "algorithm.scheduler.gamma": 0.5,
        "backbone.hidden": 64,
    },
}
# Top-level run settings of the presets (outer iterations, test episodes).
PAPER_RUN = {
    "maml_omniglot_5w1s": {"steps": 60000, "test_episodes": 600},
    "maml_omniglot_20w1s": {"steps": 60000, "test_episodes": 600},
    "maml_mini_imagenet_5w1s": {"steps": 60000, "test_episodes": 600},
    "reptile_omniglot_5w1s": {"steps": 100000, "test_episodes": 10000},
    "protonet_omniglot_5w1s": {"steps": 20000, "test_episodes": 1000},
    "maml_sinusoid": {"steps": 70000, "test_episodes": 600},
    "anil_omniglot_20w1s": {"steps": 60000, "test_episodes": 600},
    "metaoptnet_mini_imagenet_5w1s": {"steps": 60000, "test_episodes": 1000},
    "r2d2_mini_imagenet_5w1s": {"steps": 60000, "test_episodes": 1000},
    "matching_omniglot_5w1s": {"steps": 20000, "test_episodes": 1000},
    "relation_omniglot_5w1s": {"steps": 1000000, "test_episodes": 1000},
}

# A few steps, a few fixed episodes: the presets' budgets shrunk for the default suite.
BUDGET = [*TINY, "steps=2", "val_every=2", "val_episodes=2", "test_episodes=4", "eval_batch=2",
          "logger=csv"]


def composed(name: str, overrides=()) -> dict:
    """The preset's config as metalab-train composes it: groups resolved, plus the top level."""
    cfg = compose_train([f"experiment={name}", *overrides])
    out = {k: v for k, v in OmegaConf.to_container(cfg).items() if not isinstance(v, dict)}
    for group in ("dataset", "algorithm", "backbone"):
        out[group] = OmegaConf.to_container(cfg[group], resolve=True)
    return out


def select(cfg: dict, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def test_every_preset_has_its_paper_settings_listed_here():
    assert PRESETS, "conf/experiment/ holds no presets"
    assert set(PRESETS) == set(PAPER) == set(PAPER_RUN)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_a_global_diff_that_cites_its_source(name):
    text = (Path(CONF_DIR) / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert "Source:" in text and "arXiv:" in text  # the paper it reproduces
    defaults = yaml.safe_load(text)["defaults"]
    # group choices as `override /group: option`, or another preset it extends
    assert defaults and all(
        (isinstance(d, dict) and all(k.startswith("override /") for k in d))
        or d in (*PRESETS, "_self_") for d in defaults), defaults


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_with_the_paper_settings(name):
    cfg = composed(name)
    wrong = {key: (select(cfg, key), want) for key, want in PAPER[name].items()
             if select(cfg, key) != want}
    assert not wrong, f"{name}: key: (composed, paper): {wrong}"


@pytest.mark.parametrize("name", PRESETS)
def test_preset_sets_the_paper_run_length(name):
    cfg = composed(name)
    assert {key: cfg[key] for key in PAPER_RUN[name]} == PAPER_RUN[name]


def test_command_line_overrides_a_preset():
    cfg = composed("maml_omniglot_5w1s", ["algorithm.inner_lr=0.1", "dataset.ways=20"])
    assert cfg["algorithm"]["inner_lr"] == 0.1 and cfg["dataset"]["ways"] == 20
    assert cfg["algorithm"]["meta_batch"] == 32  # the rest of the preset stays


def local_data(cfg: dict, root: Path) -> list[str]:
    """Overrides that point a preset at the data there is here (fakes under ``root``) and
    shrink its model; presets that get the same overrides share one process."""
    dataset = cfg["dataset"]["name"]
    # the dataset choice as well: a multirun checks its fixed overrides before the presets apply
    if dataset == "omniglot":
        data = ["dataset=omniglot", *OMNIGLOT_ARGS]
    elif dataset == "mini_imagenet":  # 5 classes of 4 images per split: 1 shot + 3 queries
        if not (root / "mini").is_dir():
            write_mini(root / "mini")
        data = ["dataset=mini_imagenet", f"dataset.root={root / 'mini'}",
                f"paths.cache_dir={root / 'cache'}", "dataset.queries=1", "dataset.train_queries=3",
                "dataset.train_shots=1"]
    elif dataset == "sinusoid":
        data = []
    else:
        raise AssertionError(f"dataset={dataset}: no local data for it here; add it")
    small = {"conv4": ["backbone.hidden=8"],
             "resnet12": ["backbone=resnet12", "backbone.channels=[8,8,8,8]"],
             }.get(cfg["backbone"]["name"], [])
    return [*data, *small, "algorithm.meta_batch=2"]


def runnable(name: str) -> bool:
    return "omniglot" not in name or OMNIGLOT_SMALL.is_dir()


@pytest.fixture(scope="module")
def preset_runs(tmp_path_factory) -> dict[str, tuple]:
    """Every preset run once through metalab-train (run_cli as train_cli, with `-m` first, which
    Hydra's parser wants before the overrides): name -> (process, run folder, overrides).
    Presets on the same data run as one multirun (`-m experiment=a,b`): a process spends most
    of a tiny run importing and warming up, and a failed job leaves <job>/error.txt. One thread:
    on a loaded 2-core machine two threads per process run several times slower."""
    root = tmp_path_factory.mktemp("presets")
    groups: dict[tuple, list[str]] = {}
    for name in filter(runnable, PRESETS):
        groups.setdefault(tuple(local_data(composed(name), root)), []).append(name)
    runs = {}
    for i, (overrides, names) in enumerate(groups.items()):
        sweep = root / f"group{i}"
        proc = run_cli("train", "-m", f"experiment={','.join(names)}", *overrides, *BUDGET,
                       f"hydra.sweep.dir={sweep}",
                       "hydra.sweep.subdir=${hydra.runtime.choices.experiment}",
                       env={"OMP_NUM_THREADS": "1"})
        runs.update({name: (proc, sweep / name, list(overrides)) for name in names})
    return runs


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=needs_omniglot) if "omniglot" in n else n for n in PRESETS])
def test_preset_runs_a_few_steps_on_local_data(name, preset_runs):
    proc, run_dir, overrides = preset_runs[name]
    assert proc.returncode == 0, proc.stderr[-3000:]
    error = run_dir / "error.txt"
    assert not error.exists(), error.read_text()[-3000:]
    assert (run_dir / "results.json").is_file(), proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["test/episodes"] == 4
    ran = yaml.safe_load((run_dir / "config.yaml").read_text())
    metric = "test/mse" if ran["dataset"]["task"] == "regression" else "test/acc"
    assert results[metric] >= 0 and results[f"{metric}_ci95"] >= 0
    # the run used the preset: its resolved config holds the preset's settings
    shrunk = {o.split("=")[0] for o in overrides}
    for key, want in PAPER[name].items():
        if key not in shrunk:
            assert select(ran, key) == want, key
