"""Tests for examples/quasimetric_graph.py: the example runs with tiny settings."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quasimetric_graph.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("quasimetric_graph", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_reports_finite_errors_for_all_methods(example, capsys):
    errors = example.main(["--nodes", "10", "--steps", "3", "--batch-size", "16"])
    assert sorted(errors) == sorted(example.METHODS)
    assert all(math.isfinite(value) and value >= 0 for value in errors.values())
    printed = capsys.readouterr().out
    for method in example.METHODS:
        assert method in printed


def test_graph_is_strongly_connected_and_distances_match_networkx(example):
    import networkx as nx

    graph = example.random_strongly_connected_digraph(15, 2.0, seed=3)
    assert nx.is_strongly_connected(graph)
    distances = example.shortest_path_distances(graph)
    assert np.all(np.diag(distances) == 0)
    # Shortest paths obey the triangle inequality and are asymmetric somewhere.
    assert np.all(distances[:, None, :] <= distances[:, :, None] + distances[None, :, :])
    assert np.any(distances != distances.T)
    assert distances[2, 7] == nx.shortest_path_length(graph, 2, 7)


def test_timing_function_reports_every_head(example):
    seconds = example.time_heads(batch_size=64, repeats=1)
    assert set(seconds) == {"PQE-LH", "PQE-GG", "IQE"}
    assert all(value > 0 for value in seconds.values())


def test_bad_arguments_exit(example):
    with pytest.raises(SystemExit):
        example.main(["--train-fraction", "1.5"])
