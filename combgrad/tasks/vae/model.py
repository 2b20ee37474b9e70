"""The discrete VAE of the I-MLE and AIMLE papers: an MLP encoder giving ``m`` groups of ``n``
scores, a k-hot code per group (top-k through the estimator), an MLP decoder.

References:
    M. Niepert, P. Minervini, L. Franceschi. Implicit MLE: Backpropagating Through
    Discrete Exponential Family Distributions. NeurIPS 2021.

    P. Minervini, L. Franceschi, M. Niepert. Adaptive Perturbation-Based Gradient
    Estimation for Discrete Latent Variable Models. AAAI 2023 (reference code:
    EdinburghNLP/torch-adaptive-imle, ``cli/vae-cli.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F


class DiscreteVAE(nn.Module):
    """Encoder ``[B, P] -> scores [B, m, n]``, code ``= select(scores)`` (k-hot per group),
    decoder ``code [B, m * n] -> pixel logits [B, P]``.

    The reference's layout with its widths as arguments: encoder ``P -> h -> h/2 ->
    m n`` and decoder ``m n -> h/2 -> h -> P`` with ReLUs (h = 512 there).

    Args:
        pixels: Pixels per image ``P``.
        groups: Latent groups ``m``.
        group_size: Scores per group ``n`` (the top-k runs over these).
        hidden: The wider hidden layer ``h`` (the other has ``h // 2`` units).

    Example:
        >>> import combgrad as cg
        >>> model = DiscreteVAE(pixels=6, groups=2, group_size=4, hidden=8)
        >>> select = cg.differentiable(solver="topk", estimator="ste", k=2)
        >>> scores, code, reconstruction = model(torch.rand(3, 6), select)
        >>> scores.shape, code.sum(-1).tolist()[0], reconstruction.shape
        (torch.Size([3, 2, 4]), [2.0, 2.0], torch.Size([3, 6]))
    """

    def __init__(self, pixels: int, groups: int, group_size: int, hidden: int) -> None:
        super().__init__()
        self.groups, self.group_size = groups, group_size
        code, narrow = groups * group_size, max(1, hidden // 2)
        self.encoder = nn.Sequential(
            nn.Linear(pixels, hidden), nn.ReLU(), nn.Linear(hidden, narrow), nn.ReLU(), nn.Linear(narrow, code)
        )
        self.decoder = nn.Sequential(
            nn.Linear(code, narrow), nn.ReLU(), nn.Linear(narrow, hidden), nn.ReLU(), nn.Linear(hidden, pixels)
        )

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Latent scores ``[B, m, n]`` of images ``x [B, P]``."""
        return self.encoder(x).unflatten(-1, (self.groups, self.group_size))

    def forward(
        self, x: torch.Tensor, select: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(scores [B, m, n], code [*S, B, m, n], reconstruction logits [*S, B, P])``; ``S`` is
        there when ``select`` returns one code per sample (an estimator with ``reduce=False``)."""
        scores = self.scores(x)
        code = select(scores)
        return scores, code, self.decoder(code.flatten(-2))


def negative_elbo(
    scores: torch.Tensor, reconstruction: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image ``(loss, reconstruction, kl)`` ``[B]`` each: the reference's objective.

    ``reconstruction`` is the Bernoulli negative log-likelihood of the binary
    pixels, summed over pixels (averaged over samples when there are several).
    ``kl`` is the reference's KL term: each group's ``softmax(scores)`` against the
    uniform distribution over its ``n`` entries, ``sum q (log q + log n)``, summed
    over the groups. It is the KL of a one-of-n (categorical) code, which the
    reference uses also for its k-of-n codes; the exact KL of the k-subset
    distribution to the uniform prior over subsets has no closed form this cheap.
    ``loss = reconstruction + kl``.

    Args:
        scores: ``[B, m, n]`` encoder scores.
        reconstruction: ``[*S, B, P]`` pixel logits.
        x: ``[B, P]`` binary pixels.

    Example:
        >>> scores = torch.zeros(1, 2, 4)  # uniform groups: KL 0
        >>> loss, nll, kl = negative_elbo(scores, torch.zeros(1, 3), torch.tensor([[0.0, 1.0, 1.0]]))
        >>> round(float(nll), 4), float(kl)  # 3 pixels at probability 1/2: 3 log 2
        (2.0794, 0.0)
    """
    nll = F.binary_cross_entropy_with_logits(reconstruction, x.expand_as(reconstruction), reduction="none").sum(-1)
    if nll.ndim > 1:
        nll = nll.mean(0)
    log_q = torch.log_softmax(scores, dim=-1)
    kl = (log_q.exp() * (log_q + math.log(scores.shape[-1]))).sum((-2, -1))
    return nll + kl, nll, kl


__all__ = ["DiscreteVAE", "negative_elbo"]
