"""The meta-learner base: per-task metrics against scikit-learn, the meta-loss, optimizers,
and the evaluation summary: episodes put back in order (also gathered from two ranks) and
summarised with their mean and 95% CI."""

import functools
from types import SimpleNamespace

import pytest
import torch
from scipy import stats
from sklearn.metrics import accuracy_score, log_loss, mean_squared_error

from metalab.algorithms.base import MetaLearner
from metalab.algorithms.protonet import ProtoNet


class Fixed(MetaLearner):
    """Predictions given in advance, to test what the base makes of them."""

    def __init__(self, preds, **kwargs):
        super().__init__(optimizer=functools.partial(torch.optim.SGD, lr=0.1), **kwargs)
        self.w = torch.nn.Parameter(torch.ones(()))
        self.preds = preds

    def predict(self, episodes, training):
        return self.preds * self.w


def logits_and_labels(tasks=3, n=8, ways=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tasks, n, ways, generator=g), torch.randint(ways, (tasks, n), generator=g)


def test_classification_metrics_per_task_equal_sklearn():
    logits, labels = logits_and_labels()
    metrics = Fixed(logits).task_metrics(logits, labels)
    assert set(metrics) == {"loss", "acc"} and metrics["loss"].shape == (3,)
    for t in range(3):
        probs = logits[t].softmax(-1).numpy()
        assert metrics["loss"][t].item() == pytest.approx(
            log_loss(labels[t], probs, labels=range(4)), rel=1e-5
        )
        assert metrics["acc"][t].item() == pytest.approx(
            accuracy_score(labels[t], logits[t].argmax(-1))
        )


def test_regression_metrics_per_task_equal_sklearn():
    g = torch.Generator().manual_seed(1)
    preds, targets = torch.randn(2, 5, 1, generator=g), torch.randn(2, 5, 1, generator=g)
    metrics = Fixed(preds, task="regression").task_metrics(preds, targets)
    assert set(metrics) == {"loss", "mse"}
    for t in range(2):
        assert metrics["mse"][t].item() == pytest.approx(
            mean_squared_error(targets[t], preds[t]), rel=1e-6
        )
    assert torch.equal(metrics["loss"], metrics["mse"])


def test_meta_loss_is_the_mean_task_loss_and_pixel_baseline_is_for_images_only():
    logits, labels = logits_and_labels()
    model = Fixed(logits)
    episodes = SimpleNamespace(query_y=labels)
    loss, metrics = model.meta_loss(episodes)
    assert loss.item() == pytest.approx(metrics["loss"].mean().item())
    loss.backward()
    assert model.w.grad is not None and model.w.grad != 0
    assert model.pixel_baseline and not Fixed(logits, task="regression").pixel_baseline
    assert not Fixed(logits, pixel_baseline=False).pixel_baseline


def test_optimizer_alone_or_with_a_per_step_scheduler():
    model = Fixed(torch.zeros(1, 1, 2))
    assert isinstance(model.configure_optimizers(), torch.optim.SGD)
    model.scheduler_factory = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=3)
    conf = model.configure_optimizers()
    assert conf["lr_scheduler"]["interval"] == "step"
    assert conf["lr_scheduler"]["scheduler"].optimizer is conf["optimizer"]
    assert conf["optimizer"].param_groups[0]["params"] == [model.w]


def evaluated(model, batches, world_size=1):
    """Runs the evaluation steps and epoch end of the base on given (ids, metrics) batches."""
    logged = {}

    def log(name, value, prog_bar=False):
        logged[name] = value
        assert prog_bar == (name == "test/acc"), name  # the accuracy is on the progress bar

    model.log = log
    model._trainer = SimpleNamespace(world_size=world_size)
    for ids, metrics in batches:
        model._outputs.append((torch.tensor(ids), {k: torch.tensor(v) for k, v in metrics.items()}))
    model._eval_epoch_end("test")
    return logged


def test_evaluation_puts_episodes_in_order_and_summarises_them():
    model = Fixed(torch.zeros(1))
    acc = {0: 0.2, 1: 0.6, 2: 0.4, 3: 1.0, 4: 0.8}
    batches = [([3, 0], {"acc": [acc[3], acc[0]]}), ([4, 1, 2], {"acc": [acc[4], acc[1], acc[2]]})]
    logged = evaluated(model, batches)
    assert model.episode_metrics["test"]["acc"].tolist() == pytest.approx(list(acc.values()))
    values = list(acc.values())
    assert logged == model.summary["test"]
    assert logged["test/episodes"] == 5
    assert logged["test/acc"] == pytest.approx(sum(values) / 5)
    assert logged["test/acc_ci95"] == pytest.approx(1.96 * stats.sem(values), rel=1e-6)
    assert model._outputs == []


@pytest.mark.parametrize("short", ["other rank", "this rank"])
def test_episodes_gathered_from_two_ranks_come_back_in_order(short):
    """One rank holds episodes 0, 2, 4, the other 1, 3 (padded to 3 for all_gather, the padding
    dropped again), seen from each rank in turn."""
    mine, other = ([0, 2, 4], [1, 3]) if short == "other rank" else ([1, 3], [0, 2, 4])
    pad = 3 - len(other)
    gathered = iter(
        [
            torch.tensor(len(other)),
            torch.tensor(other + [-1] * pad),
            torch.tensor([e / 10 for e in other] + [0.0] * pad),
        ]
    )
    model = Fixed(torch.zeros(1))
    model.all_gather = lambda t: torch.stack([t, next(gathered).to(t.dtype)])
    evaluated(model, [(mine, {"loss": [e / 10 for e in mine]})], world_size=2)
    assert model.episode_metrics["test"]["loss"].tolist() == pytest.approx([0, 0.1, 0.2, 0.3, 0.4])
    assert model.summary["test"]["test/episodes"] == 5


def test_protonet_is_for_classification_and_evaluates_without_gradients():
    assert ProtoNet.tasks == ("classification",) and not ProtoNet.needs_grad_at_eval
    assert MetaLearner.tasks == ("classification", "regression")


def test_the_evaluation_protocol_keeps_its_statistics():
    stats = "support_plus_query"
    learner = MetaLearner(optimizer=None, protocol="inductive", inductive_stats=stats)
    assert repr(learner.protocol) == "inductive (support_plus_query statistics)"
    assert repr(learner.protocol_for(training=False)) == repr(learner.protocol)
    assert repr(learner.protocol_for(training=True)) == "transductive"  # as the papers train


def image_episodes(tasks=3, ways=3, shots=2, queries=4, seed=0):
    from metalab.data.episodes import Episodes

    g = torch.Generator().manual_seed(seed)
    y = torch.arange(ways)
    centres = torch.randn(tasks, ways, 1, 4, 4, generator=g)

    def draw(n):
        noise = torch.randn(tasks, ways, n, 1, 4, 4, generator=g)
        return (centres[:, :, None] + noise).flatten(1, 2), y.repeat_interleave(n).expand(
            tasks, -1
        ).contiguous()

    (sx, sy), (qx, qy) = draw(shots), draw(queries)
    return Episodes(sx, sy, qx, qy)


class Flat(torch.nn.Module):
    def __init__(self, out_dim=None):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def embed(self, x):
        return x.flatten(1) * self.scale


@pytest.mark.parametrize("split", ["val", "test"])
def test_evaluation_steps_score_each_episode_and_the_pixel_baseline(split):
    """validation_step / test_step and their epoch ends, as Lightning calls them: per-episode
    metrics of the model, and on test the raw-pixel 1-NN baseline equal to scikit-learn's."""
    from sklearn.neighbors import KNeighborsClassifier

    model = ProtoNet(backbone=Flat, optimizer=None)
    logged = {}
    model.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    model._trainer = SimpleNamespace(world_size=1)
    eps = image_episodes()
    step, end = (
        (model.validation_step, model.on_validation_epoch_end)
        if split == "val"
        else (model.test_step, model.on_test_epoch_end)
    )
    end()  # nothing evaluated yet: nothing summarised
    assert model.summary == {}
    step((torch.tensor([1, 0, 2]), eps), 0)
    end()
    want = model.task_metrics(model.predict(eps, training=False), eps.query_y)
    order = torch.tensor([1, 0, 2]).argsort()
    for name in ("acc", "loss"):
        torch.testing.assert_close(model.episode_metrics[split][name], want[name][order])
    names = set(model.episode_metrics[split])
    assert names == ({"acc", "loss", "pixel_1nn_acc"} if split == "test" else {"acc", "loss"})
    assert logged[f"{split}/episodes"] == 3
    if split == "test":
        for t, got in zip(order.tolist(), model.episode_metrics["test"]["pixel_1nn_acc"]):
            knn = KNeighborsClassifier(1).fit(eps.support_x[t].flatten(1), eps.support_y[t])
            assert got.item() == pytest.approx(knn.score(eps.query_x[t].flatten(1), eps.query_y[t]))
        assert not ProtoNet(backbone=Flat, optimizer=None, pixel_baseline=False).pixel_baseline


def test_training_step_logs_the_mean_task_metrics_and_returns_the_meta_loss():
    logits, labels = logits_and_labels()
    model = Fixed(logits)
    logged = {}
    model.log = lambda name, value, **kwargs: logged.__setitem__(name, (value, kwargs))
    loss = model.training_step(SimpleNamespace(query_y=labels), 0)
    metrics = model.task_metrics(logits, labels)
    assert loss.item() == pytest.approx(metrics["loss"].mean().item())
    assert set(logged) == {"train/loss", "train/acc"}
    assert logged["train/acc"][0].item() == pytest.approx(metrics["acc"].mean().item())
    assert logged["train/acc"][1] == {"prog_bar": True, "sync_dist": True}
    assert logged["train/loss"][1] == {"prog_bar": False, "sync_dist": True}


def test_unknown_task_kind_is_a_config_error():
    from metalab.errors import ConfigError
    from metalab.tasks import task_kind

    assert task_kind("regression").name == "regression"
    with pytest.raises(ConfigError) as err:
        task_kind("ranking")
    assert str(err.value) == "dataset.task=ranking: allowed: classification, regression, rl"
    # RL's algorithms score rollouts: asking its kind for per-task metrics is a programming error
    with pytest.raises(TypeError) as err:
        task_kind("rl").metrics(torch.zeros(1, 2, 1), torch.zeros(1, 2, 1))
    assert str(err.value) == "reinforcement-learning algorithms score rollouts themselves (returns)"


def test_classification_inputs_and_their_shapes():
    """A classification dataset's samples are images (the default) or token ids (inputs: text),
    with the backbones suggested for each; anything else is named in one line."""
    from omegaconf import OmegaConf

    from metalab.errors import ConfigError
    from metalab.tasks import CLASSIFICATION, REGRESSION

    images = OmegaConf.create({"channels": 3, "image_size": 32})
    text = OmegaConf.create({"inputs": "text", "max_length": 48})
    assert CLASSIFICATION.input_shape(images) == (3, 32, 32)
    assert CLASSIFICATION.input_shape(text) == (48,)
    assert CLASSIFICATION.suggest_backbones(images) == "conv4, resnet12 or mlp"
    assert CLASSIFICATION.suggest_backbones(text) == "text_cnn, text_transformer or text_pretrained"
    assert REGRESSION.inputs(text) == "vector"
    with pytest.raises(ConfigError) as err:
        CLASSIFICATION.input_shape(OmegaConf.create({"inputs": "audio"}))
    assert str(err.value) == "dataset.inputs=audio: allowed: image, text"


def test_config_keys_are_every_init_keyword_up_the_chain_and_only_those():
    """An algorithm's config keys: each conf/algorithm/*.yaml key (but the run's own) is one
    (through the ``**kwargs`` chain up to MetaLearner), and nothing else: no ``self``/``kwargs``,
    and a subclass that does not forward ``**kwargs`` stops the walk."""
    from pathlib import Path

    from hydra.utils import get_class
    from omegaconf import OmegaConf

    from metalab.run.training import RUN_KEYS

    conf = Path(__file__).resolve().parents[1] / "conf" / "algorithm"
    for path in sorted(conf.glob("*.yaml")):
        spec = OmegaConf.load(path)
        while "_target_" not in spec:  # a config built on another (defaults: [maml_rl])
            spec = OmegaConf.merge(OmegaConf.load(conf / f"{spec.defaults[0]}.yaml"), spec)
        keys = get_class(spec._target_).config_keys()
        wanted = set(spec) - {"_target_", "defaults", *RUN_KEYS}
        assert wanted <= keys, (path.name, wanted - keys)
        assert not keys & {"self", "kwargs", "args"}, path.name
        assert {"backbone", "task"} <= keys  # MetaLearner's own, reached through **kwargs

    class Closed(MetaLearner):
        def __init__(self, backbone, only: int = 1):  # no **kwargs: MetaLearner's are not keys
            super().__init__(backbone=backbone)

    assert Closed.config_keys() == {"backbone", "only"}


def test_evaluation_gives_gradients_back_only_to_learners_that_adapt_with_them():
    """Lightning evaluates under no_grad: a learner that adapts by gradient steps
    (needs_grad_at_eval) gets them back for its prediction, any other stays without; both
    predict as in evaluation (training=False)."""
    seen = []

    class Recording(ProtoNet):
        def predict(self, episodes, training):
            seen.append((torch.is_grad_enabled(), training))
            return super().predict(episodes, training)

    for needs_grad in (False, True):
        model = Recording(backbone=Flat, optimizer=None)
        model.needs_grad_at_eval = needs_grad
        with torch.no_grad():
            model.validation_step((torch.tensor([0, 1, 2]), image_episodes()), 0)
    assert seen == [(False, False), (True, False)]
