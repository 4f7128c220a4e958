"""Evaluation protocols (algorithms/protocols.py): under `inductive` a query's logits depend
only on the support set and that query, under `transductive` they depend on the other queries;
the batch norm of each inductive mode matches an independent construction; the protocol travels
from the config to results.json, the printed results and metalab-eval;
DDP gives the same numbers."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from helpers import compose, train_cli
from helpers.ddp import finish
from metalab.algorithms.protocols import Protocol, ReferenceBatchNorm, check_protocol
from metalab.data.episodes import Episodes
from metalab.errors import ConfigError
from metalab.run.config import CONF_DIR, check_config
from metalab.run.evaluate import evaluate
from metalab.run.training import build_model
from metalab.tracking.summary import print_results

WAYS, SHOTS, QUERIES = 3, 2, 2
SMALL_NET = ["backbone.hidden=8"]
STEPS = "algorithm.eval_inner_steps=2"
MODELS = {  # name: overrides (the engines MAML and Reptile adapt with at evaluation)
    "protonet": ["algorithm=protonet"],
    "maml-loop": ["algorithm=maml", "algorithm.engine=loop", STEPS],
    "maml-vmap": ["algorithm=maml", "algorithm.engine=vmap", STEPS],
    "maml-learn2learn": ["algorithm=maml", "algorithm.engine=learn2learn", STEPS],
    "reptile-loop": ["algorithm=reptile", "algorithm.engine=loop", STEPS],
    "reptile-vmap": ["algorithm=reptile", "algorithm.engine=vmap", STEPS],
    "anil-loop": ["algorithm=anil", "algorithm.engine=loop", STEPS],
    "anil-vmap": ["algorithm=anil", "algorithm.engine=vmap", STEPS],
    "r2d2": ["algorithm=r2d2"],
    "metaoptnet": ["algorithm=metaoptnet"],
    "matching": ["algorithm=matching", "algorithm.fce=true"],
    "relation": ["algorithm=relation"],
}
INDUCTIVE = ["support", "support_plus_query"]


def model_for(name: str, *overrides: str):
    """A freshly initialised model in float64 (so "unchanged" can mean ~1e-12)."""
    torch.manual_seed(0)
    cfg = compose(
        [*MODELS[name], *SMALL_NET, f"dataset.ways={WAYS}", f"dataset.shots={SHOTS}", *overrides]
    )
    return build_model(cfg).double()


def episodes(seed: int, queries: torch.Tensor | None = None) -> Episodes:
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(2, WAYS * SHOTS, 1, 28, 28, generator=g, dtype=torch.float64)
    if queries is None:
        queries = torch.randn(2, WAYS * QUERIES, 1, 28, 28, generator=g, dtype=torch.float64)
    labels = torch.arange(WAYS).repeat_interleave(SHOTS).expand(2, -1)
    return Episodes(support, labels, queries, torch.arange(WAYS).repeat(QUERIES).expand(2, -1))


def query_logits(model, eps: Episodes) -> torch.Tensor:
    with torch.enable_grad() if model.needs_grad_at_eval else torch.no_grad():
        return model.predict(eps, training=False).detach()


def other_queries_replaced(eps: Episodes) -> Episodes:
    """The same episodes with every query but the first replaced by other images."""
    g = torch.Generator().manual_seed(99)
    queries = eps.query_x.clone()
    queries[:, 1:] = 3 * torch.rand(queries[:, 1:].shape, generator=g, dtype=torch.float64)
    return eps._replace(query_x=queries)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_only_transductive_predictions_see_the_other_queries(name, one_thread):
    eps = episodes(0)
    changed = other_queries_replaced(eps)
    for stats in INDUCTIVE:
        model = model_for(name, "protocol=inductive", f"inductive_stats={stats}")
        before, after = query_logits(model, eps)[:, 0], query_logits(model, changed)[:, 0]
        assert torch.allclose(before, after, rtol=0, atol=1e-9), (stats, before - after)
    model = model_for(name, "protocol=transductive")
    before, after = query_logits(model, eps)[:, 0], query_logits(model, changed)[:, 0]
    assert (before - after).abs().max() > 1e-3, "transductive logits ignore the other queries"


def test_engines_agree_under_each_inductive_mode(one_thread):
    """MAML's loop and vmap engines against the learn2learn reference, per inductive mode."""
    eps = episodes(1)
    for stats in INDUCTIVE:
        logits = {
            engine: query_logits(
                model_for(f"maml-{engine}", "protocol=inductive", f"inductive_stats={stats}"), eps
            )
            for engine in ("loop", "vmap", "learn2learn")
        }
        for engine in ("loop", "vmap"):
            assert torch.allclose(logits[engine], logits["learn2learn"], atol=1e-9), engine


def batch_norms(net) -> list[torch.nn.Module]:
    return [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def support_statistics_reference(net, support, query) -> torch.Tensor:
    """The support set alone through the network, recording each batch norm's batch mean and
    (biased) variance; then the queries through the network with every batch norm replaced by
    torch's running-statistics (eval-mode) batch norm holding those statistics."""
    stats, hooks = {}, []
    for bn in batch_norms(net):

        def record(module, args):
            x = args[0]
            stats[module] = (x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False))

        hooks.append(bn.register_forward_pre_hook(record))
    net.embed(support)
    for hook in hooks:
        hook.remove()
    for bn in batch_norms(net):

        def fixed(module, args, out):
            mean, var = stats[module]
            return F.batch_norm(
                args[0], mean, var, module.weight, module.bias, False, 0.0, module.eps
            )

        bn.register_forward_hook(fixed)
    return net.embed(query)


@torch.no_grad()
def test_inductive_batch_norm_matches_independent_constructions():
    net = model_for("protonet").net
    eps = episodes(2)
    s, q = eps.support_x[0], eps.query_x[0]
    zs, zq = Protocol("inductive", "support").embed(net.embed, s, q)
    assert torch.allclose(zs, net.embed(s), atol=1e-12)  # the support set's own batch
    reference = support_statistics_reference(copy.deepcopy(net), s, q)
    assert torch.allclose(zq, reference, atol=1e-10)
    # Reptile's code: each query classified in one batch with the support set
    zs, zq = Protocol("inductive", "support_plus_query").embed(net.embed, s, q)
    for j in range(len(q)):
        alone = net.embed(torch.cat([s, q[j : j + 1]]))
        assert torch.allclose(zq[j], alone[-1], atol=1e-10)
        assert torch.allclose(zs[j], alone[:-1], atol=1e-10)


def reference_rows_batch_norm(x, reference, group, weight, bias, eps):
    """numpy float64: each group of ``group`` consecutive rows (None: all rows) normalised per
    channel (axis 1) by the mean and biased variance of the group's first ``reference`` rows."""
    x, out = x.astype(np.float64), np.empty(x.shape)
    axes, shape = (0, *range(2, x.ndim)), (1, -1) + (1,) * (x.ndim - 2)
    for start in range(0, len(x), group or len(x)):
        rows = x[start : start + (group or len(x))]
        ref = rows[:reference]
        y = (rows - ref.mean(axes, keepdims=True)) / np.sqrt(ref.var(axes, keepdims=True) + eps)
        if weight is not None:
            y = y * weight.reshape(shape)
        if bias is not None:
            y = y + bias.reshape(shape)
        out[start : start + len(rows)] = y
    return out


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("reference, group", [(4, None), (2, 3)])
@pytest.mark.parametrize("shape", [(6, 3), (6, 3, 4), (6, 2, 3, 3)])
def test_reference_batch_norm_normalises_by_the_reference_rows(shape, reference, group, affine):
    """1d, 2d-sequence and image batch norms, as the backbones call them (keyword arguments,
    no running statistics), in float64 against numpy; other functions pass through as called."""
    g = torch.Generator().manual_seed(3)
    x = 2 + 3 * torch.randn(shape, generator=g, dtype=torch.float64)
    weight = torch.randn(shape[1], generator=g, dtype=torch.float64) if affine else None
    bias = torch.randn(shape[1], generator=g, dtype=torch.float64) if affine else None
    with ReferenceBatchNorm(reference, group):
        out = F.batch_norm(x, None, None, weight=weight, bias=bias, training=True, eps=0.1)
        column_sums = torch.sum(x, dim=0)  # not a batch norm: untouched, keywords included
    affine_np = (None, None) if weight is None else (weight.numpy(), bias.numpy())
    ref = reference_rows_batch_norm(x.numpy(), reference, group, *affine_np, 0.1)
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(column_sums.numpy(), x.numpy().sum(0), rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reference_batch_norm_takes_low_precision_statistics_in_float32(dtype):
    """bf16/fp16 activations: the statistics are taken in float32 and the output is the exact
    result rounded to the input's dtype (statistics in bf16 miss by several of its steps)."""
    g = torch.Generator().manual_seed(4)
    x = (50 + 3 * torch.randn(6, 2, 3, 3, generator=g)).to(dtype)
    weight, bias = torch.tensor([1.5, -0.5]), torch.tensor([0.25, 2.0])
    with ReferenceBatchNorm(4):
        out = F.batch_norm(x, None, None, weight=weight, bias=bias, training=True, eps=1e-3)
    ref = reference_rows_batch_norm(x.double().numpy(), 4, None, weight.numpy(), bias.numpy(), 1e-3)
    assert out.dtype == dtype
    rounding = torch.finfo(dtype).eps * np.abs(ref) + 1e-6  # at most half a step of the dtype
    assert (np.abs(out.double().numpy() - ref) <= rounding).all()


@pytest.mark.parametrize("training", [False, True])
def test_reference_batch_norm_leaves_running_statistics_to_torch(training):
    """A batch norm with running statistics involves no reference rows: eval mode normalises by
    them, train mode by the whole batch and updates them (numpy, unbiased running variance)."""
    g = torch.Generator().manual_seed(5)
    x = 1 + torch.randn(6, 3, 2, 2, generator=g, dtype=torch.float64)
    weight, bias = torch.tensor([2.0, -1.0, 0.5]).double(), torch.tensor([0.1, 0.2, -0.3]).double()
    mean, var = torch.tensor([0.5, 1.0, -1.0]).double(), torch.tensor([2.0, 0.5, 1.5]).double()
    running_mean, running_var = mean.clone(), var.clone()
    with ReferenceBatchNorm(2):
        out = F.batch_norm(
            x, running_mean, running_var, weight, bias, training=training, momentum=0.3, eps=0.1
        )
    xs, axes, shape = x.numpy(), (0, 2, 3), (1, -1, 1, 1)
    if training:
        m, v = xs.mean(axes), xs.var(axes)
        np.testing.assert_allclose(running_mean.numpy(), 0.7 * mean.numpy() + 0.3 * m)
        np.testing.assert_allclose(running_var.numpy(), 0.7 * var.numpy() + 0.3 * v * 24 / 23)
    else:
        m, v = mean.numpy(), var.numpy()
        assert torch.equal(running_mean, mean) and torch.equal(running_var, var)
    ref = (xs - m.reshape(shape)) / np.sqrt(v.reshape(shape) + 0.1)
    ref = ref * weight.numpy().reshape(shape) + bias.numpy().reshape(shape)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-10, atol=1e-12)


def test_transductive_queries_are_predicted_in_a_batch_of_their_own():
    """MAML's and Reptile's transductive setting: the queries alone through the network, here a
    network that standardises its batch (numpy over the queries' rows); inductive: with the
    support set's statistics."""
    g = torch.Generator().manual_seed(6)
    support = torch.randn(4, 3, generator=g, dtype=torch.float64)
    query = 5 + 2 * torch.randn(3, 3, generator=g, dtype=torch.float64)

    def forward(x):
        return F.batch_norm(x, None, None, training=True, eps=1e-3)

    q, s = query.numpy(), support.numpy()
    alone = (q - q.mean(0)) / np.sqrt(q.var(0) + 1e-3)
    np.testing.assert_allclose(Protocol().queries(forward, support, query).numpy(), alone)
    inductive = Protocol("inductive").queries(forward, support, query).numpy()
    np.testing.assert_allclose(inductive, (q - s.mean(0)) / np.sqrt(s.var(0) + 1e-3))


def test_protocols_default_to_transductive_and_support_statistics():
    assert repr(Protocol()) == "transductive"
    assert repr(Protocol("inductive")) == "inductive (support statistics)"
    stats = Protocol("inductive", "support_plus_query")
    assert repr(stats) == "inductive (support_plus_query statistics)"
    check_protocol("inductive")  # inductive_stats left out: support


@pytest.mark.parametrize(
    "args, message",
    [
        (("inductve",), "protocol=inductve: allowed: transductive, inductive"),
        (("semi", "running"), "protocol=semi: allowed: transductive, inductive"),
        (("inductive", "running"), "inductive_stats=running: allowed: support, support_plus_query"),
    ],
)
def test_protocol_names_are_checked_word_for_word(args, message):
    with pytest.raises(ConfigError) as err:
        Protocol(*args)
    assert str(err.value) == message


@pytest.mark.parametrize("key, value", [("protocol", "semi"), ("inductive_stats", "running")])
def test_bad_protocol_is_a_config_error(key, value):
    with pytest.raises(ConfigError) as err:
        check_config(compose([f"{key}={value}"]))
    allowed = "transductive, inductive" if key == "protocol" else "support, support_plus_query"
    assert str(err.value) == f"{key}={value}: allowed: {allowed}"


def test_bad_protocol_stops_train_in_one_line(tmp_path):
    proc = train_cli(tmp_path, "protocol=inductve")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "metalab-train: error: protocol=inductve: allowed: transductive, inductive"
    ]
    assert not (tmp_path / "config.yaml").exists()  # stopped before any heavy work


# One inductive ProtoNet run on one process (test_ddp's budget), shared by the tests below.
INDUCTIVE_RUN = [
    "algorithm=protonet",
    "algorithm.optimizer._target_=torch.optim.SGD",
    "algorithm.optimizer.lr=0.1",
    "protocol=inductive",
]


@pytest.fixture(scope="module")
def inductive_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("inductive") / "one"
    return run_dir, *finish(run_dir, *INDUCTIVE_RUN)


@pytest.mark.e2e
def test_results_carry_the_protocol(inductive_run, capsys):
    run_dir, _, results, _ = inductive_run
    assert results["protocol"] == "inductive" and results["inductive_stats"] == "support"
    assert OmegaConf.load(run_dir / "config.yaml").protocol == "inductive"  # W&B's config too
    print_results(results)
    assert "protocol: inductive (batch-norm statistics: support)" in capsys.readouterr().out


def retest(run_dir: Path, out_dir: Path, *overrides: str) -> dict:
    cfg = compose([f"ckpt_path={run_dir}/checkpoints/best.ckpt", *overrides], config="eval")
    return evaluate(cfg, out_dir)


@pytest.mark.e2e
def test_eval_retests_a_checkpoint_under_another_protocol(inductive_run, tmp_path):
    run_dir, _, results, _ = inductive_run
    again = retest(run_dir, tmp_path / "again")  # the run's own protocol: the same numbers
    # eval tests only: no training speed, no validation score
    assert again == {k: v for k, v in results.items() if not k.startswith(("perf/", "val/"))}
    transductive = retest(run_dir, tmp_path / "other", "protocol=transductive")
    assert json.loads((tmp_path / "other" / "results.json").read_text()) == transductive
    assert transductive["protocol"] == "transductive" and "inductive_stats" not in transductive
    assert transductive["test/acc"] != results["test/acc"]
    with pytest.raises(ConfigError, match=r"^protocol=both: allowed: transductive, inductive$"):
        retest(run_dir, tmp_path / "bad", "protocol=both")
    assert not (tmp_path / "bad").exists()


@pytest.mark.e2e
def test_inductive_two_processes_equal_one(inductive_run):
    """No running statistics: the inductive numbers are the same on 1 and 2 DDP processes."""
    run_dir, params, one, one_episodes = inductive_run
    two_params, two, two_episodes = finish(
        run_dir.parent / "two", "hardware=ddp_cpu", *INDUCTIVE_RUN
    )
    assert max((params[k] - two_params[k]).abs().max().item() for k in params) < 1e-6
    assert two["protocol"] == "inductive"
    assert one["test/acc"] == pytest.approx(two["test/acc"], abs=1e-6)
    assert len(one_episodes) == len(two_episodes)
    for a, b in zip(one_episodes, two_episodes):  # episode by episode, in order
        assert a.keys() == b.keys() and a["episode"] == b["episode"]
        assert {k: float(v) for k, v in a.items()} == pytest.approx(
            {k: float(v) for k, v in b.items()}, abs=1e-5
        )


# The protocol each paper reports (README "Which protocol do published numbers use?")
PRESET_PROTOCOLS = {
    "maml_omniglot_5w1s": ("transductive", None),
    "maml_omniglot_20w1s": ("transductive", None),
    "maml_mini_imagenet_5w1s": ("transductive", None),
    "maml_sinusoid": ("transductive", None),
    "protonet_omniglot_5w1s": ("inductive", "support"),
    "reptile_omniglot_5w1s": ("inductive", "support_plus_query"),
    "anil_omniglot_20w1s": ("transductive", None),
    "metaoptnet_mini_imagenet_5w1s": ("inductive", "support"),
    "r2d2_mini_imagenet_5w1s": ("inductive", "support"),
    "matching_omniglot_5w1s": ("transductive", None),
    "relation_omniglot_5w1s": ("transductive", None),
}


@pytest.mark.parametrize("name", sorted(PRESET_PROTOCOLS))
def test_preset_follows_its_paper_protocol(name):
    protocol, stats = PRESET_PROTOCOLS[name]
    cfg = compose([f"experiment={name}"])
    assert cfg.protocol == protocol and (stats is None or cfg.inductive_stats == stats)
    text = (Path(CONF_DIR) / "experiment" / f"{name}.yaml").read_text()
    comment = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert f"Protocol: {protocol}" in comment
