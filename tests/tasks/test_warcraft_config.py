"""Tests of combgrad/tasks/warcraft/config.py: TrainConfig's checks, options and identity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from combgrad.tasks.warcraft import config as wc


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="loss must be one of"):
        wc.TrainConfig(loss="mse")
    with pytest.raises(ValueError, match="model must be one of"):
        wc.TrainConfig(model="vgg")
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        wc.TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got 0.0"):
        wc.TrainConfig(lr=0.0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        wc.TrainConfig(schedule="step")
    with pytest.raises(ValueError, match="direct baseline takes no estimator options"):
        wc.TrainConfig(estimator="direct", options={"lam": 1.0})
    with pytest.raises(ValueError, match="estimator must be one of .*'direct'.*got 'imle2'"):
        wc.TrainConfig(estimator="imle2")
    with pytest.raises(ValueError, match="options must be a dict"):
        wc.TrainConfig(options=[("lam", 1.0)])  # type: ignore[arg-type]
    assert wc.TrainConfig(loss="fy").method() == "perturbation+fy"
    assert wc.TrainConfig(estimator="blackbox", options={"lam": 3.0}).resolved_options() == {"lam": 3.0}
    # numpy numbers are numbers, stored as Python ones (a checkpoint holds no numpy objects).
    config = wc.TrainConfig(lr=np.float32(0.5), epochs=np.int64(2))
    assert type(config.lr) is float and config.lr == 0.5 and type(config.epochs) is int


@pytest.mark.parametrize("lr", [math.inf, -math.inf, math.nan, -1e-3, True, "0.1"])
def test_non_finite_or_non_positive_learning_rates_are_refused_at_once(lr: object) -> None:
    """Guards issue 8 (smaller defects): ``--lr inf`` was accepted and failed only after data generation."""
    with pytest.raises(ValueError, match="warcraft: lr must be a finite number > 0"):
        wc.TrainConfig(lr=lr)  # type: ignore[arg-type]


def test_flags_must_be_bools() -> None:
    with pytest.raises(ValueError, match="warcraft: normalise must be True or False, got 'no'"):
        wc.TrainConfig(normalise="no")  # type: ignore[arg-type]


def test_sum_of_gamma_k_defaults_to_the_map_side() -> None:
    assert wc.TrainConfig(estimator="imle", size=18).resolved_options()["k"] == 18
    assert wc.TrainConfig(estimator="imle", options={"k": 3}).resolved_options()["k"] == 3


def test_an_old_option_name_replaces_the_default_under_the_new_one() -> None:
    """A user's ``temperature`` must not reach the estimator next to the default ``noise_scale``
    (the estimator would refuse both names at once)."""
    options = wc.TrainConfig(estimator="imle", options={"temperature": 0.5}).resolved_options()
    assert options["temperature"] == 0.5 and "noise_scale" not in options
    assert wc.TrainConfig(estimator="imle").resolved_options()["noise_scale"] == 0.05


def test_identity_holds_the_settings_a_resume_must_share() -> None:
    identity = wc.TrainConfig(device="cpu", progress=False, epochs=3).identity()
    assert set(identity) == set(wc.IDENTITY_KEYS) and identity["epochs"] == 3
    assert "device" not in identity and "progress" not in identity
