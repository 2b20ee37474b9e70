"""Tests of combgrad/tasks/nri/model.py and evaluation.py: symmetric scores, trees through the layer,
the decoder's rollout, and edge metrics on hand-made trees."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest
import torch

import combgrad as cg
from combgrad.tasks.nri.evaluation import edge_metrics
from combgrad.tasks.nri.model import Decoder, Encoder, NRIModel


def test_encoder_scores_are_symmetric_with_zero_diagonal_and_depend_on_the_pair() -> None:
    torch.manual_seed(0)
    encoder = Encoder(steps=4, features=4, hidden=16)
    scores = encoder(torch.randn(3, 4, 6, 4))
    assert scores.shape == (3, 6, 6)
    assert torch.equal(scores, scores.mT)
    assert (scores.diagonal(dim1=1, dim2=2) == 0).all()
    off = scores[:, *torch.triu_indices(6, 6, 1)]
    assert off.std() > 0  # not a constant


def test_encoder_is_equivariant_to_relabelling_the_particles() -> None:
    """Permuting the particles permutes the scores' rows and columns alike (eval mode: batch norm fixed)."""
    torch.manual_seed(1)
    encoder = Encoder(steps=3, features=4, hidden=8).eval()
    trajectories = torch.randn(2, 3, 5, 4)
    permutation = torch.tensor([3, 0, 4, 1, 2])
    scores = encoder(trajectories)
    permuted = encoder(trajectories[:, :, permutation])
    torch.testing.assert_close(permuted, scores[:, permutation][:, :, permutation], rtol=1e-5, atol=1e-6)


def test_the_model_gives_maximum_spanning_trees_in_eval_mode() -> None:
    """networkx's maximum spanning tree of the encoder's scores is the model's tree."""
    torch.manual_seed(2)
    layer = cg.differentiable(solver="spanning_tree", sense="max", estimator="aimle", noise="sum_of_gamma", k=5)
    model = NRIModel(layer, steps=4, features=4, encoder_hidden=8, decoder_hidden=8, prediction_steps=3).eval()
    with torch.no_grad():
        predictions, tree, scores = model(torch.randn(4, 4, 6, 4))
    assert predictions.shape == (4, 3, 6, 4)
    for index in range(4):
        graph = nx.from_numpy_array(scores[index].double().numpy())
        reference = nx.to_numpy_array(nx.maximum_spanning_tree(graph), nodelist=range(6)) != 0
        assert torch.equal(tree[index] > 0.5, torch.from_numpy(reference))


def test_gradients_reach_the_encoder_through_the_tree() -> None:
    torch.manual_seed(3)
    layer = cg.differentiable(solver="spanning_tree", sense="max", estimator="aimle")
    model = NRIModel(layer, steps=4, features=4, encoder_hidden=8, decoder_hidden=8)
    trajectories = torch.randn(8, 4, 5, 4)
    predictions, _, _ = model(trajectories)
    ((predictions - trajectories[:, 1:]) ** 2).mean().backward()
    gradients = [parameter.grad for parameter in model.encoder.parameters()]
    assert all(gradient is not None for gradient in gradients)
    assert sum(float(gradient.abs().sum()) for gradient in gradients) > 0  # type: ignore[union-attr]


def test_the_decoder_sends_messages_only_along_edges() -> None:
    """A particle's prediction does not change when an unjoined particle moves, and does when a joined one does."""
    torch.manual_seed(4)
    decoder = Decoder(features=4, hidden=8)
    adjacency = torch.zeros(1, 3, 3)
    adjacency[0, 0, 1] = adjacency[0, 1, 0] = 1.0
    states = torch.randn(1, 3, 4)
    moved = states.clone()
    moved[0, 2] += 1.0
    assert torch.equal(decoder(states, adjacency)[0, 0], decoder(moved, adjacency)[0, 0])
    moved = states.clone()
    moved[0, 1] += 1.0
    assert not torch.equal(decoder(states, adjacency)[0, 0], decoder(moved, adjacency)[0, 0])


@pytest.mark.parametrize("prediction_steps", [1, 2, 3])
def test_rollout_feeds_the_true_state_every_prediction_steps(prediction_steps: int) -> None:
    """A decoder that adds 1 to its input: step t's prediction is t - last true step + true value there."""

    class PlusOne(Decoder):
        def forward(self, states: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
            return states + 1

    trajectories = torch.arange(5.0).mul(10).reshape(1, 5, 1, 1)  # true values 0, 10, 20, 30, 40
    predictions = PlusOne(features=1, hidden=2).rollout(trajectories, torch.zeros(1, 1, 1), prediction_steps)
    expected = []
    for step in range(4):
        fed = step - step % prediction_steps
        expected.append(10.0 * fed + (step - fed) + 1)
    assert predictions.flatten().tolist() == expected


def test_edge_metrics_on_hand_made_trees() -> None:
    path = torch.zeros(4, 4)  # 0-1-2-3
    star = torch.zeros(4, 4)  # centre 0
    for i, j in ((0, 1), (1, 2), (2, 3)):
        path[i, j] = path[j, i] = 1
    for j in (1, 2, 3):
        star[0, j] = star[j, 0] = 1
    metrics = edge_metrics(torch.stack([path, star, star]), torch.stack([path, path, star]))
    # Path vs star share only the edge 0-1: 1 of 3 edges right; 2 + 2 of 6 pairs wrong.
    assert metrics["precision"].tolist() == [1.0, 1 / 3, 1.0]
    assert metrics["recall"].tolist() == [1.0, 1 / 3, 1.0]
    assert metrics["edge_accuracy"].tolist() == [1.0, 2 / 6, 1.0]


def test_edge_metrics_of_a_non_tree_prediction_and_their_means_over_random_trees() -> None:
    true = torch.zeros(1, 3, 3)
    true[0, 0, 1] = true[0, 1, 0] = true[0, 1, 2] = true[0, 2, 1] = 1
    complete = 1 - torch.eye(3)[None]
    metrics = edge_metrics(complete, true)
    assert metrics["precision"].tolist() == [2 / 3] and metrics["recall"].tolist() == [1.0]
    assert metrics["edge_accuracy"].tolist() == [2 / 3]
    empty = edge_metrics(torch.zeros(1, 3, 3), true)
    assert torch.isnan(empty["precision"]).all() and empty["recall"].tolist() == [0.0]
    # Over all 3^1 = 3 labelled trees on 3 vertices against a fixed one, precision
    # averages (n - 1) / (n (n - 1) / 2) = 2/3: each tree holds 2 of the 3 pairs.
    trees = []
    for left, right in itertools.combinations([(0, 1), (0, 2), (1, 2)], 2):
        tree = torch.zeros(3, 3)
        for i, j in (left, right):
            tree[i, j] = tree[j, i] = 1
        trees.append(tree)
    stacked = torch.stack(trees)
    assert edge_metrics(stacked, true.expand(3, -1, -1))["precision"].mean().item() == pytest.approx(2 / 3)


def test_edge_metrics_refuse_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"edge_metrics: predicted and true must be adjacencies of one shape"):
        edge_metrics(torch.zeros(2, 3, 3), torch.zeros(2, 4, 4))
