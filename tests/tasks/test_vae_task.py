"""Tests of combgrad/tasks/vae: config, model and loss, training, resume and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import combgrad as cg
from combgrad.cli import main
from combgrad.tasks.vae import DiscreteVAE, VaeConfig, evaluate, negative_elbo, train
from combgrad.tasks.vae.config import FULL, QUICK

pytest.importorskip("sklearn")


def _tiny(out: Path, **overrides) -> VaeConfig:
    settings = dict(out=str(out), groups=4, group_size=6, k=2, hidden=16, epochs=2, batch_size=500, progress=False,
                    plots=False)
    settings.update(overrides)
    return VaeConfig(**settings)


def test_config_presets_and_checks() -> None:
    quick, full = VaeConfig(), VaeConfig(full=True)
    assert (quick.groups, quick.group_size, quick.k, quick.epochs) == (QUICK["groups"], QUICK["group_size"],
                                                                      QUICK["k"], QUICK["epochs"])
    assert (full.groups, full.group_size, full.k, full.hidden) == (20, 20, 10, 512) == tuple(
        FULL[name] for name in ("groups", "group_size", "k", "hidden"))
    assert VaeConfig(full=True, epochs=2).epochs == 2
    assert VaeConfig(estimator="imle", k=3).resolved_options() == {"k": 3, "noise_scale": 0.1}
    assert VaeConfig(estimator="imle", options={"k": 1, "noise_scale": 2.0}).resolved_options() == {
        "k": 1, "noise_scale": 2.0}
    assert VaeConfig(estimator="ste").resolved_options() == {}  # no noise to scale
    assert VaeConfig().resolved_options() == {"symmetric": True, "k": 5, "noise_scale": 0.1}  # aimle
    assert VaeConfig(options={"symmetric": False}).resolved_options()["symmetric"] is False
    with pytest.raises(ValueError, match=r"vae: k must be an integer < group_size = 10, got 10"):
        VaeConfig(k=10)
    with pytest.raises(ValueError, match=r"vae: groups must be an integer >= 1, got 0"):
        VaeConfig(groups=0)
    with pytest.raises(ValueError, match=r"vae: estimator must be a registered estimator"):
        VaeConfig(estimator="imle2")


def test_model_shapes_and_k_hot_codes() -> None:
    torch.manual_seed(0)
    model = DiscreteVAE(pixels=64, groups=3, group_size=5, hidden=10)
    select = cg.differentiable(solver="topk", estimator="aimle", k=2)
    x = (torch.rand(4, 64) > 0.5).float()
    scores, code, reconstruction = model(x, select)
    assert scores.shape == (4, 3, 5) and code.shape == (4, 3, 5) and reconstruction.shape == (4, 64)
    assert code.sum(-1).eq(2).all() and set(code.unique().tolist()) <= {0.0, 1.0}
    loss, _, _ = negative_elbo(scores, reconstruction, x)
    loss.mean().backward()
    assert model.encoder[0].weight.grad is not None and model.encoder[0].weight.grad.abs().sum() > 0
    # With samples kept apart (reduce=False) there is one code and one reconstruction per sample.
    select = cg.differentiable(solver="topk", estimator="imle", k=2, samples=3, reduce=False)
    scores, code, reconstruction = model(x, select)
    assert code.shape == (3, 4, 3, 5) and reconstruction.shape == (3, 4, 64)
    assert negative_elbo(scores, reconstruction, x)[0].shape == (4,)


def test_negative_elbo_against_direct_formulas() -> None:
    torch.manual_seed(1)
    scores = torch.randn(2, 3, 4, dtype=torch.float64)
    logits = torch.randn(2, 5, dtype=torch.float64)
    x = (torch.rand(2, 5) > 0.5).double()
    loss, nll, kl = negative_elbo(scores, logits, x)
    p = torch.sigmoid(logits)
    expected_nll = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(-1)
    q = torch.softmax(scores, -1)
    expected_kl = (q * torch.log(q / 0.25)).sum((-2, -1))
    torch.testing.assert_close(nll, expected_nll)
    torch.testing.assert_close(kl, expected_kl)
    torch.testing.assert_close(loss, expected_nll + expected_kl)
    assert (kl >= 0).all()
    # Several samples: the reconstruction term is their mean.
    stacked = torch.stack([logits, torch.zeros_like(logits)])
    _, nll_two, _ = negative_elbo(scores, stacked, x)
    torch.testing.assert_close(nll_two, (expected_nll + 5 * math.log(2)) / 2)


def test_evaluate_is_the_mean_per_image() -> None:
    model = DiscreteVAE(pixels=4, groups=2, group_size=3, hidden=4).eval()
    select = cg.differentiable(solver="topk", estimator="ste", k=1).eval()
    x = (torch.rand(7, 4) > 0.5).float()
    metrics = evaluate(model, select, x, batch_size=3)
    with torch.no_grad():
        scores, _, reconstruction = model(x, select)
        loss, nll, kl = negative_elbo(scores, reconstruction, x)
    assert metrics["loss"] == pytest.approx(float(loss.mean()), rel=1e-6)
    assert metrics["reconstruction"] == pytest.approx(float(nll.mean()), rel=1e-6)
    assert metrics["kl"] == pytest.approx(float(kl.mean()), rel=1e-6)


def test_training_lowers_the_test_loss_and_writes_its_outputs(tmp_path: Path) -> None:
    result = train(_tiny(tmp_path, estimator="imle", epochs=3, batch_size=100, lr=3e-3, plots=True),
                   log=lambda line: None)
    assert (tmp_path / "metrics.json").exists() and (tmp_path / "reconstructions.png").exists()
    assert (tmp_path / "curves.png").exists()
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["method"] == "imle" and len(stored["history"]) == 3
    assert set(stored["timing"]) >= {"train_seconds", "solver_seconds", "solver_share", "wall_seconds_this_run"}
    losses = [record["test"]["loss"] for record in stored["history"]]
    # An untrained decoder costs about 64 log 2 = 44 nats; 3 epochs (45 steps) get well below.
    assert losses[-1] < losses[0] and losses[-1] < 35
    assert result["final"]["test"] == stored["final"]["test"]


class _Killed(Exception):
    pass


@pytest.mark.parametrize("estimator, options", [("aimle", {"samples": 2}), ("ste", {})])
def test_resume_gives_the_uninterrupted_result(tmp_path: Path, estimator: str, options: dict, device: str) -> None:
    """On every available device (the data, model and solver live there)."""
    uninterrupted = train(_tiny(tmp_path / "a", estimator=estimator, options=options, device=device), log=lambda line: None)

    def kill_after_first(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise _Killed

    with pytest.raises(_Killed):
        train(_tiny(tmp_path / "b", estimator=estimator, options=options, device=device), log=lambda line: None,
              on_epoch_end=kill_after_first)
    lines: list[str] = []
    resumed = train(_tiny(tmp_path / "b", estimator=estimator, options=options, resume=True, device=device), log=lines.append)
    assert any("resuming" in line for line in lines)
    assert resumed["final"] == uninterrupted["final"]
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in uninterrupted["history"]]
    with pytest.raises(ValueError, match=r"cannot resume from .*its configuration differs in \['k'\]"):
        train(_tiny(tmp_path / "b", estimator=estimator, options=options, resume=True, k=3, device=device), log=lambda line: None)


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    status = main(["vae", "--quiet", "--out", str(out), "--estimator", "ste", "--epochs", "1", "--groups", "3",
                   "--group-size", "4", "--k", "2", "--hidden", "8", "--batch-size", "500"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "discrete VAE, ste, 3 groups of 4 (k=2)" in printed and "-ELBO" in printed
    assert (out / "metrics.json").exists() and (out / "reconstructions.png").exists()
    status = main(["vae", "--quiet", "--out", str(out), "--estimator", "ste", "--epochs", "1", "--groups", "3",
                   "--group-size", "4", "--k", "2", "--hidden", "8", "--batch-size", "500", "--resume"])
    assert status == 0  # a finished run resumed: nothing left to train, the same report
    assert json.loads((out / "metrics.json").read_text())["final"]["test"]["loss"] > 0


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--k", "10"], "vae: k must be an integer < group_size = 10"),
        (["--estimator", "nope"], "vae: estimator must be a registered estimator"),
        (["-O", "lam=-1", "--estimator", "imle"], "lam"),
        (["--batch-size", "0"], "vae: batch_size must be an integer >= 1, got 0"),
        (["--data", "/nonexistent/mnist"], "mnist: data folder /nonexistent/mnist does not exist"),
    ],
)
def test_cli_bad_settings_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list, message: str) -> None:
    status = main(["vae", "--quiet", "--out", str(tmp_path / "x"), "--epochs", "1", *arguments])
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_mnist_files_train(tmp_path: Path) -> None:
    """A folder of IDX files (MNIST's layout, tiny) trains through the same command."""
    import struct

    rng = np.random.default_rng(0)
    for prefix, count in (("train", 20), ("t10k", 6)):
        images = rng.integers(0, 256, size=(count, 6, 6), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        (tmp_path / f"{prefix}-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">iii", count, 6, 6)
                                                               + images.tobytes())
        (tmp_path / f"{prefix}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", count)
                                                               + labels.tobytes())
    result = train(_tiny(tmp_path / "run", data=str(tmp_path), epochs=1, batch_size=10), log=lambda line: None)
    assert result["data"]["pixels"] == 36 and result["data"]["counts"] == {"train": 20, "test": 6}
