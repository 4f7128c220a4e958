"""Few-shot text classification: CLINC150 split by domain, a tokenizer trained on meta-train only,
episodes of token ids, the text backbones under every algorithm and engine, DDP, and the one-line
errors (the bag-of-words baseline: test_baselines)."""

import json
import re
from functools import partial

import pytest
import torch
from omegaconf import OmegaConf

from helpers import CLINC, SMALL_CNN, TINY, compose, needs_clinc, train_cli
from metalab.algorithms.inner_loop import SGD, InnerLoop, Mode
from metalab.backbones.text import TextCNN, TextTransformer
from metalab.data.episodes import EpisodeShape
from metalab.data.sampler import generator
from metalab.data.text import load_clinc150, load_text, read_rows
from metalab.errors import ConfigError
from metalab.run.config import check_config
from metalab.run.training import run

CLINC_ARGS = [
    "dataset=clinc150",
    f"dataset.root={CLINC}",
    "dataset.queries=3",
    "logger=csv",
    "algorithm.meta_batch=2",
]


@pytest.fixture(scope="module")
def clinc():
    """CLINC150 as the runs below load it (the same cache: tokenised once per checkout)."""
    return load_clinc150(CLINC, compose().paths.cache_dir)


def rows_file(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def toy_rows(domains=4, labels=3, per_label=6):
    """Sentences made of per-label words; domain d's words carry a marker ``zq<d>`` so that the
    tokenizer's vocabulary shows which domains it saw."""
    return [
        {
            "text": f"please zq{d} w{d}x{k} item {i} w{d}x{k}",
            "label": f"d{d}l{k}",
            "domain": f"dom{d}",
        }
        for d in range(domains)
        for k in range(labels)
        for i in range(per_label)
    ]


# -- data ---------------------------------------------------------------------------------------
@needs_clinc
def test_clinc_split_is_by_domain_and_disjoint(clinc):
    sources = clinc
    domains = {s: set(src.domain_names) for s, src in sources.items()}
    assert [len(domains[s]) for s in ("train", "val", "test")] == [6, 1, 3]
    assert not (
        domains["train"] & domains["val"]
        or domains["train"] & domains["test"]
        or domains["val"] & domains["test"]
    )
    official = json.loads((CLINC / "domains.json").read_text())
    assert set().union(*domains.values()) == set(official)
    for split, src in sources.items():  # every intent of a domain, with all its 150 utterances
        assert sorted(src.class_names) == sorted(i for d in domains[split] for i in official[d])
        assert src.index.counts.tolist() == [150] * len(src.class_names)
    assert sources["test"].out_of_scope.shape[0] == 1200  # kept aside, unused


def test_named_domains_and_within_domain_episodes(tmp_path):
    path = rows_file(tmp_path / "toy.jsonl", toy_rows(domains=5))
    sources = load_text(
        path, tmp_path, val_domains=["dom4"], test_domains=["dom0", "dom2"], within_domain=True
    )
    assert sources["test"].domain_names == ["dom0", "dom2"]
    assert sources["val"].domain_names == ["dom4"]
    test = sources["test"]
    idx = test.plan(generator(0), 20, 3, 1, 2)
    domain_of_sample = test.class_domain[test.labels[idx]]  # [T, W, S+Q]
    assert (domain_of_sample == domain_of_sample[:, :1, :1]).all()  # one domain per episode
    assert len(domain_of_sample[:, 0, 0].unique()) == 2  # and both domains are drawn


def test_tokenizer_never_sees_validation_or_test_text(tmp_path):
    path = rows_file(tmp_path / "toy.jsonl", toy_rows())
    for kind in ("wordpiece", "word"):
        sources = load_text(
            path, tmp_path, val_domains=["dom1"], test_domains=["dom2"], tokenizer=kind
        )
        vocab = json.loads(sources["train"].tokenizer)["model"]["vocab"]
        assert {"zq0", "zq3", "w0x1"} <= set(vocab)  # train domains' words are whole tokens
        assert not {"zq1", "zq2", "w1x0", "w2x0"} & set(vocab), kind
        test_ids = sources["test"].tokens
        unk = vocab["[UNK]"] + 1
        if kind == "word":  # an unseen word is [UNK]
            assert (test_ids[:, 1] == unk).all()
        else:  # an unseen word is spelled in pieces learned from the training words
            assert (test_ids != unk).all()


@needs_clinc
def test_clinc_vocabulary_comes_from_the_training_domains(clinc):
    sources = clinc
    vocab = json.loads(sources["train"].tokenizer)["model"]["vocab"]
    rows = json.loads((CLINC / "data_full.json").read_text())
    train_intents = set(sources["train"].class_names)

    def words(train: bool) -> set[str]:
        return {
            w
            for key in ("train", "val", "test")
            for text, intent in rows[key]
            if (intent in train_intents) == train
            for w in re.findall(r"[a-z]+", text.lower())
        }

    train_words, unseen = words(True), words(False) - words(True)
    assert len(unseen) > 300  # val and test hold many words that meta-training lacks
    # every token is spelled from the training words: a word start, or a piece of a word
    starts = {w[:i] for w in train_words for i in range(1, len(w) + 1)}
    pieces = {w[i:j] for w in train_words for i in range(len(w)) for j in range(i + 1, len(w) + 1)}
    letters = [
        t for t in vocab if t.removeprefix("##").isascii() and t.removeprefix("##").isalpha()
    ]
    assert len(letters) > 5000
    for token in letters:
        assert (token[2:] in pieces) if token.startswith("##") else (token in starts), token


@needs_clinc
def test_episodes_hold_the_requested_shots_and_queries(clinc):
    test = clinc["test"]
    ways, shots, queries = 5, 2, 3
    test.check(EpisodeShape(ways, shots, queries))
    idx = test.plan(generator(1), 4, ways, shots, queries)
    eps = test.episodes(idx, shots)
    assert eps.support_x.shape == (4, ways * shots, test.tokens.shape[1])
    assert eps.query_x.shape == (4, ways * queries, test.tokens.shape[1])
    assert eps.support_x.dtype == torch.int64
    assert eps.support_y.tolist() == [[c for c in range(ways) for _ in range(shots)]] * 4
    assert eps.query_y.tolist() == [[c for c in range(ways) for _ in range(queries)]] * 4
    labels = test.labels[idx]  # [T, W, S+Q]: one intent per row, distinct sentences
    assert (labels == labels[:, :, :1]).all()
    assert all(len(set(task.flatten().tolist())) == ways * (shots + queries) for task in idx)
    assert all(len(set(task[:, 0].tolist())) == ways for task in labels)
    assert torch.equal(eps.support_x[0, 0], test.tokens[idx[0, 0, 0]])


# -- backbones ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: TextCNN((9,), out_dim=3, vocab_size=30, embed_dim=8, filters=4),
        lambda: TextTransformer((9,), out_dim=3, vocab_size=30, dim=8, heads=2, layers=1, ff_dim=8),
    ],
    ids=["text_cnn", "text_transformer"],
)
def test_meta_gradient_of_both_engines_matches_finite_differences(make, one_thread):
    torch.manual_seed(0)
    net = make().double()
    inner = InnerLoop(net)
    sx = torch.randint(1, 31, (2, 6, 9))
    sx[:, :, 6:] = 0  # padding
    sy = torch.arange(6).remainder(3).expand(2, -1)

    def loss(engine):
        preds, _ = inner.run(inner.params(), sx, sy, sx, 1, SGD(0.5), Mode.SECOND_ORDER, engine)
        return torch.nn.functional.cross_entropy(preds.flatten(0, 1), sy.flatten())

    grads = {}
    for engine in ("loop", "vmap"):
        net.zero_grad()
        loss(engine).backward()
        grads[engine] = {k: p.grad.clone() for k, p in net.named_parameters()}
    for name, p in net.named_parameters():
        where = (int(sx[0, 0, 0]), 0) if "embedding" in name else (0,) * p.dim()
        with torch.no_grad():
            p[where] += 1e-6
            up = loss("loop").item()
            p[where] -= 2e-6
            down = loss("loop").item()
            p[where] += 1e-6
        numeric = (up - down) / 2e-6
        for engine in ("loop", "vmap"):
            assert grads[engine][name][where].item() == pytest.approx(
                numeric, rel=1e-4, abs=1e-8
            ), (engine, name)


def test_padding_changes_nothing(one_thread):
    """A sentence's embedding does not depend on how much padding follows it."""
    torch.manual_seed(0)
    for net in (
        TextCNN((12,), vocab_size=30, embed_dim=8, filters=4),
        TextTransformer((12,), vocab_size=30, dim=8, heads=2, layers=1, ff_dim=8),
    ):
        ids = torch.randint(1, 31, (3, 6))
        padded = torch.cat([ids, torch.zeros(3, 6, dtype=torch.int64)], 1)
        assert torch.allclose(net.embed(ids), net.embed(padded), atol=1e-5)


@pytest.mark.parametrize(
    "make, width",
    [
        (partial(TextCNN, (7,), vocab_size=30, embed_dim=8, filters=4), 3 * 4),
        (partial(TextTransformer, (7,), vocab_size=30, dim=8, heads=2, layers=1, ff_dim=8), 8),
    ],
    ids=["text_cnn", "text_transformer"],
)
def test_bag_half_is_the_mean_token_embedding(make, width, one_thread):
    """bag=true: beside the convolutions (the encoder), the normalised mean of the sentence's
    token embeddings, without positions (checked against torch's embedding_bag, in direction:
    each half is normalised softly); bag=false: the convolutions (the encoder) alone."""
    torch.manual_seed(0)
    net = make(scale=5.0, bag=True)
    ids = torch.tensor([[3, 9, 9, 2, 0, 0, 0], [30, 1, 4, 5, 6, 7, 8]])
    z = net.embed(ids)
    assert z.shape == (2, width + 8) and torch.allclose(z.norm(dim=1), torch.full((2,), 5.0))
    lengths = (ids > 0).sum(1)
    flat = ids[ids > 0]  # the real tokens, sentence after sentence
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)[:-1]])
    mean = torch.nn.functional.embedding_bag(
        flat, net.features.embedding.weight, offsets, mode="mean"
    )
    unit = torch.nn.functional.normalize
    assert torch.allclose(unit(z[:, width:], dim=1), unit(mean, dim=1), atol=1e-6)
    assert make(bag=False).embed(ids).shape == (2, width)


def test_inner_step_stays_small_when_no_filter_fires(one_thread):
    """A sentence on which almost no convolution filter fires (here two filters, barely) must not
    get a huge gradient: MAML's inner SGD step (alpha 0.4) on it diverged to NaN on CLINC150 when
    each half was normalised exactly (gradient 1/|half|: here a step of ~5e4)."""
    torch.manual_seed(0)
    net = TextCNN((6,), out_dim=3, vocab_size=30, embed_dim=8, filters=4, bag=True).double()
    with torch.no_grad():
        for conv in net.features.convs:
            conv.bias.fill_(-100.0)  # every filter dead ...
        net.features.convs[0].weight.zero_()
        net.features.convs[0].bias[:2] = 1e-6  # ... but two, barely alive
    ids = torch.tensor([[3, 9, 2, 0, 0, 0], [5, 6, 7, 8, 0, 0], [11, 12, 0, 0, 0, 0]])
    loss = torch.nn.functional.cross_entropy(net(ids), torch.arange(3))
    grads = torch.autograd.grad(loss, list(net.parameters()))
    step = 0.4 * torch.cat([g.flatten() for g in grads]).norm()
    # floor 0.05 bounds the gradient of each half by 1/floor
    assert torch.isfinite(step) and step < 100


@pytest.mark.parametrize(
    "override, message",
    [
        ("backbone.floor=-0.5", "backbone.floor=-0.5: must be a positive number"),
        ("backbone.bag=maybe", "backbone.bag=maybe"),
        ("backbone.embed_std=0.0", "backbone.embed_std=0.0: must be a positive number"),
        ("backbone.embed_std=-1.5", "backbone.embed_std=-1.5: must be a positive number"),
        ("backbone=text_transformer backbone.bag=maybe", "backbone.bag=maybe"),
        ("backbone=text_transformer backbone.floor=0", "backbone.floor=0: must be a positive"),
    ],
)
def test_bad_text_backbone_options_are_one_line(override, message):
    cfg = compose(["dataset=clinc150", "backbone=text_cnn", *override.split()])
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert message in str(err.value) and "\n" not in str(err.value)


# -- end to end ---------------------------------------------------------------------------------
@needs_clinc
@pytest.mark.parametrize("algorithm", ["protonet", "maml", "fomaml", "reptile"])
def test_tiny_run_of_each_algorithm_on_text(tmp_path, algorithm, one_thread):
    extra = {"maml": ["algorithm.engine=vmap"], "reptile": ["algorithm.eval_inner_steps=2"]}
    cfg = compose(
        [*CLINC_ARGS, *SMALL_CNN, *TINY, f"algorithm={algorithm}", *extra.get(algorithm, [])],
        output_dir=tmp_path,
    )
    results = run(cfg, tmp_path)
    assert results["test/episodes"] == 10
    assert 0 <= results["test/acc"] <= 1 and 0 <= results["test/bow_1nn_acc"] <= 1
    assert "test/pixel_1nn_acc" not in results
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


@needs_clinc
def test_tiny_run_of_the_transformer_within_domains(tmp_path, one_thread):
    cfg = compose(
        [
            *CLINC_ARGS,
            *TINY,
            "algorithm=protonet",
            "backbone=text_transformer",
            "backbone.dim=16",
            "backbone.heads=2",
            "backbone.layers=1",
            "backbone.ff_dim=16",
            "dataset.within_domain=true",
        ],
        output_dir=tmp_path,
    )
    results = run(cfg, tmp_path)
    assert 0 <= results["test/acc"] <= 1 and results["test/episodes"] == 10


@pytest.fixture
def tiny_pretrained(tmp_path):
    """A tiny BERT with a WordPiece tokenizer, built and saved here: nothing is downloaded."""
    pytest.importorskip("transformers")  # the text extra
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        [r["text"] for r in toy_rows()],
        trainers.WordPieceTrainer(vocab_size=200, special_tokens=special),
    )
    folder = tmp_path / "tiny-bert"
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(folder)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def test_pretrained_encoder_from_a_local_folder(tmp_path, tiny_pretrained, one_thread):
    data = rows_file(tmp_path / "toy.jsonl", toy_rows(domains=6, labels=5, per_label=4))
    cfg = compose(
        [
            "dataset=text",
            f"dataset.root={data}",
            "dataset.val_domains=1",
            "dataset.test_domains=2",
            "dataset.queries=2",
            "backbone=text_pretrained",
            f"backbone.path={tiny_pretrained}",
            "logger=csv",
            *TINY,
        ],
        output_dir=tmp_path / "run",
    )
    assert cfg.dataset.tokenizer == str(tiny_pretrained)  # the model's own tokenizer
    results = run(cfg, tmp_path / "run")
    assert 0 <= results["test/acc"] <= 1


# -- DDP ----------------------------------------------------------------------------------------
@needs_clinc
def test_two_processes_equal_one_on_text(tmp_path):
    budget = [
        *CLINC_ARGS,
        *SMALL_CNN,
        "algorithm=maml",
        "algorithm.meta_batch=4",
        "steps=2",
        "val_every=2",
        "val_episodes=2",
        "test_episodes=4",
        "eval_batch=2",
        "algorithm.optimizer._target_=torch.optim.SGD",
        "algorithm.optimizer.lr=0.1",
        "algorithm.eval_inner_steps=1",
    ]
    done = {}
    for name, extra in (("one", []), ("two", ["hardware=ddp_cpu"])):
        proc = train_cli(tmp_path / name, *budget, *extra, env={"OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        state = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)
        done[name] = state["state_dict"], json.loads((tmp_path / name / "results.json").read_text())
    (one, one_res), (two, two_res) = done["one"], done["two"]
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-6
    assert one_res["test/episodes"] == two_res["test/episodes"] == 4
    assert one_res["test/acc"] == pytest.approx(two_res["test/acc"], abs=1e-6)
    assert one_res["test/bow_1nn_acc"] == pytest.approx(two_res["test/bow_1nn_acc"], abs=1e-6)


# -- errors -------------------------------------------------------------------------------------
def test_missing_file_and_bad_rows_are_named(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        read_rows(tmp_path / "absent.jsonl")
    with pytest.raises(ConfigError, match="must be a .json, .jsonl, .csv file"):
        read_rows(tmp_path / "rows.txt")
    (tmp_path / "a.jsonl").write_text('{"text": "hi", "label": "x"}\n\n{"text": "", "label": 1}\n')
    (tmp_path / "b.csv").write_text("text,label,domain\nhello,greet,small\n,greet,small\n")
    (tmp_path / "c.json").write_text('[\n  ["hello", "greet"],\n  ["bye"]\n]\n')
    (tmp_path / "d.json").write_text('{"train": [["hello", "greet"],\n  ["hi" "greet"]]}')
    for name, line in (("a.jsonl", 3), ("b.csv", 3), ("c.json", 3), ("d.json", 2)):
        with pytest.raises(ConfigError) as err:
            read_rows(tmp_path / name)
        assert f"{tmp_path / name}:{line}" in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="header must name the columns text, label"):
        (tmp_path / "e.csv").write_text("sentence,intent\nhello,greet\n")
        read_rows(tmp_path / "e.csv")


def test_too_few_utterances_per_label_names_the_label(tmp_path):
    rows = toy_rows(per_label=6)
    rows = [r for r in rows if not (r["label"] == "d2l1" and "item 4" in r["text"])]
    path = rows_file(tmp_path / "toy.jsonl", rows)
    sources = load_text(path, tmp_path, val_domains=["dom1"], test_domains=["dom2"])
    with pytest.raises(
        ConfigError,
        match=r"dataset.shots \+ dataset.queries=6: label 'd2l1' of "
        r"the test split has only 5 utterances in .*toy.jsonl",
    ):
        sources["test"].check(EpisodeShape(3, 1, 5))
    sources["test"].check(EpisodeShape(3, 1, 4))


@pytest.mark.parametrize(
    ("dataset", "backbone", "message"),
    [
        (
            "clinc150",
            "conv4",
            "backbone=conv4: needs image inputs, and dataset=clinc150 has text "
            "inputs; use backbone=text_cnn",
        ),
        (
            "glyphs",
            "text_cnn",
            "backbone=text_cnn: needs text inputs, and dataset=glyphs has image "
            "inputs; use backbone=conv4",
        ),
        (
            "clinc150",
            "mlp",
            "backbone=mlp: needs image or vector inputs, and dataset=clinc150 has text inputs",
        ),
    ],
)
def test_image_and_text_mismatch_is_refused(dataset, backbone, message):
    cfg = compose([f"dataset={dataset}", f"backbone={backbone}"])
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert message in str(err.value)


def test_missing_pretrained_path_is_one_line_naming_it():
    cfg = compose(
        ["dataset=clinc150", "backbone=text_pretrained", "backbone.path=/nonexistent/bert"]
    )
    with pytest.raises(ConfigError) as err:
        check_config(cfg)  # before any data or model is loaded
    assert str(err.value).startswith("backbone.path=/nonexistent/bert: no pretrained model")
    assert "nothing is downloaded" in str(err.value) and "\n" not in str(err.value)
    cfg = compose(["dataset=clinc150", "backbone=text_pretrained"])
    with pytest.raises(ConfigError, match="backbone.path=None: set it to a local folder"):
        check_config(cfg)
    assert OmegaConf.select(cfg, "dataset.tokenizer") is None
