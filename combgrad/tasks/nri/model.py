"""Networks of the NRI task: an MLP encoder giving one score per pair, a spanning-tree
latent graph through a solver layer, and an MLP decoder passing messages along its edges.

The encoder is NRI's factor-graph MLP encoder (Kipf et al., 2018): an MLP embeds each
particle's whole trajectory, pairs of embeddings become edge features, edges are
averaged back into particles and paired again, and a last layer reads one score per
ordered pair; the two scores of a pair are averaged ("symmetrised logits", as in
Paulus et al., 2020), so the scores ``[B, n, n]`` are symmetric with a zero diagonal.
The latent graph is the maximum spanning tree of those scores,
``argmax_{y in trees} <theta, y>`` (``cg.differentiable(solver="spanning_tree",
sense="max", estimator=...)``): a sample of the perturbed scores in training, the
exact tree in ``eval()`` mode. The decoder is NRI's MLP decoder with one edge type:
messages ``MLP([x_j, x_i])`` along the tree's edges are summed per receiver and an MLP
of the particle's state and its messages predicts the change to the next step.

References:
    T. Kipf, E. Fetaya, K.-C. Wang, M. Welling, R. Zemel. Neural Relational
    Inference for Interacting Systems. ICML 2018.

    M. B. Paulus, D. Choi, D. Tarlow, A. Krause, C. J. Maddison. Gradient Estimation
    with Stochastic Softmax Tricks. NeurIPS 2020.

    P. Minervini, L. Franceschi, M. Niepert. Adaptive Perturbation-Based Gradient
    Estimation for Discrete Latent Variable Models. AAAI 2023.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..._checks import check_positive_int


class MLP(nn.Module):
    """Two ELU layers and a batch norm over the features, NRI's encoder block: ``[..., in] -> [..., out]``.

    Example:
        >>> MLP(3, 8, 5)(torch.ones(2, 4, 3)).shape
        torch.Size([2, 4, 5])
    """

    def __init__(self, inputs: int, hidden: int, outputs: int) -> None:
        super().__init__()
        self.first = nn.Linear(inputs, hidden)
        self.second = nn.Linear(hidden, outputs)
        self.norm = nn.BatchNorm1d(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.elu(self.second(F.elu(self.first(x))))
        return self.norm(x.reshape(-1, x.shape[-1])).reshape(x.shape)


def _pairs(particles: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Senders and receivers of the ``n (n - 1)`` ordered pairs ``i != j`` (row-major order)."""
    index = torch.arange(particles, device=device)
    receivers, senders = torch.meshgrid(index, index, indexing="ij")
    off_diagonal = receivers != senders
    return senders[off_diagonal], receivers[off_diagonal]


class Encoder(nn.Module):
    """Trajectories ``[B, T, n, F]`` -> symmetric pair scores ``[B, n, n]`` (zero diagonal).

    Args:
        steps: Time steps ``T`` of a trajectory.
        features: Features ``F`` per particle and step.
        hidden: Width of every layer.

    Example:
        >>> scores = Encoder(steps=3, features=4, hidden=8)(torch.randn(2, 3, 5, 4))
        >>> scores.shape, bool((scores == scores.mT).all()), bool((scores.diagonal(dim1=1, dim2=2) == 0).all())
        (torch.Size([2, 5, 5]), True, True)
    """

    def __init__(self, *, steps: int, features: int, hidden: int) -> None:
        super().__init__()
        self.node = MLP(steps * features, hidden, hidden)
        self.edge = MLP(2 * hidden, hidden, hidden)
        self.node_again = MLP(hidden, hidden, hidden)
        self.edge_again = MLP(3 * hidden, hidden, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, trajectories: torch.Tensor) -> torch.Tensor:
        batch, steps, particles, features = trajectories.shape
        senders, receivers = _pairs(particles, trajectories.device)
        h = self.node(trajectories.permute(0, 2, 1, 3).reshape(batch, particles, steps * features))
        edges = self.edge(torch.cat([h[:, senders], h[:, receivers]], dim=-1))  # [B, E, H]
        # Each particle averages its n - 1 incoming edges (NRI's edge-to-node step).
        incoming = torch.zeros_like(h).index_add_(1, receivers, edges) / (particles - 1)
        h = self.node_again(incoming)
        edges = self.edge_again(torch.cat([h[:, senders], h[:, receivers], edges], dim=-1))
        pair = self.out(edges).squeeze(-1)  # [B, E]
        scores = trajectories.new_zeros(batch, particles, particles)
        scores[:, receivers, senders] = pair
        return 0.5 * (scores + scores.mT)


class Decoder(nn.Module):
    """One step ahead: states ``[B, n, F]`` and adjacency ``[B, n, n]`` -> next states ``[B, n, F]``.

    The adjacency weighs each message, so the gradient of the prediction with respect
    to it is what the estimator turns into a gradient of the scores.

    Args:
        features: Features ``F`` per particle.
        hidden: Width of the message and output layers.

    Example:
        >>> decoder = Decoder(features=4, hidden=8)
        >>> decoder(torch.zeros(2, 3, 4), torch.ones(2, 3, 3)).shape
        torch.Size([2, 3, 4])
    """

    def __init__(self, *, features: int, hidden: int) -> None:
        super().__init__()
        self.message_first = nn.Linear(2 * features, hidden)
        self.message_second = nn.Linear(hidden, hidden)
        self.out_first = nn.Linear(features + hidden, hidden)
        self.out_second = nn.Linear(hidden, hidden)
        self.out_third = nn.Linear(hidden, features)

    def forward(self, states: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        particles = states.shape[1]
        receiver = states[:, :, None].expand(-1, -1, particles, -1)  # [B, i, j, F]
        sender = states[:, None, :].expand(-1, particles, -1, -1)
        messages = F.relu(self.message_second(F.relu(self.message_first(torch.cat([sender, receiver], -1)))))
        incoming = (adjacency[..., None] * messages).sum(2)  # [B, i, H]: the sum over the senders j
        out = F.relu(self.out_second(F.relu(self.out_first(torch.cat([states, incoming], -1)))))
        return states + self.out_third(out)

    def rollout(self, trajectories: torch.Tensor, adjacency: torch.Tensor, prediction_steps: int) -> torch.Tensor:
        """Predictions of steps ``1 .. T-1`` ``[B, T-1, n, F]``.

        As in NRI, the true state is fed every ``prediction_steps`` steps (at steps 0,
        P, 2P, ...) and the decoder's own prediction in between, so ``P = 1`` is
        one-step-ahead prediction and ``P = T - 1`` one rollout from the first state.
        """
        steps = trajectories.shape[1]
        predictions = []
        state = trajectories[:, 0]
        for step in range(steps - 1):
            if step % prediction_steps == 0:
                state = trajectories[:, step]
            state = self(state, adjacency)
            predictions.append(state)
        return torch.stack(predictions, dim=1)


class NRIModel(nn.Module):
    """Encoder, spanning-tree layer and decoder: ``trajectories [B, T, n, F]`` -> (predictions, tree, scores).

    Args:
        layer: The latent-graph layer, scores ``[B, n, n]`` -> tree adjacency
            ``[B, n, n]`` (a ``cg.differentiable(solver="spanning_tree", sense="max", ...)``).
        steps: Time steps ``T``.
        features: Features ``F`` per particle and step.
        encoder_hidden: Encoder width.
        decoder_hidden: Decoder width.
        prediction_steps: See :meth:`Decoder.rollout`.

    Example:
        >>> import combgrad as cg
        >>> layer = cg.differentiable(solver="spanning_tree", sense="max", estimator="ste")
        >>> model = NRIModel(layer, steps=4, features=4, encoder_hidden=8, decoder_hidden=8)
        >>> predictions, tree, scores = model(torch.randn(2, 4, 5, 4))
        >>> predictions.shape, tree.sum(dim=(1, 2)).tolist()  # 4 edges, each counted twice
        (torch.Size([2, 3, 5, 4]), [8.0, 8.0])
    """

    def __init__(
        self,
        layer: nn.Module,
        *,
        steps: int,
        features: int,
        encoder_hidden: int,
        decoder_hidden: int,
        prediction_steps: int = 1,
    ) -> None:
        super().__init__()
        self.prediction_steps = check_positive_int("nri", "prediction_steps", prediction_steps)
        self.encoder = Encoder(steps=steps, features=features, hidden=encoder_hidden)
        self.layer = layer
        self.decoder = Decoder(features=features, hidden=decoder_hidden)

    def forward(self, trajectories: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scores = self.encoder(trajectories)
        tree = self.layer(scores)
        return self.decoder.rollout(trajectories, tree, self.prediction_steps), tree, scores


__all__ = ["MLP", "Decoder", "Encoder", "NRIModel"]
