"""Tests for combgrad/gradients/registry.py (the estimator registry)."""

import importlib.metadata

import pytest
import torch

import combgrad as cg
from combgrad.gradients import registry


def test_built_ins_are_registered_and_build_estimators():
    assert {"aimle", "blackbox", "imle", "perturbation", "ste"} <= set(cg.gradients.names())
    assert cg.gradients.names() == sorted(cg.gradients.names())
    expected = {
        "aimle": cg.gradients.AIMLE,
        "blackbox": cg.gradients.Blackbox,
        "imle": cg.gradients.IMLE,
        "perturbation": cg.gradients.Perturbation,
        "ste": cg.gradients.STE,
    }
    for name, cls in expected.items():
        estimator = cg.gradients.get(name)
        assert isinstance(estimator, cls) and isinstance(estimator, torch.nn.Module)
        assert estimator.name == name
    assert cg.gradients.get("imle", samples=3, lam=2.0).options.samples == 3


def test_unknown_estimator_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown estimator 'imlee'; known: aimle, blackbox, imle, perturbation, relaxed_topk, score_function, sst, ste"):
        cg.gradients.get("imlee")


def test_register_and_unregister_a_custom_estimator():
    @cg.gradients.register("test_scaled_ste")
    class ScaledSTE(cg.gradients.STE):
        pass

    try:
        assert isinstance(cg.gradients.get("test_scaled_ste"), ScaledSTE)
        with pytest.raises(ValueError, match="estimator 'imle' is already registered"):
            cg.gradients.register("imle", ScaledSTE)
    finally:
        cg.gradients.unregister("test_scaled_ste")
    assert "test_scaled_ste" not in cg.gradients.names()


def test_plugins_come_from_the_estimators_entry_point_group(monkeypatch):
    groups = []

    def entry_points(*, group):
        groups.append(group)
        if group != "combgrad.estimators":
            return []
        return [importlib.metadata.EntryPoint("plugin_ste", "combgrad.gradients.ste:STE", group)]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(registry.ESTIMATORS, "_plugins_loaded", False)
    monkeypatch.setattr(registry.ESTIMATORS, "_factories", dict(registry.ESTIMATORS._factories))
    assert "plugin_ste" in cg.gradients.names()
    assert groups == ["combgrad.estimators"]
    assert isinstance(cg.gradients.get("plugin_ste"), cg.gradients.STE)
