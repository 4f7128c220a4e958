"""Paper presets (conf/experiment/): each composes with the published settings it cites, and
each runs end to end for a few steps on the local data (the real small Omniglot sets, a tiny fake
mini-ImageNet in its real pickle format, the sinusoid generator)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from helpers import (
    CLINC,
    OMNIGLOT_ARGS,
    OMNIGLOT_SMALL,
    SMALL_CNN,
    TINY,
    assert_results_are_the_episode_means,
    compose,
    needs_clinc,
    needs_omniglot,
    run_cli,
)
from helpers.benchmark_files import write_mini
from metalab.run.config import CONF_DIR

PRESETS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))

# The settings each preset must hold, each with the sentence of the preset's comment that cites
# it from the paper (or the authors' code) and the words of that sentence that state the value:
# key: (cited sentence, words stating the value, or the value itself where no number is cited).
# The test reads the number from those words, so a preset that drifts from its citation fails.
FROM = {"1e-3 code": ("Adam (meta_lr 0.001 in the code)", "0.001")}
# The MAML paper's settings of all its RL experiments (5.3, A.2), and of its cheetah tasks.
MAML_RL = {
    "backbone.name": ("two hidden layers of size 100, with ReLU nonlinearities", "policy"),
    "backbone.hidden": ("two hidden layers of size 100, with ReLU", [100, 100]),
    "algorithm.inner_lr": ("trained using a single gradient step with alpha = 0.1", "0.1"),
    "algorithm.inner_steps": ("trained using a single gradient step", 1),
    "algorithm.first_order": ("finite differences to compute the Hessian-vector", False),
    "steps": ("trained for up to 500 meta-iterations", "500"),
}
CHEETAH = {
    "dataset.shots": ("The horizon is H = 200, with 20 rollouts per gradient step", "20"),
    "dataset.queries": ("The horizon is H = 200, with 20 rollouts per gradient step", "20"),
    "dataset.env.horizon": ("The horizon is H = 200", "200"),
    "algorithm.meta_batch": ("we used a meta batch size of 40 tasks", "40"),
    "algorithm.eval_inner_steps": ("Figure 5 plots the return after 0 to 3 gradient steps", "3"),
}
PAPER = {
    "maml_omniglot_5w1s": {
        "dataset.name": ("Omniglot images downsampled to 28x28", "omniglot"),
        "algorithm.name": ("MAML, Omniglot 5-way 1-shot", "maml"),
        "backbone.name": ("4 modules of 3x3 conv with 64 filters", "conv4"),
        "dataset.ways": ("MAML, Omniglot 5-way 1-shot", "5"),
        "dataset.shots": ("the code samples 1 support + 1 query image per class", "1"),
        "dataset.queries": ("the code samples 1 support + 1 query image per class", "1"),
        "dataset.rotations": ("classes augmented with rotations by multiples of 90 degrees", True),
        "dataset.split": ("that is split=classes", "classes"),
        "algorithm.inner_lr": (
            "5-way models trained with 1 gradient step of size alpha = 0.4",
            "0.4",
        ),
        "algorithm.inner_steps": ("5-way models trained with 1 gradient step", "1"),
        "algorithm.eval_inner_steps": ("evaluated with 3 gradient steps of the same size", "3"),
        "algorithm.meta_batch": ("a meta-batch of 32 tasks", "32"),
        "algorithm.first_order": ("MAML, Omniglot 5-way 1-shot", False),
        "algorithm.optimizer.lr": FROM["1e-3 code"],
        "algorithm.optimizer._target_": ("Adam (meta_lr 0.001 in the code)", "torch.optim.Adam"),
        "backbone.hidden": ("4 modules of 3x3 conv with 64 filters", "64"),
        "backbone.max_pool": ("we used strided convolutions instead of max-pooling", False),
        "steps": ("60,000 iterations", "60,000"),
        "test_episodes": ("and tests on 600 tasks", "600"),
    },
    "maml_omniglot_20w1s": {
        "dataset.name": ("MAML, Omniglot 20-way 1-shot", "omniglot"),
        "algorithm.name": ("MAML, Omniglot 20-way 1-shot", "maml"),
        "dataset.ways": ("The 20-way convolutional MAML model", "20"),
        "dataset.train_ways": ("The 20-way convolutional MAML model", "20"),
        "dataset.shots": ("MAML, Omniglot 20-way 1-shot", "1"),
        "dataset.rotations": ("90-degree rotations", True),
        "algorithm.inner_lr": ("with 5 gradient steps with step size alpha = 0.1", "0.1"),
        "algorithm.inner_steps": ("trained and evaluated with 5 gradient steps", "5"),
        "algorithm.eval_inner_steps": ("trained and evaluated with 5 gradient steps", "5"),
        "algorithm.meta_batch": ("the meta batch-size was set to 16 tasks", "16"),
        "algorithm.optimizer.lr": FROM["1e-3 code"],
        "backbone.hidden": ("strided conv4 with 64 filters", "64"),
        "backbone.max_pool": ("strided conv4 with 64 filters", False),
        "steps": ("60,000 iterations", "60,000"),
        "test_episodes": ("60,000 steps, 600 test episodes", "600"),
    },
    "maml_mini_imagenet_5w1s": {
        "dataset.name": ("MAML, mini-ImageNet 5-way 1-shot", "mini_imagenet"),
        "algorithm.name": ("MAML, mini-ImageNet 5-way 1-shot", "maml"),
        "dataset.ways": ("MAML, mini-ImageNet 5-way 1-shot", "5"),
        "dataset.shots": ("MAML, mini-ImageNet 5-way 1-shot", "1"),
        "dataset.queries": ("the code tests 600 tasks with 1 query per class", "1"),
        "dataset.train_queries": (
            "15 examples per class were used for evaluating the post-update meta-gradient",
            "15",
        ),
        "dataset.augment": ("No data augmentation in the paper", None),
        "algorithm.inner_lr": ("trained using 5 gradient steps of size alpha = 0.01", "0.01"),
        "algorithm.inner_steps": ("trained using 5 gradient steps", "5"),
        "algorithm.eval_inner_steps": ("evaluated using 10 gradient steps at test time", "10"),
        "algorithm.meta_batch": ("We used a meta batch-size of 4", "4"),
        "algorithm.optimizer.lr": FROM["1e-3 code"],
        "backbone.hidden": ("we used 32 filters per layer to reduce overfitting", "32"),
        "backbone.max_pool": ("the conv4 network with max-pooling", True),
        "steps": ("60,000 iterations", "60,000"),
        "test_episodes": ("the code tests 600 tasks", "600"),
    },
    "maml_clinc150_5w1s": {
        "dataset.name": ("data: CLINC150 (Larson et al., EMNLP 2019", "clinc150"),
        "dataset.within_domain": ("5-way 1-shot intents across domains", False),
        "algorithm.name": ("MAML, CLINC150 5-way 1-shot", "maml"),
        "backbone.name": ("Backbone: text_cnn with its defaults", "text_cnn"),
        "dataset.ways": ("MAML, CLINC150 5-way 1-shot", "5"),
        "dataset.shots": ("MAML, CLINC150 5-way 1-shot", "1"),
        "algorithm.inner_lr": ("Inner step: alpha = 2.0", "2.0"),
        "algorithm.inner_steps": ("trained and tested with 1 gradient step", "1"),
        "algorithm.eval_inner_steps": ("trained and tested with 1 gradient step", "1"),
        "algorithm.first_order": ("Second order: first_order false", False),
        "algorithm.meta_batch": ("a meta-batch of 4 tasks", "4"),
        "steps": ("400 iterations", "400"),
        "test_episodes": ("600 test episodes", "600"),
    },
    "reptile_clinc150_5w1s": {
        "dataset.name": ("data: CLINC150 (Larson et al., EMNLP 2019", "clinc150"),
        "dataset.within_domain": ("5-way 1-shot intents across domains", False),
        "algorithm.name": ("Reptile, CLINC150 5-way 1-shot", "reptile"),
        "backbone.name": ("--only reptile-clinc150-text_cnn", "text_cnn"),
        "dataset.ways": ("Reptile, CLINC150 5-way 1-shot", "5"),
        "dataset.shots": ("Reptile, CLINC150 5-way 1-shot", "1"),
        "dataset.train_shots": ("on the whole support set (5 shots per class)", "5"),
        "algorithm.head_init": ("Head: algorithm.head_init=zero", "zero"),
        "algorithm.inner_optimizer": ("Inner steps: 5 SGD steps of lr 0.4", "sgd"),
        "algorithm.inner_lr": ("Inner steps: 5 SGD steps of lr 0.4", "0.4"),
        "algorithm.inner_steps": ("Inner steps: 5 SGD steps of lr 0.4", "5"),
        "algorithm.eval_inner_steps": ("Test: 1 inner step", "1"),
        "algorithm.inner_batch": ("on the whole support set", None),
        "algorithm.meta_batch": ("Meta-batch 5 (the paper's)", "5"),
        "algorithm.optimizer._target_": ("Outer step: Adam", "torch.optim.Adam"),
        "algorithm.optimizer.lr": ("lr 1e-3 annealed linearly to 0", "1e-3"),
        "algorithm.scheduler.end_factor": ("lr 1e-3 annealed linearly to 0", "0"),
        "steps": ("600 iterations", "600"),
    },
    "reptile_omniglot_5w1s": {
        "dataset.name": ("Reptile, Omniglot 5-way 1-shot", "omniglot"),
        "algorithm.name": ("Reptile, Omniglot 5-way 1-shot", "reptile"),
        "dataset.ways": ("Reptile, Omniglot 5-way 1-shot", "5"),
        "dataset.shots": ("--shots 1", "1"),
        "dataset.train_shots": ("--train-shots 10", "10"),
        "dataset.queries": ("1 query image per class in each evaluation task", "1"),
        "dataset.rotations": ("with 90-degree rotations as extra classes", True),
        "algorithm.inner_optimizer": ("inner Adam (beta1 = 0)", "adam"),
        "algorithm.inner_betas": ("inner Adam (beta1 = 0)", [0.0, 0.999]),
        "algorithm.inner_lr": ("--learning-rate 0.001", "0.001"),
        "algorithm.inner_steps": ("--inner-iters 5", "5"),
        "algorithm.inner_batch": ("--inner-batch 10", "10"),
        "algorithm.eval_inner_steps": ("--eval-iters 50", "50"),
        "algorithm.meta_batch": ("--meta-batch 5", "5"),
        "algorithm.optimizer.lr": ("--meta-step 1", "1"),
        "algorithm.scheduler.start_factor": (
            "outer step size eps = 1.0 annealed linearly to 0",
            1.0,
        ),
        "algorithm.scheduler.end_factor": ("--meta-step-final 0", "0"),
        "backbone.hidden": ("4 x (3x3 conv, 64 filters, stride 2, batch norm, ReLU)", "64"),
        "backbone.max_pool": ("4 x (3x3 conv, 64 filters, stride 2, batch norm, ReLU)", False),
        "steps": ("--meta-iters 100000", "100000"),
        "test_episodes": ("10,000 evaluation tasks", "10,000"),
    },
    "protonet_omniglot_5w1s": {
        "dataset.name": ("Prototypical Networks, Omniglot 5-way 1-shot", "omniglot"),
        "algorithm.name": ("Prototypical Networks, Omniglot 5-way 1-shot", "protonet"),
        "dataset.ways": ("Prototypical Networks, Omniglot 5-way 1-shot", "5"),
        "dataset.shots": ("Prototypical Networks, Omniglot 5-way 1-shot", "1"),
        "dataset.queries": ("5-way validation / test episodes with 15 queries per class", "15"),
        "dataset.train_ways": ("training episodes containing 60 classes", "60"),
        "dataset.train_shots": ("in the 1-shot and 5-shot scenarios", "1"),
        "dataset.train_queries": ("60 classes and 5 query points per class", "5"),
        "dataset.rotations": ("augmented with rotations in multiples of 90 degrees", True),
        "algorithm.meta_batch": ("one episode per step", "one"),
        "algorithm.optimizer.lr": ("initial learning rate of 10^-3", "10^-3"),
        "algorithm.scheduler.step_size": (
            "cut the learning rate in half every 2000 episodes",
            "2000",
        ),
        "algorithm.scheduler.gamma": ("cut the learning rate in half", "half"),
        "backbone.hidden": ("four blocks of 3x3 conv with 64 filters", "64"),
        "backbone.max_pool": ("2x2 max-pool", True),
        "steps": ("no early stopping here; steps=20000", "20000"),
        "test_episodes": ("averaged over 1,000 test episodes", "1,000"),
    },
    "maml_sinusoid": {
        "dataset.name": ("MAML, sinusoid regression with K = 10", "sinusoid"),
        "algorithm.name": ("MAML, sinusoid regression with K = 10", "maml"),
        "backbone.name": ("a neural network model with 2 hidden layers of size 40", "mlp"),
        "backbone.hidden": ("2 hidden layers of size 40", [40, 40]),
        "dataset.shots": ("one gradient update with K = 10 examples", "10"),
        "dataset.queries": ("K query points per task", 10),
        "algorithm.inner_lr": ("with a fixed step size alpha = 0.01", "0.01"),
        "algorithm.inner_steps": ("we use one gradient update", "one"),
        "algorithm.eval_inner_steps": ("10 gradient steps at test", "10"),
        "algorithm.meta_batch": ("meta_batch_size 25", "25"),
        "algorithm.optimizer.lr": ("meta_lr 0.001", "0.001"),
        "steps": ("70,000 meta-training iterations", "70,000"),
        "val_episodes": ("no validation", 0),
        "test_episodes": ("600 test tasks", "600"),
    },
    "anil_omniglot_20w1s": {
        "dataset.name": ("ANIL, Omniglot 20-way 1-shot", "omniglot"),
        "algorithm.name": ("ANIL, Omniglot 20-way 1-shot", "anil"),
        "backbone.name": ("the strided conv4 with 64 filters", "conv4"),
        "dataset.ways": ("which for Omniglot 20-way are", "20"),
        "dataset.shots": ("ANIL, Omniglot 20-way 1-shot", 1),
        "dataset.rotations": ("rotations as extra classes", True),
        "algorithm.inner_lr": ("5 inner SGD steps of size 0.1", "0.1"),
        "algorithm.inner_steps": ("5 inner SGD steps of size 0.1 at training and test", "5"),
        "algorithm.eval_inner_steps": ("5 inner SGD steps of size 0.1 at training and test", "5"),
        "algorithm.meta_batch": ("meta-batch 16", "16"),
        "algorithm.first_order": ("MAML's networks and hyperparameters", False),
        "algorithm.optimizer.lr": ("Adam 1e-3 for the outer loop", 1e-3),
        "backbone.hidden": ("the strided conv4 with 64 filters", "64"),
        "backbone.max_pool": ("the strided conv4 with 64 filters", False),
        "steps": ("60,000 iterations", "60,000"),
        "test_episodes": ("600 test episodes", "600"),
    },
    "metaoptnet_mini_imagenet_5w1s": {
        "dataset.name": ("MetaOptNet-SVM, mini-ImageNet 5-way 1-shot", "mini_imagenet"),
        "algorithm.name": ("MetaOptNet-SVM, mini-ImageNet 5-way 1-shot", "metaoptnet"),
        "backbone.name": ("ResNet-12 embedding (64-160-320-640 filters, DropBlock)", "resnet12"),
        "backbone.channels": (
            "ResNet-12 embedding (64-160-320-640 filters, DropBlock)",
            [64, 160, 320, 640],
        ),
        "dataset.ways": ("MetaOptNet-SVM, mini-ImageNet 5-way 1-shot", "5"),
        "dataset.shots": ("MetaOptNet-SVM, mini-ImageNet 5-way 1-shot", 1),
        "dataset.queries": ("on 1,000 test episodes with 15 queries per class", "15"),
        "dataset.train_shots": ("5-way training episodes with 15 shots", "15"),
        "dataset.train_queries": ("and 6 queries per class", "6"),
        "algorithm.c": ("C = 0.1 (C_reg)", "0.1"),
        "algorithm.dual_ridge": ("the head adds 1.0 * I to the dual's quadratic term", "1.0"),
        "algorithm.max_iter": ("15 solver iterations (maxIter)", "15"),
        "algorithm.meta_batch": ("8 episodes per batch", "8"),
        "algorithm.optimizer._target_": ("SGD with Nesterov momentum 0.9", "torch.optim.SGD"),
        "algorithm.optimizer.lr": ("learning rate 0.1 dropped to 0.006", "0.1"),
        "algorithm.optimizer.momentum": ("SGD with Nesterov momentum 0.9", "0.9"),
        "algorithm.optimizer.nesterov": ("SGD with Nesterov momentum 0.9", True),
        "algorithm.optimizer.weight_decay": ("weight decay 5e-4", 5e-4),
        "steps": ("60 epochs of 1,000 batches", 60000),
        "test_episodes": ("on 1,000 test episodes", "1,000"),
    },
    "r2d2_mini_imagenet_5w1s": {
        "dataset.name": ("mini-ImageNet 5-way 1-shot", "mini_imagenet"),
        "algorithm.name": ("R2-D2's ridge-regression head on ResNet-12", "r2d2"),
        "backbone.name": ("R2-D2's ridge-regression head on ResNet-12", "resnet12"),
        "backbone.channels": (
            "trained as their SVM (see metaoptnet_mini_imagenet_5w1s",
            [64, 160, 320, 640],
        ),
        "dataset.ways": ("15-shot 6-query 5-way episodes", "5"),
        "dataset.shots": ("mini-ImageNet 5-way 1-shot", 1),
        "dataset.train_shots": ("15-shot 6-query 5-way episodes", "15"),
        "dataset.train_queries": ("15-shot 6-query 5-way episodes", "6"),
        "algorithm.lam": ("lambda starts at 50", "50"),
        "algorithm.learn_lam": ("a learned lambda and logit scale", True),
        "algorithm.meta_batch": ("8 per batch", "8"),
        "algorithm.optimizer._target_": ("SGD Nesterov 0.1", "torch.optim.SGD"),
        "algorithm.optimizer.lr": ("SGD Nesterov 0.1", "0.1"),
        "steps": ("60 epochs of 1,000 batches", 60000),
    },
    "matching_omniglot_5w1s": {
        "dataset.name": ("Matching Networks, Omniglot 5-way 1-shot", "omniglot"),
        "algorithm.name": ("Matching Networks, Omniglot 5-way 1-shot", "matching"),
        "backbone.name": ("four modules of 3x3 convolution with 64 filters", "conv4"),
        "dataset.ways": ("Matching Networks, Omniglot 5-way 1-shot", "5"),
        "dataset.shots": ("Matching Networks, Omniglot 5-way 1-shot", 1),
        "dataset.rotations": ("augmented with rotations in multiples of 90 degrees", True),
        "algorithm.fce": ("full-context embeddings were not used on Omniglot", False),
        "backbone.hidden": ("four modules of 3x3 convolution with 64 filters", "64"),
        "backbone.max_pool": ("ReLU and 2x2 max-pooling", True),
        "steps": ("20,000 steps of one episode", "20,000"),
        "test_episodes": ("1,000 test episodes", "1,000"),
    },
    "relation_omniglot_5w1s": {
        "dataset.name": ("Relation Networks, Omniglot 5-way 1-shot", "omniglot"),
        "algorithm.name": ("Relation Networks, Omniglot 5-way 1-shot", "relation"),
        "backbone.name": ("four blocks of 3x3 convolution with 64 filters", "conv4"),
        "dataset.ways": ("5-way 1-shot training episodes", "5"),
        "dataset.shots": ("5-way 1-shot training episodes", 1),
        "dataset.train_queries": ("with 19 query images per class", "19"),
        "dataset.rotations": ("Omniglot 28x28 with 90-degree rotations", True),
        "algorithm.hidden": ("fully connected layers of 8 units (ReLU)", "8"),
        "algorithm.optimizer.lr": ("Adam, learning rate 1e-3", 1e-3),
        "algorithm.scheduler.step_size": ("halved every 100,000 episodes", "100,000"),
        "algorithm.scheduler.gamma": ("halved every 100,000 episodes", 0.5),
        "backbone.hidden": ("four blocks of 3x3 convolution with 64 filters", "64"),
        "steps": ("1,000,000 episodes", "1,000,000"),
        "test_episodes": ("over 1,000 test episodes", "1,000"),
    },
    "baseline_mini_imagenet_5w1s": {
        "dataset.name": ("400 epochs on mini-ImageNet", "mini_imagenet"),
        "algorithm.name": ("Baseline, Conv-4, mini-ImageNet", "baseline"),
        "backbone.name": ("Conv-4: four blocks of 3x3 convolution", "conv4"),
        "backbone.hidden": ("four blocks of 3x3 convolution with 64 filters", "64"),
        "backbone.max_pool": ("ReLU and 2x2 max-pooling", True),
        "dataset.ways": ("42.11 % (5-way 1-shot)", "5"),
        "dataset.shots": ("42.11 % (5-way 1-shot)", 1),
        "algorithm.classifier": ("a linear classifier of all base classes", "linear"),
        "algorithm.eval_head": ("fits a new linear classifier to the support features", "linear"),
        "algorithm.optimizer._target_": (
            "Adam with its default learning rate 1e-3",
            "torch.optim.Adam",
        ),
        "algorithm.optimizer.lr": ("Adam with its default learning rate 1e-3", 1e-3),
        "algorithm.batch_size": ("batches of 16 images", "16"),
        "algorithm.finetune_lr": ("SGD lr 0.01", "0.01"),
        "algorithm.finetune_weight_decay": ("weight decay 0.001", "0.001"),
        "algorithm.finetune_steps": ("100 epochs of batches of 4", "100"),
        "steps": ("38,400 images: 960,000 batches", "960,000"),
        "val_episodes": ("no validation, the last model is tested", 0),
    },
    "baseline_pp_mini_imagenet_5w1s": {
        "dataset.name": ("Baseline++, Conv-4, mini-ImageNet", "mini_imagenet"),
        "algorithm.name": ("Baseline++, Conv-4, mini-ImageNet", "baseline_pp"),
        "backbone.name": ("Baseline++, Conv-4, mini-ImageNet", "conv4"),
        "dataset.ways": ("48.24 % (5-way 1-shot)", "5"),
        "dataset.shots": ("48.24 % (5-way 1-shot)", 1),
        "algorithm.classifier": ("with cosine-similarity classifiers in training", "cosine"),
        "algorithm.eval_head": (
            "cosine-similarity classifiers in training and in each test episode",
            "cosine",
        ),
        "algorithm.scale": ("the code scales the cosine by 2", "2"),
        "algorithm.finetune_scale": ("the code scales the cosine by 2", "2"),
        "algorithm.batch_size": ("Baseline's training (see baseline_mini_imagenet_5w1s)", 16),
        "steps": ("Baseline's training (see baseline_mini_imagenet_5w1s)", 960000),
    },
    "rfs_mini_imagenet_5w1s": {
        "dataset.name": ("RFS-simple, mini-ImageNet 5-way 1-shot", "mini_imagenet"),
        "algorithm.name": ("RFS-simple, mini-ImageNet 5-way 1-shot", "rfs"),
        "backbone.name": ("ResNet-12 (64-160-320-640 filters)", "resnet12"),
        "backbone.channels": ("ResNet-12 (64-160-320-640 filters)", [64, 160, 320, 640]),
        "dataset.ways": ("RFS-simple 62.02 +- 0.63 % (5-way 1-shot)", "5"),
        "dataset.shots": ("RFS-simple 62.02 +- 0.63 % (5-way 1-shot)", 1),
        "dataset.queries": ("n_test_runs 600 with n_queries 15", "15"),
        "algorithm.classifier": ("a linear classifier of the 64 training classes", "linear"),
        "algorithm.eval_head": ("scikit-learn's LogisticRegression", "logistic"),
        "algorithm.normalize": ("L2-normalised features", True),
        "algorithm.optimizer._target_": ("SGD, learning rate 0.05", "torch.optim.SGD"),
        "algorithm.optimizer.lr": ("SGD, learning rate 0.05", "0.05"),
        "algorithm.optimizer.momentum": ("momentum 0.9", "0.9"),
        "algorithm.optimizer.weight_decay": ("weight decay 5e-4", 5e-4),
        "algorithm.batch_size": ("batch size 64", "64"),
        "algorithm.scheduler.milestones": (
            "the learning rate times 0.1 at epochs 60 and 80",
            [36000, 48000],
        ),
        "algorithm.scheduler.gamma": ("the learning rate times 0.1", "0.1"),
        "algorithm.kd_temperature": ("distillation: temperature 4", "4"),
        "algorithm.kd_weight": ("0.5 * cross-entropy + 0.5 * KL", 0.5),
        "algorithm.ce_weight": ("0.5 * cross-entropy + 0.5 * KL", 0.5),
        "steps": ("600 batches each: 60,000 batches", "60,000"),
        "test_episodes": ("n_test_runs 600", "600"),
    },
    "meta_baseline_mini_imagenet_5w1s": {
        "dataset.name": ("Meta-Baseline, mini-ImageNet 5-way 1-shot", "mini_imagenet"),
        "algorithm.name": ("Meta-Baseline, mini-ImageNet 5-way 1-shot", "meta_baseline"),
        "backbone.name": ("ResNet-12 pretrained as a classifier", "resnet12"),
        "algorithm.distance": ("cosine similarity times a learned temperature", "cosine"),
        "algorithm.learn_scale": ("cosine similarity times a learned temperature", True),
        "dataset.ways": ("n_way 5", "5"),
        "dataset.shots": ("n_shot 1", "1"),
        "dataset.train_shots": ("n_shot 1", "1"),
        "dataset.queries": ("n_query 15", "15"),
        "dataset.train_queries": ("n_query 15", "15"),
        "algorithm.meta_batch": ("ep_per_batch 4", "4"),
        "algorithm.optimizer._target_": ("SGD lr 0.001", "torch.optim.SGD"),
        "algorithm.optimizer.lr": ("SGD lr 0.001", "0.001"),
        "algorithm.optimizer.weight_decay": ("weight decay 5e-4", 5e-4),
        "steps": ("(4,000 batches)", "4,000"),
    },
    "maml_rl_nav2d": {
        "dataset.name": ("MAML-RL, 2D navigation", "nav2d"),
        "algorithm.name": ("MAML-RL, 2D navigation", "maml_rl"),
        **MAML_RL,
        "dataset.shots": ("after 1 policy gradient update using 20 trajectories", "20"),
        "dataset.queries": ("after 1 policy gradient update using 20 trajectories", "20"),
        "dataset.env.horizon": ("or at the horizon of H = 100", "100"),
        "algorithm.meta_batch": ("In the 2D navigation, we used a meta batch size of 20", "20"),
        "algorithm.eval_inner_steps": ('evaluated "with up to 4 gradient updates', "4"),
    },
    "maml_rl_halfcheetah_vel": {
        "dataset.name": ("chosen uniformly at random between 0.0 and 2.0", "halfcheetah_vel"),
        "algorithm.name": ("MAML-RL, HalfCheetah goal velocity", "maml_rl"),
        **MAML_RL,
        **CHEETAH,
    },
    "maml_rl_halfcheetah_dir": {
        "dataset.name": ("in either the forward or backward direction", "halfcheetah_dir"),
        "algorithm.name": ("MAML-RL, HalfCheetah forward/backward", "maml_rl"),
        **MAML_RL,
        **CHEETAH,
    },
}
WORDS = {"one": 1, "half": 0.5}


def cited_value(words):
    """The value the cited words state: a number ("60,000", "10^-3", "one", "half"), a name
    (compared as it is), or the value itself where the sentence states no number."""
    if not isinstance(words, str):
        return words
    if words in WORDS:
        return WORDS[words]
    if "^" in words:
        base, power = words.split("^")
        return float(base) ** float(power)
    try:
        return float(words.replace(",", ""))
    except ValueError:
        return words


def comments(name: str) -> str:
    """The preset's comment lines as one line of text."""
    text = (Path(CONF_DIR) / "experiment" / f"{name}.yaml").read_text()
    lines = [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]
    return " ".join(" ".join(lines).split())


# A few steps, a few fixed episodes: the presets' budgets shrunk for the default suite.
BUDGET = [
    *TINY,
    "steps=2",
    "val_every=2",
    "val_episodes=2",
    "test_episodes=4",
    "eval_batch=2",
    "logger=csv",
]


def composed(name: str, overrides=()) -> dict:
    """The preset's config as metalab-train composes it: groups resolved, plus the top level."""
    cfg = compose([f"experiment={name}", *overrides])
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
    assert set(PRESETS) == set(PAPER)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_a_global_diff_that_cites_its_source(name):
    text = (Path(CONF_DIR) / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert "Source:" in text and "arXiv:" in text  # the paper it reproduces
    defaults = yaml.safe_load(text)["defaults"]
    # group choices as `override /group: option`, or another preset it extends
    assert defaults and all(
        (isinstance(d, dict) and all(k.startswith("override /") for k in d))
        or d in (*PRESETS, "_self_")
        for d in defaults
    ), defaults


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_with_the_values_its_comments_cite(name):
    cfg, text = composed(name), comments(name)
    missing = [quote for quote, _ in PAPER[name].values() if quote not in text]
    assert not missing, f"{name}: sentences not in its comments: {missing}"
    wrong = {}
    for key, (quote, words) in PAPER[name].items():
        want = cited_value(words)
        if isinstance(words, str) and want != words:  # a number: stated by the sentence
            assert words in quote, (key, words, quote)
        if select(cfg, key) != want:
            wrong[key] = (select(cfg, key), want, quote)
    assert not wrong, f"{name}: key: (composed, cited, sentence): {wrong}"


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
        data = [
            "dataset=mini_imagenet",
            f"dataset.root={root / 'mini'}",
            f"paths.cache_dir={root / 'cache'}",
            "dataset.queries=1",
            "dataset.train_queries=3",
            "dataset.train_shots=1",
        ]
    elif dataset == "sinusoid":
        data = []
    elif dataset == "clinc150":
        data = ["dataset=clinc150", f"dataset.root={CLINC}"]
    elif cfg["dataset"]["task"] == "rl":  # short rollouts, few: every environment in one process
        data = ["++dataset.env.horizon=10", "dataset.shots=2", "dataset.queries=2"]
    else:
        raise AssertionError(f"dataset={dataset}: no local data for it here; add it")
    small = {
        "conv4": ["backbone.hidden=8"],
        "resnet12": ["backbone=resnet12", "backbone.channels=[8,8,8,8]"],
        "text_cnn": SMALL_CNN,
        "policy": ["backbone=policy", "backbone.hidden=[16]"],
    }.get(cfg["backbone"]["name"], [])
    if "batch_size" in cfg["algorithm"]:  # pretraining: a batch the fake data hold (++: the
        small.append("++algorithm.batch_size=4")  # multirun checks it on the default algorithm)
    if cfg["algorithm"].get("needs_init"):  # Meta-Baseline: a pretrained backbone of that size
        small.append(f"init_from={pretrained(root, [*data, *small])}")
    return [*data, *small, "algorithm.meta_batch=2"]


def pretrained(root: Path, overrides: list[str]) -> Path:
    """A pretraining checkpoint of the shrunk backbone on that data, as a run writes it."""
    import torch

    from metalab.run.training import build_model

    path = root / "pretrained.ckpt"
    if not path.is_file():
        model = build_model(compose(["algorithm=baseline", *overrides]))
        torch.save({"state_dict": model.state_dict(), "global_step": 0}, path)
    return path


def runnable(name: str) -> bool:
    return ("omniglot" not in name or OMNIGLOT_SMALL.is_dir()) and (
        "clinc150" not in name or (CLINC / "data_full.json").is_file()
    )


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
        proc = run_cli(
            "run.train",
            "-m",
            f"experiment={','.join(names)}",
            *overrides,
            *BUDGET,
            f"hydra.sweep.dir={sweep}",
            "hydra.sweep.subdir=${hydra.runtime.choices.experiment}",
            env={"OMP_NUM_THREADS": "1"},
        )
        runs.update({name: (proc, sweep / name, list(overrides)) for name in names})
    return runs


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=needs_omniglot)
        if "omniglot" in n
        else pytest.param(n, marks=needs_clinc)
        if "clinc150" in n
        else n
        for n in PRESETS
    ],
)
def test_preset_runs_a_few_steps_on_local_data(name, preset_runs):
    proc, run_dir, overrides = preset_runs[name]
    assert proc.returncode == 0, proc.stderr[-3000:]
    error = run_dir / "error.txt"
    assert not error.exists(), error.read_text()[-3000:]
    assert (run_dir / "results.json").is_file(), proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["test/episodes"] == 4
    ran = yaml.safe_load((run_dir / "config.yaml").read_text())
    metric = {"regression": "test/mse", "rl": "test/return"}.get(ran["dataset"]["task"], "test/acc")
    assert_results_are_the_episode_means(run_dir, metric.split("/")[1])
    # the run used the preset: its resolved config holds the preset's settings
    shrunk = {o.split("=")[0].lstrip("+") for o in overrides}
    for key, (_, words) in PAPER[name].items():
        if key not in shrunk and "." in key:
            assert select(ran, key) == cited_value(words), key
