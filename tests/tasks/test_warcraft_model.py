"""Tests of combgrad/tasks/warcraft/model.py: output shapes, non-negativity, options."""

from __future__ import annotations

import pytest
import torch

from combgrad.tasks.warcraft import model as wm


@pytest.mark.parametrize("size", [12, 18])
@pytest.mark.parametrize("kind", ["small", "resnet"])
def test_cost_networks_give_non_negative_costs_on_the_tile_grid(kind: str, size: int) -> None:
    torch.manual_seed(size)
    network = wm.build_model(kind, size, channels=8)
    # Large inputs of both signs: the output must stay >= 0 whatever the weights see.
    images = 10 * torch.randn(3, 3, 8 * size, 8 * size)
    for mode in (network.train, network.eval):
        mode()
        costs = network(images)
        assert costs.shape == (3, size, size)
        assert bool((costs >= 0).all()) and bool(torch.isfinite(costs).all())


def test_resnet_stem_has_the_papers_layers() -> None:
    network = wm.ResNetStemCNN(12)
    assert network.conv1.kernel_size == (7, 7) and network.conv1.stride == (2, 2)
    assert network.conv1.out_channels == 64 and len(network.layer1) == 2
    features = network.features(torch.randn(2, 3, 96, 96))
    assert features.shape == (2, 64, 12, 12)
    # The output is the channel mean of the pooled features.
    blank = torch.zeros(1, 3, 96, 96)
    torch.testing.assert_close(network(blank), network.features(blank).mean(1))


def test_small_cnn_reads_each_tile_on_its_own() -> None:
    network = wm.SmallCNN(12, channels=8).eval()
    images = torch.randn(1, 3, 96, 96)
    changed = images.clone()
    changed[:, :, 8:16, 16:24] += 5.0  # the tile at row 1, column 2
    with torch.no_grad():
        difference = (network(changed) - network(images)).abs()[0]
    assert difference[1, 2] > 0
    difference[1, 2] = 0
    assert float(difference.max()) == 0.0


@pytest.mark.parametrize("backbone", ["small", "resnet"])
def test_direct_cnn_gives_logits_and_sees_the_whole_map(backbone: str) -> None:
    torch.manual_seed(0)
    network = wm.build_model(backbone, 12, direct=True, channels=8).eval()
    assert isinstance(network, wm.DirectCNN)
    images = torch.randn(2, 3, 96, 96)
    logits = network(images)
    assert logits.shape == (2, 12, 12) and bool((logits < 0).any() or (logits > 0).any())
    # A change in the bottom-right tile moves the logit of the top-left tile.
    changed = images.clone()
    changed[:, :, 88:, 88:] += 5.0
    with torch.no_grad():
        assert float((network(changed) - logits)[:, 0, 0].abs().max()) > 0


def test_gradients_reach_every_parameter() -> None:
    for network in (wm.SmallCNN(12, channels=8), wm.ResNetStemCNN(12, channels=8), wm.DirectCNN(12, channels=8)):
        network(torch.randn(2, 3, 96, 96)).sum().backward()
        assert all(parameter.grad is not None for parameter in network.parameters())


def test_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="model must be one of"):
        wm.build_model("vgg", 12)
    with pytest.raises(ValueError, match="size must be an integer >= 2"):
        wm.SmallCNN(1)
    with pytest.raises(ValueError, match="channels must be an integer >= 1"):
        wm.ResNetStemCNN(12, channels=0)
    with pytest.raises(ValueError, match="backbone must be one of"):
        wm.DirectCNN(12, backbone="vit")


def test_standardise_layout_and_statistics() -> None:
    maps = torch.randint(0, 256, (2, 16, 24, 3), dtype=torch.uint8)
    mean = torch.tensor([10.0, 20.0, 30.0])
    std = torch.tensor([2.0, 4.0, 5.0])
    images = wm.standardise(maps, mean, std)
    assert images.shape == (2, 3, 16, 24) and images.dtype == torch.float32
    torch.testing.assert_close(images[1, 2, 3, 4], (maps[1, 3, 4, 2].float() - 30.0) / 5.0)
