"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra 2016): a query's
class distribution is an attention-weighted sum of the support labels,
``p(y | x) = sum_i softmax_i(c(f(x), g(x_i))) onehot(y_i)``, with ``c`` the similarity to the
L2-normalised support embedding (the query's norm acts as an inverse temperature, as in easyfsl
and the implementation it follows). ``fce: true`` adds the paper's full-context embeddings: ``g``
a bidirectional LSTM over the support set (plus a skip connection), ``f`` an LSTM that attends
to the support set for as many steps as it has examples. Scores are log-probabilities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metalab.algorithms.embedding import EmbeddingLearner


class MatchingNetworks(EmbeddingLearner):
    def __init__(self, backbone, fce: bool = False, **kwargs):
        super().__init__(backbone, **kwargs)
        self.fce = bool(fce)
        if self.fce:
            dim = self.net.feature_dim
            self.support_encoder = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
            self.query_encoder = nn.LSTMCell(2 * dim, dim)

    def encode_support(self, support: torch.Tensor) -> torch.Tensor:
        """g: the support embeddings plus both directions of a BiLSTM run over them."""
        forward, backward = self.support_encoder(support[None])[0][0].chunk(2, dim=1)
        return support + forward + backward

    def encode_query(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """f: an LSTM whose input is the query and its attention read-out of the support set."""
        hidden, cell = query, torch.zeros_like(query)
        for _ in range(len(support)):
            read = torch.softmax(hidden @ support.T, dim=1) @ support
            hidden, cell = self.query_encoder(torch.cat([query, read], 1), (hidden, cell))
            hidden = hidden + query
        return hidden

    def classify(self, support, labels, query, ways):
        if self.fce:
            support = self.encode_support(support)
            query = self.encode_query(query, support)
        attention = torch.softmax(query @ F.normalize(support, dim=1).T, dim=1)
        return (attention @ F.one_hot(labels, ways).to(attention.dtype) + 1e-6).log()
