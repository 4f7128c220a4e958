"""Text backbones over padded token ids ``[N, L]`` (int64, 0 = padding; see metalab.data.text).

Like the image backbones they are ``features`` (ids -> a flat embedding) then ``head``, so every
algorithm, the vmap engine and DDP use them unchanged. No dropout and no batch norm: a task's
predictions depend on that task's sentences only, and vmap needs no randomness.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from metalab.backbones.base import Backbone
from metalab.errors import ConfigError, require_positive_number

TEXT = ("text",)


def rescale(z: torch.Tensor, scale: float | None) -> torch.Tensor:
    """Unit length times ``scale`` (None: as is). Squared distances between such embeddings are
    cosine distances: a sentence's length stops weighing on them, as in the cosine of the
    bag-of-words baseline (CLINC150 5-way 1-shot, ProtoNet on mean-pooled embeddings: 59% raw,
    70% rescaled, after 200 steps)."""
    return z if scale is None else nn.functional.normalize(z, dim=1) * scale


def soft_normalize(z: torch.Tensor, floor: float) -> torch.Tensor:
    """``z / sqrt(|z|^2 + floor^2)``: unit length where ``|z| >> floor``, shrinking to zero with
    ``z``. Plain normalisation has a gradient of size 1/|z|, unbounded as |z| -> 0: a sentence on
    which almost no filter fires (ReLU, max-pool) got a one-hot direction blown up to full length
    and a huge gradient, harmless under Adam (scale-free) but fatal to MAML's fixed-size inner SGD
    step (CLINC150, alpha 0.4: NaN at step 222). Here the gradient is at most 1/floor and the
    curvature about 1/floor^2."""
    return z / (z.pow(2).sum(dim=1, keepdim=True) + floor**2).sqrt()


def token_ids(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids as int64 and the mask of real tokens. Float zeros arrive from Backbone's dry run."""
    ids = x.long()
    return ids, ids > 0


def check_bag(bag, floor) -> None:
    if not isinstance(bag, bool):
        raise ConfigError("backbone.bag", bag, "must be true or false")
    require_positive_number("backbone.floor", floor)


def embedding(vocab_size: int, dim: int, std: float) -> nn.Embedding:
    """Token embeddings (id 0 = padding) of initial scale ``std`` (backbone.embed_std)."""
    require_positive_number("backbone.embed_std", std)
    layer = nn.Embedding(vocab_size + 1, dim, padding_idx=0)
    with torch.no_grad():
        layer.weight.mul_(std)
    return layer


def beside_mean_embedding(
    z: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor, floor: float
) -> torch.Tensor:
    """SWEM-concat (Shen et al. 2018): ``z`` beside the mean of the real tokens' embeddings
    (``tokens``: ``[N, L, E]``, zero at padding), each half normalised softly, unit length
    together (where neither half is near zero)."""
    mean = tokens.sum(1) / mask.sum(1, keepdim=True).clamp(min=1).to(tokens.dtype)
    return torch.cat([soft_normalize(z, floor), soft_normalize(mean, floor)], dim=1) / 2**0.5


class CNNFeatures(nn.Module):
    """Kim (2014): embeddings, parallel 1-D convolutions, ReLU, max-pool over time, concatenated.

    ``bag``: the mean of the token embeddings beside them (SWEM-concat, Shen et al. ACL 2018),
    each part L2-normalised. Test intents come from unseen domains whose keywords the filters
    were never trained to detect; the mean still tells such words apart (an embedding is a
    random projection of its token until trained), as the bag-of-words baseline does, and
    meta-training learns which tokens matter. ``embed_std``: the embeddings' initial scale; with
    Adam a parameter moves by about the learning rate per step, so a smaller scale is a
    proportionally faster embedding learning rate (every output is normalised). ``floor``: each
    half is normalised softly (``soft_normalize``), so that a near-zero half keeps gradients
    bounded.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        filters: int,
        widths,
        scale=None,
        bag: bool = False,
        embed_std: float = 1.0,
        floor: float = 0.05,
    ):
        super().__init__()
        check_bag(bag, floor)
        self.widths, self.scale, self.bag, self.floor = tuple(widths), scale, bag, float(floor)
        self.embedding = embedding(vocab_size, embed_dim, embed_std)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, filters, w) for w in self.widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = token_ids(x)
        tokens = self.embedding(ids) * mask.unsqueeze(-1)  # [N, L, E]
        emb = tokens.transpose(1, 2)  # [N, E, L]
        # zeros after every sentence, so that each real token starts a window of every width
        # whatever padding follows it
        emb = nn.functional.pad(emb, (0, max(self.widths) - 1))
        keep = mask[:, None, :].to(emb.dtype)
        pooled = []
        for conv in self.convs:
            # windows that start on a real token; ReLU >= 0, so zeroing the others and taking
            # the max is the max over the real windows
            h = torch.relu(conv(emb))[:, :, : ids.shape[1]] * keep
            pooled.append(h.amax(dim=2))
        z = torch.cat(pooled, dim=1)
        if self.bag:
            z = beside_mean_embedding(z, tokens, mask, self.floor)
        return rescale(z, self.scale)


class TextCNN(Backbone):
    inputs = TEXT

    def __init__(
        self,
        in_shape,
        out_dim=None,
        vocab_size: int = 8000,
        embed_dim: int = 128,
        filters: int = 100,
        widths=(3, 4, 5),
        scale: float | None = 5.0,
        bag: bool = True,
        embed_std: float = 0.1,
        floor: float = 0.05,
    ):
        features = CNNFeatures(vocab_size, embed_dim, filters, widths, scale, bag, embed_std, floor)
        super().__init__(features, in_shape, out_dim)


@contextmanager
def plain_attention():
    """One code path for attention: the math kernel (the fused CPU kernels have no second
    derivative, which MAML needs) and no inference fast path (it has no vmap rule)."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


class TransformerFeatures(nn.Module):
    """Token + learned position embeddings, a pre-norm ``nn.TransformerEncoder``, mean pooling
    over the real tokens. ``bag``, ``embed_std``, ``floor``: as CNNFeatures (the mean of the
    token embeddings, without positions, beside the encoder's output)."""

    def __init__(
        self,
        vocab_size: int,
        max_length: int,
        dim: int,
        heads: int,
        layers: int,
        ff_dim: int,
        scale=None,
        bag: bool = False,
        embed_std: float = 1.0,
        floor: float = 0.05,
    ):
        super().__init__()
        check_bag(bag, floor)
        self.scale, self.bag, self.floor = scale, bag, float(floor)
        self.embedding = embedding(vocab_size, dim, embed_std)
        self.position = nn.Parameter(torch.randn(max_length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, ff_dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = token_ids(x)
        tokens = self.embedding(ids)
        h = tokens + self.position[: ids.shape[1]]
        # an additive float mask (not a bool one): the same math on every code path, vmap too
        pad = torch.zeros(mask.shape, dtype=h.dtype, device=h.device).masked_fill(~mask, -1e9)
        with plain_attention():
            h = self.norm(self.encoder(h, src_key_padding_mask=pad))
        weights = mask.to(h.dtype).unsqueeze(-1)
        z = (h * weights).sum(1) / weights.sum(1).clamp(min=1)
        if self.bag:
            z = beside_mean_embedding(z, tokens * weights, mask, self.floor)
        return rescale(z, self.scale)


class TextTransformer(Backbone):
    inputs = TEXT

    def __init__(
        self,
        in_shape,
        out_dim=None,
        vocab_size: int = 8000,
        dim: int = 128,
        heads: int = 4,
        layers: int = 2,
        ff_dim: int = 256,
        scale: float | None = 5.0,
        bag: bool = True,
        embed_std: float = 0.1,
        floor: float = 0.05,
    ):
        features = TransformerFeatures(
            vocab_size, in_shape[0], dim, heads, layers, ff_dim, scale, bag, embed_std, floor
        )
        super().__init__(features, in_shape, out_dim)


def require_model_folder(key: str, path) -> Path:
    """A pretrained model is read from a local folder only, never downloaded."""
    if path is None or not str(path).strip():
        raise ConfigError(
            key,
            path,
            "set it to a local folder holding a pretrained model "
            "(transformers' save_pretrained); nothing is downloaded",
        )
    folder = Path(str(path)).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(
            key,
            path,
            "no pretrained model there (no config.json): give a local "
            "folder written by transformers' save_pretrained; nothing "
            "is downloaded",
        )
    return folder


class PretrainedFeatures(nn.Module):
    """A Hugging Face encoder, its last hidden states mean-pooled over the real tokens. Ids
    arrive shifted by one (0 = padding), as the dataset's tokenizer wrote them."""

    def __init__(self, path, scale=None):
        super().__init__()
        from transformers import AutoModel  # slow import, text_pretrained only

        self.scale = scale
        self.encoder = AutoModel.from_pretrained(str(path), local_files_only=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = token_ids(x)
        out = self.encoder(input_ids=(ids - 1).clamp(min=0), attention_mask=mask.long())
        h, weights = out.last_hidden_state, mask.to(out.last_hidden_state.dtype).unsqueeze(-1)
        return rescale((h * weights).sum(1) / weights.sum(1).clamp(min=1), self.scale)


class TextPretrained(Backbone):
    inputs = TEXT

    def __init__(
        self, in_shape, out_dim=None, path=None, tokenizer=None, scale: float | None = 5.0
    ):
        # ``tokenizer`` is for the dataset (conf/backbone/text_pretrained.yaml): the model's own
        folder = require_model_folder("backbone.path", path)
        super().__init__(PretrainedFeatures(folder, scale), in_shape, out_dim)
