"""Tests for combgrad/gradients/base.py: the score sign, batched solving, option checks."""

import dataclasses
import inspect

import pytest
import torch

import combgrad as cg
from combgrad.errors import OptionError
from combgrad.gradients import base

ESTIMATORS = ["imle", "aimle", "perturbation", "ste", "blackbox"]


def test_score_sign():
    assert base.score_sign("max") == 1 and base.score_sign("min") == -1
    with pytest.raises(ValueError, match="sense must be 'min' or 'max', got 'maximize'"):
        base.score_sign("maximize")


@pytest.mark.parametrize("leading", [(), (3,), (2, 4)])
def test_solve_scores_is_one_call_on_a_flat_batch(counting, argmin, leading):
    solver = counting(argmin)
    scores = torch.randn(*leading, 5, generator=torch.Generator().manual_seed(0))
    y = base.solve_scores(solver, scores)
    assert len(solver.calls) == 1
    assert solver.calls[0] == (max(1, torch.Size(leading).numel()), 5)
    # Score space: argmax of the scores, whatever the solver's sense.
    assert torch.equal(y, torch.nn.functional.one_hot(scores.argmax(-1), 5).to(scores.dtype))


def test_solve_perturbed_broadcasts_sides_against_samples(counting):
    solver = counting(cg.solvers.get("argmax"))
    scores = torch.randn(2, 1, 3, 4)  # two sides, one sample dim, batch 3
    draws = torch.randn(5, 3, 4)
    y = base.solve_perturbed(solver, scores, draws, 0.5)
    assert y.shape == (2, 5, 3, 4) and solver.calls == [(30, 4)]
    assert torch.equal(y, base.solve_scores(cg.solvers.get("argmax"), scores + 0.5 * draws))


def test_event_sum_and_norm():
    values = torch.arange(24.0).reshape(2, 3, 4)
    assert torch.equal(base.event_sum(values, 2), values.sum((1, 2)))
    assert torch.allclose(base.event_norm(values, 1), values.norm(dim=-1))
    assert torch.equal(base.event_sum(values, 0), values)


def test_resolve_solver():
    assert base.resolve_solver("owner", "topk", {"k": 2}).k == 2
    argmax = cg.solvers.get("argmax")
    assert base.resolve_solver("owner", argmax, {}) is argmax
    with pytest.raises(TypeError, match="owner: solver options \\['k'\\] need a solver name"):
        base.resolve_solver("owner", argmax, {"k": 2})
    with pytest.raises(TypeError, match="owner: solver must be a registry name or a solver"):
        base.resolve_solver("owner", 42, {})
    with pytest.raises(KeyError, match="unknown solver 'nope'"):
        base.resolve_solver("owner", "nope", {})


def test_noise_k_defaults_to_the_solvers_k():
    assert base.noise_k(None, cg.solvers.get("topk", k=4)) == 4
    assert base.noise_k(None, cg.solvers.get("argmax")) == 1
    assert base.noise_k(2, cg.solvers.get("topk", k=4)) == 2


@pytest.mark.parametrize("name", ["imle", "aimle", "perturbation", "ste", "blackbox"])
def test_estimators_validate_theta(name):
    estimator = cg.gradients.get(name)
    with pytest.raises(TypeError, match=f"{name}: theta must be a torch.Tensor, got list"):
        estimator([1.0, 2.0], cg.solvers.get("argmax"))
    with pytest.raises(ValueError, match=f"{name}: theta must have at least 2 dims"):
        estimator(torch.ones(3), cg.solvers.get("shortest_path"))
    with pytest.raises(ValueError, match="must be finite"):
        estimator(torch.tensor([1.0, float("nan")]), cg.solvers.get("argmax"))
    assert "(" in repr(estimator)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_the_signature_is_generated_from_the_options_dataclass(name):
    """Guards issue 9 item 3: options written once; the signature lists each keyword-only with its default."""
    cls = cg.gradients.registry.factory(name)
    fields = {entry.name: entry.default for entry in dataclasses.fields(cls.Options)}
    parameters = inspect.signature(cls).parameters
    assert all(parameter.kind is inspect.Parameter.KEYWORD_ONLY for parameter in parameters.values())
    assert {key: parameters[key].default for key in fields} == fields
    assert set(parameters) == set(fields) | set(cls.Options.deprecated)
    assert cls().options == cls.Options()  # the constructor's defaults are the dataclass's
    # Every option (old names too) has its one-line meaning in the class docstring's Args.
    described = cg.gradients.options(name)
    assert set(described) == set(parameters)
    assert all(option.description for option in described.values()), described


@pytest.mark.parametrize("name", ["imle", "aimle", "perturbation", "blackbox"])
def test_unknown_options_raise_option_error_listing_the_accepted_ones(name):
    cls = cg.gradients.registry.factory(name)
    accepted = ", ".join(sorted(cls.Options.names()))
    with pytest.raises(OptionError, match=f"{name}: unknown option 'lamda'; accepted: {accepted}$"):
        cls(lamda=1.0)
    with pytest.raises(TypeError):  # OptionError is a TypeError, as Python's own would be
        cls(lamda=1.0)
    with pytest.raises(OptionError, match=f"estimator '{name}': unknown option 'lamda'"):
        cg.gradients.get(name, lamda=1.0)
    with pytest.raises(OptionError, match="ste: unknown option 'lam'; ste takes no options"):
        cg.gradients.STE(lam=1.0)


def test_adding_an_option_is_one_line():
    """A subclass adds a checked, documented-by-signature option with one field."""

    @dataclasses.dataclass(frozen=True)
    class ScaledOptions(cg.gradients.blackbox.BlackboxOptions):
        owner = "scaled_blackbox"
        factor: float = base.option(2.0, base.number(positive=True))

    class ScaledBlackbox(cg.gradients.Blackbox):
        name = "scaled_blackbox"
        Options = ScaledOptions

    parameters = inspect.signature(ScaledBlackbox).parameters
    assert list(parameters) == ["lam", "factor"] and parameters["factor"].default == 2.0
    assert ScaledBlackbox(factor=3).options.factor == 3.0
    with pytest.raises(ValueError, match="scaled_blackbox: factor must be a finite number > 0, got -1"):
        ScaledBlackbox(factor=-1)


def test_numbers_are_normalised_and_numpy_scalars_accepted():
    """Guards issue 8 (smaller defects): lam=np.float32(10) was refused while np.int64 was accepted."""
    np = pytest.importorskip("numpy")
    assert cg.gradients.get("blackbox", lam=np.float32(10)).options.lam == 10.0
    assert type(cg.gradients.get("imle", lam=np.int64(3)).options.lam) is float
    assert cg.gradients.get("aimle", beta=torch.tensor(0.5)).options.beta == 0.5


@pytest.mark.parametrize("name", ESTIMATORS)
def test_a_nonfinite_incoming_gradient_is_named_in_forward_terms(name):
    """Guards issue 8 (smaller defects): backward blamed the solver ("shortest_path: theta must be finite")."""
    costs = torch.rand(2, 4, 4, requires_grad=True)
    y = cg.gradients.get(name)(costs, cg.solvers.get("shortest_path"))
    for bad in (float("nan"), float("inf")):
        dy = torch.zeros_like(y)
        dy[0, 1, 1] = bad
        with pytest.raises(ValueError, match=f"^{name}: the gradient flowing back into the layer's output is NaN or inf; check the loss"):
            torch.autograd.grad(y, costs, dy, retain_graph=True)


def test_check_incoming_gradient():
    dy = torch.ones(3)
    assert base.check_incoming_gradient("owner", dy) is dy
    with pytest.raises(ValueError, match="owner: the gradient flowing back"):
        base.check_incoming_gradient("owner", torch.tensor([1.0, float("-inf")]))


@pytest.mark.parametrize("name", ["perturbation", "imle", "aimle"])
def test_eval_mode_is_deterministic_and_exact(name):
    """Guards issue 8 item 13: a perturbation-based layer in eval() returns y*(theta)."""
    layer = cg.DifferentiableSolver("shortest_path", estimator=name, samples=4)
    costs = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(0)) + 0.1
    exact = cg.solvers.get("shortest_path")(costs)
    trained = [layer(costs, generator=torch.Generator().manual_seed(seed)) for seed in range(3)]
    assert not all(torch.equal(y, exact) for y in trained)  # training mode samples
    layer.eval()
    assert torch.equal(layer(costs, generator=torch.Generator().manual_seed(0)), exact)
    assert torch.equal(layer(costs), exact)


def test_repr_lists_the_options_only():
    # ClassVar entries of the options dataclass (owner, deprecated) are not options.
    text = repr(cg.gradients.get("perturbation", samples=3))
    assert text.startswith("Perturbation(samples=3, noise='normal'") and "owner" not in text and "deprecated" not in text
