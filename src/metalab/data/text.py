"""Few-shot text classification: labelled sentences -> padded token ids, split by domain.

Rows are ``(text, label[, domain])`` read from JSON, JSONL or CSV (``load_text``), or CLINC150's
own files (``load_clinc150``). Classes (labels) are split by domain into train / val / test, so
test classes and their domains are unseen in meta-training; a row without a domain is its own
label's domain (a plain class split). The tokenizer is trained on the meta-train sentences only
(``tokenizers``: WordPiece, or a word vocabulary with ``[UNK]``), or is a pretrained model's own
(a local folder). Every sentence becomes one row of an int64 tensor ``[N, L]`` holding
``1 + token id``, 0 being padding, cached on disk like the image datasets and gathered by the same
index sampler as images (metalab.data.sampler).
"""

from __future__ import annotations

import csv
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import ListConfig

from metalab.data.cache import cache_key, cached, signature
from metalab.data.episodes import Episodes, EpisodeShape
from metalab.data.sampler import ClassIndex, check_episode_shape, split_support_query
from metalab.errors import ConfigError, require_positive

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
FORMATS = (".json", ".jsonl", ".csv")
TRAINED = ("wordpiece", "word")  # tokenizers trained on the meta-train split
ROW = "a row is {text, label[, domain]} (or [text, label, domain?]) with a non-empty text"
CLINC_URL = "https://github.com/clinc/oos-eval (data/data_full.json and data/domains.json)"
_RECIPE = "text-v1"  # bump when reading or tokenising changes: part of the cache key


@dataclass(frozen=True)
class Row:
    text: str
    label: str
    domain: str
    where: str  # file:line, for error messages


# ----------------------------------------------------------------------------- reading rows


def _row(item, where: str) -> Row:
    """One ``(text, label[, domain])`` row from a JSON object / list or a CSV record."""
    if isinstance(item, dict):
        fields = [item.get("text"), item.get("label"), item.get("domain", item.get("group"))]
    elif isinstance(item, list) and len(item) in (2, 3):
        fields = [*item, None][:3]
    else:
        raise ConfigError("dataset.root", where, f"bad row {str(item)[:80]!r}: {ROW}")
    text, label, domain = fields
    if (
        not isinstance(text, str)
        or not text.strip()
        or label in (None, "")
        or not isinstance(label, (str, int))
        or not isinstance(domain, (str, int, type(None)))
    ):
        raise ConfigError("dataset.root", where, f"bad row {str(item)[:80]!r}: {ROW}")
    label = str(label)
    return Row(text, label, label if domain in (None, "") else str(domain), where)


def _json_items(text: str, path: Path) -> list[tuple[str | None, int, object]]:
    """(key, line, item) of each row of a JSON array of rows, or of each array of a JSON object
    of arrays (CLINC150's ``{"train": [...], "val": [...]}``). Parsed item by item so that a bad
    row can be named by its line."""
    decoder = json.JSONDecoder()

    counted = [0, 1]  # position, its line: counted forward only (a file is read once)

    def line_at(i: int) -> int:
        counted[1] += text.count("\n", counted[0], i)
        counted[0] = i
        return counted[1]

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def expect(i: int, char: str) -> int:
        if not text.startswith(char, i):
            line = line_at(i)
            raise ConfigError(
                "dataset.root",
                f"{path}:{line}",
                f"expected {char!r}: a JSON file holds an array of rows or an "
                f"object of arrays of rows; {ROW}",
            )
        return skip(i + 1)

    def array(i: int, key: str | None, out: list) -> int:
        i = expect(i, "[")
        while not text.startswith("]", i):
            item, end = decoder.raw_decode(text, i)
            out.append((key, line_at(i), item))
            i = skip(end)
            if not text.startswith("]", i):
                i = expect(i, ",")
        return skip(i + 1)

    out: list = []
    try:
        json.loads(text)  # syntax errors first, with their own line
        i = skip(0)
        if not text.startswith("{", i):
            array(i, None, out)
            return out
        i = skip(i + 1)
        while not text.startswith("}", i):
            key, end = decoder.raw_decode(text, i)
            i = array(expect(skip(end), ":"), key, out)
            if not text.startswith("}", i):
                i = expect(i, ",")
    except json.JSONDecodeError as err:
        raise ConfigError(
            "dataset.root", f"{path}:{err.lineno}", f"not valid JSON ({err.msg})"
        ) from err
    return out


def read_rows(path: str | Path, keys=None) -> list[Row]:
    """The rows of a ``.json`` / ``.jsonl`` / ``.csv`` file (CSV: a header naming ``text``,
    ``label`` and optionally ``domain``). ``keys``: of a JSON object of arrays, read only these."""
    path = Path(str(path)).expanduser()
    if path.suffix not in FORMATS:
        raise ConfigError("dataset.root", path, f"must be a {', '.join(FORMATS)} file; {ROW}")
    if not path.is_file():
        raise ConfigError(
            "dataset.root",
            path,
            f"no such file; expected a {', '.join(FORMATS)} file of rows: {ROW}",
        )
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"text", "label"} <= set(reader.fieldnames or ()):
                raise ConfigError(
                    "dataset.root",
                    f"{path}:1",
                    "the CSV header must name the "
                    f"columns text, label (and optionally domain); found "
                    f"{reader.fieldnames}",
                )
            return [_row(dict(r), f"{path}:{reader.line_num}") for r in reader]
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ConfigError(
                        "dataset.root", f"{path}:{n}", f"not valid JSON ({err.msg}); {ROW}"
                    ) from err
                rows.append(_row(item, f"{path}:{n}"))
        return rows
    return [
        _row(item, f"{path}:{line}")
        for key, line, item in _json_items(text, path)
        if keys is None or key in keys
    ]


def read_clinc150(root: str | Path) -> tuple[list[Row], list[str]]:
    """CLINC150's 150 intents (all 150 utterances of each: its train, val and test lists) with
    their domains, and the out-of-scope utterances (kept aside)."""
    root = Path(str(root)).expanduser()
    files = [root / "data_full.json", root / "domains.json"]
    for file in files:
        if not file.is_file():
            raise ConfigError(
                "dataset.root",
                root,
                f"no {file.name} there; CLINC150's files come from {CLINC_URL}",
            )
    domain_of = {
        intent: domain
        for domain, intents in json.loads(files[1].read_text()).items()
        for intent in intents
    }
    rows, oos = [], []
    for key, line, item in _json_items(files[0].read_text(encoding="utf-8"), files[0]):
        row = _row(item, f"{files[0]}:{line}")
        if key.startswith("oos"):
            oos.append(row.text)
        elif row.label not in domain_of:
            raise ConfigError(
                "dataset.root", row.where, f"intent {row.label!r} is in no domain of {files[1]}"
            )
        else:
            rows.append(Row(row.text, row.label, domain_of[row.label], row.where))
    return rows, oos


# ----------------------------------------------------------------------------- splitting


def split_domains(domains: list[str], val, test, seed: int) -> dict[str, list[str]]:
    """Domains into train / val / test. ``val`` and ``test``: a count, a fraction in (0, 1) or
    a list of domain names; the rest is train. Counts are drawn with ``seed``."""
    domains = sorted(domains)
    named = {}
    for split, spec in (("val", val), ("test", test)):
        if isinstance(spec, str):
            spec = [spec]
        if isinstance(spec, (list, tuple, ListConfig)):
            unknown = [d for d in map(str, spec) if d not in domains]
            if unknown:
                raise ConfigError(
                    f"dataset.{split}_domains",
                    list(spec),
                    f"unknown domain(s) {unknown}; the data has {domains}",
                )
            named[split] = [str(d) for d in spec]
    free = [d for d in domains if not any(d in names for names in named.values())]
    order = random.Random(seed).sample(free, len(free))
    parts = dict(named)
    for split, spec in (("val", val), ("test", test)):
        if split in parts:
            continue
        if isinstance(spec, float) and 0 < spec < 1:
            spec = max(1, round(spec * len(domains)))
        if isinstance(spec, bool) or not isinstance(spec, int) or spec < 1:
            raise ConfigError(
                f"dataset.{split}_domains",
                spec,
                "must be a positive count, a fraction in (0, 1) or a list of "
                f"domain names from {domains}",
            )
        parts[split], order = order[:spec], order[spec:]
    if set(parts["val"]) & set(parts["test"]) or not order:
        raise ConfigError(
            "dataset.test_domains",
            test,
            f"with val_domains={val}: val and test must be disjoint and leave at "
            f"least one of the {len(domains)} domains for meta-training",
        )
    parts["train"] = order
    return {s: sorted(parts[s]) for s in SPLITS}


# ----------------------------------------------------------------------------- tokenising


def train_tokenizer(texts: list[str], kind: str, vocab_size: int):
    """A ``tokenizers`` tokenizer trained on ``texts`` (lower-cased, split at spaces and
    punctuation): WordPiece sub-words, or whole words; ``[UNK]`` for what it cannot spell."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    if kind == "wordpiece":
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=["[UNK]"], show_progress=False
        )
    else:
        tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size, special_tokens=["[UNK]"], show_progress=False
        )
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def pretrained_tokenizer(path):
    """The tokenizer saved beside a pretrained model (a local folder, never downloaded)."""
    from transformers import AutoTokenizer

    from metalab.backbones.text import require_model_folder

    return AutoTokenizer.from_pretrained(
        str(require_model_folder("dataset.tokenizer", path)), local_files_only=True
    )


def encode(tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    """``[N, L]`` int64: ``1 + token id``, 0 after the end; L = the longest, at most max_length."""
    if not texts:
        return torch.zeros(0, 1, dtype=torch.int64)
    if hasattr(tokenizer, "encode_batch"):  # tokenizers.Tokenizer
        ids = [e.ids[:max_length] for e in tokenizer.encode_batch(texts)]
    else:  # a transformers tokenizer (adds the model's own special tokens)
        ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    width = max(1, max(map(len, ids), default=1))
    return (
        torch.tensor([row + [-1] * (width - len(row)) for row in ids], dtype=torch.int64).reshape(
            len(ids), width
        )
        + 1
    )


def _build(
    rows: list[Row],
    oos: list[str],
    parts: dict[str, list[str]],
    tokenizer: str,
    vocab_size: int,
    max_length: int,
) -> dict:
    """Token ids, labels and class names of each split; the tokenizer sees train rows only."""
    split_of = {d: s for s, names in parts.items() for d in names}
    by_split = {s: [r for r in rows if split_of[r.domain] == s] for s in SPLITS}
    if tokenizer in TRAINED:
        tok = train_tokenizer([r.text for r in by_split["train"]], tokenizer, vocab_size)
        vocab, spec = tok.get_vocab_size(), tok.to_str()
    else:
        tok = pretrained_tokenizer(tokenizer)
        vocab, spec = len(tok), str(tokenizer)
    out = {"vocab": vocab, "tokenizer": spec, "oos": encode(tok, oos, max_length)}
    for s, split_rows in by_split.items():
        classes = sorted({(r.domain, r.label) for r in split_rows})
        index = {c: i for i, c in enumerate(classes)}
        out[s] = {
            "tokens": encode(tok, [r.text for r in split_rows], max_length),
            "labels": torch.tensor(
                [index[(r.domain, r.label)] for r in split_rows], dtype=torch.int64
            ),
            "class_names": [label for _, label in classes],
            "class_domains": [domain for domain, _ in classes],
        }
    return out


# ----------------------------------------------------------------------------- episodes


class TextEpisodes:
    """Draws classification episodes of token ids from one split held on the training device.
    ``within_domain``: all classes of an episode come from one domain."""

    def __init__(
        self,
        data: dict,
        name: str,
        within_domain: bool = False,
        where: str = "",
        tokenizer: str = "",
    ):
        self.name, self.where, self.within_domain = name, where, bool(within_domain)
        self.tokenizer = tokenizer  # the trained tokenizer's JSON, or the pretrained model folder
        self.tokens, self.labels = data["tokens"], data["labels"]
        self.class_names = data["class_names"]
        self.index = ClassIndex(self.labels, len(self.class_names))
        self.domain_names = sorted(set(data["class_domains"]))
        self.class_domain = torch.tensor(
            [self.domain_names.index(d) for d in data["class_domains"]], dtype=torch.int64
        )
        self.out_of_scope: torch.Tensor | None = None  # kept for a later open-set option

    def to(self, device) -> TextEpisodes:
        self.tokens = self.tokens.to(device)
        return self

    def check(self, shape: EpisodeShape) -> None:
        check_episode_shape(shape)
        ways, counts, need = shape.ways, self.index.counts, shape.shots + shape.queries
        fewest = int(counts.argmin()) if len(counts) else 0
        if len(counts) and counts[fewest] < need:
            raise ConfigError(
                f"{shape.key('shots')} + {shape.key('queries')}",
                need,
                f"label {self.class_names[fewest]!r} of the {self.name} split has "
                f"only {int(counts[fewest])} utterances{self.where}",
            )
        self.index.check(self.name, shape)
        if self.within_domain:
            per_domain = torch.bincount(self.class_domain, minlength=len(self.domain_names))
            small = int(per_domain.argmin())
            if per_domain[small] < ways:
                raise ConfigError(
                    shape.key("ways"),
                    ways,
                    f"with within_domain=true: domain "
                    f"{self.domain_names[small]!r} of the {self.name} split has "
                    f"only {int(per_domain[small])} labels",
                )

    def plan(self, gen: torch.Generator, num_tasks: int, ways: int, shots: int, queries: int):
        """Sentence indices ``[T, W, S+Q]``, as for images."""
        allowed = None
        if self.within_domain:
            domain = torch.randint(len(self.domain_names), (num_tasks, 1), generator=gen)
            allowed = self.class_domain[None] == domain
        return self.index.draw(gen, num_tasks, ways, shots + queries, allowed)

    def episodes(self, idx: torch.Tensor, shots: int, gens=None) -> Episodes:
        x = self.tokens[idx.to(self.tokens.device).flatten()]
        return split_support_query(x.view(*idx.shape, x.shape[-1]), shots)


# ----------------------------------------------------------------------------- entry points


def _sources(
    rows,
    oos,
    files,
    where="",
    *,
    cache_dir,
    name,
    val_domains,
    test_domains,
    split_seed: int = 0,
    within_domain: bool = False,
    tokenizer: str = "wordpiece",
    vocab_size: int = 8000,
    max_length: int = 32,
) -> dict:
    require_positive("dataset.vocab_size", vocab_size)
    require_positive("dataset.max_length", max_length)
    tokenizer = str(tokenizer)
    if tokenizer not in TRAINED and not Path(tokenizer).expanduser().is_dir():
        raise ConfigError(
            "dataset.tokenizer",
            tokenizer,
            f"allowed: {', '.join(TRAINED)} (trained on the meta-train split), or "
            "a local folder of a pretrained model (backbone=text_pretrained)",
        )
    parts = split_domains(
        sorted({r.domain for r in rows}), val_domains, test_domains, int(split_seed)
    )
    sig = signature(
        [*files, *(Path(tokenizer).expanduser().glob("*") if tokenizer not in TRAINED else ())]
    )
    key = cache_key(_RECIPE, name, sig, parts, tokenizer, vocab_size, max_length)
    data = cached(
        Path(cache_dir) / f"text_{name}_{key}.pt",
        lambda: _build(rows, oos, parts, tokenizer, vocab_size, max_length),
    )
    sources = {s: TextEpisodes(data[s], s, within_domain, where, data["tokenizer"]) for s in SPLITS}
    sources["test"].out_of_scope = data["oos"] if len(oos) else None
    counts = ", ".join(
        f"{s} {len(parts[s])} domains / {len(data[s]['class_names'])} labels" for s in SPLITS
    )
    log.info(
        f"{name}: {counts}; {len(rows)} sentences, vocabulary {data['vocab']} "
        f"({tokenizer}), {len(oos)} out-of-scope sentences kept aside"
    )
    return sources


def load_text(
    root,
    cache_dir,
    name: str = "text",
    val_domains=0.1,
    test_domains=0.3,
    split_seed: int = 0,
    within_domain: bool = False,
    tokenizer: str = "wordpiece",
    vocab_size: int = 8000,
    max_length: int = 32,
) -> dict[str, TextEpisodes]:
    """A user's few-shot text set: one ``.json`` / ``.jsonl`` / ``.csv`` file of rows."""
    knobs = {key: value for key, value in locals().items() if key != "root"}
    if root is None:
        raise ConfigError("dataset.root", root, f"set it to a {', '.join(FORMATS)} file; {ROW}")
    path = Path(str(root)).expanduser()
    rows = read_rows(path)
    if not rows:
        raise ConfigError("dataset.root", path, f"holds no rows; {ROW}")
    return _sources(rows, [], [path], f" in {path}", **knobs)


def load_clinc150(
    root,
    cache_dir,
    val_domains=1,
    test_domains=3,
    split_seed: int = 0,
    within_domain: bool = False,
    tokenizer: str = "wordpiece",
    vocab_size: int = 8000,
    max_length: int = 32,
) -> dict[str, TextEpisodes]:
    """CLINC150 (Larson et al., EMNLP 2019): 150 intents in 10 domains, split by domain; the
    knobs as load_text's (named, so that the dataset config's keys reach them)."""
    knobs = {key: value for key, value in locals().items() if key != "root"}
    rows, oos = read_clinc150(root)
    path = Path(str(root)).expanduser()
    return _sources(
        rows, oos, [path / "data_full.json", path / "domains.json"], name="clinc150", **knobs
    )
