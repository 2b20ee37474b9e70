"""Tests of combgrad/_checks.py: one wording per kind of error."""

import warnings

import numpy as np
import pytest
import torch

from combgrad import _checks
from combgrad.errors import OptionError


def test_check_sense():
    assert _checks.check_sense("s", "min") == "min" and _checks.check_sense("s", "max") == "max"
    with pytest.raises(ValueError, match="s: sense must be 'min' or 'max', got 'maximize'"):
        _checks.check_sense("s", "maximize")


def test_check_positive_int():
    assert _checks.check_positive_int("s", "k", 3) == 3
    assert _checks.check_positive_int("s", "k", np.int32(4)) == 4
    assert _checks.check_positive_int("s", "k", 0, minimum=0) == 0
    for bad in (0, -1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match="s: k must be an integer >= 1, got"):
            _checks.check_positive_int("s", "k", bad)


def test_check_choice():
    assert _checks.check_choice("s", "neighbourhood", 4, (4, 8)) == 4
    with pytest.raises(ValueError, match=r"s: neighbourhood must be one of \[4, 8\], got 6"):
        _checks.check_choice("s", "neighbourhood", 6, (4, 8))
    with pytest.raises(ValueError, match=r"must be one of"):
        _checks.check_choice("s", "noise", ["unhashable"], ("gumbel",))


def test_check_number_messages():
    assert _checks.check_number("o", "x", 2, positive=True) == 2.0
    with pytest.raises(ValueError, match="o: x must be a finite number > 0, got 0"):
        _checks.check_number("o", "x", 0, positive=True)
    with pytest.raises(ValueError, match="o: x must be a finite number >= 0 and < 1.0, got 1.0"):
        _checks.check_number("o", "x", 1.0, nonnegative=True, below=1.0)
    with pytest.raises(ValueError, match="o: x must be a finite number <= 1, got 2"):
        _checks.check_number("o", "x", 2, at_most=1)
    for bad in (float("nan"), float("inf"), True, np.bool_(True), "1", None, 1j, torch.ones(2)):
        with pytest.raises(ValueError, match="o: x must be a finite number"):
            _checks.check_number("o", "x", bad)


@pytest.mark.parametrize("value", [np.float32(10), np.float64(10), np.int64(10), 10, 10.0, torch.tensor(10.0)])
def test_check_number_accepts_numpy_and_torch_scalars(value):
    # np.float32 used to be refused while np.int64 was accepted.
    number = _checks.check_number("o", "lam", value, positive=True)
    assert number == 10.0 and type(number) is float


def test_check_bool():
    assert _checks.check_bool("o", "flag", np.bool_(False)) is False
    with pytest.raises(ValueError, match="o: flag must be True or False, got 1"):
        _checks.check_bool("o", "flag", 1)


def test_check_theta_names_the_argument():
    assert _checks.check_theta("s", torch.zeros(2), 1) is not None
    with pytest.raises(ValueError, match="s: costs must be finite"):
        _checks.check_theta("s", torch.tensor([float("nan")]), 1, argument="costs")
    with pytest.raises(TypeError, match="s: theta must be a torch.Tensor, got list"):
        _checks.check_theta("s", [1.0], 1)
    with pytest.raises(ValueError, match=r"s: theta must have at least 2 dims \[\*, <event>\], got shape \(3,\)"):
        _checks.check_theta("s", torch.zeros(3), 2)
    with pytest.raises(ValueError, match="s: theta must be a floating tensor, got dtype torch.int64"):
        _checks.check_theta("s", torch.zeros(3, dtype=torch.long), 1)


def test_meta_tensors_are_refused_with_a_clear_message():
    # Used to fail with "Tensor.item() cannot be called on meta tensors".
    with pytest.raises(ValueError, match="s: theta must hold values .* got a meta tensor"):
        _checks.check_theta("s", torch.zeros(3, device="meta"), 1)


def test_check_finite_refuses_complex():
    with pytest.raises(ValueError, match="s: y must be real, got dtype torch.complex64"):
        _checks.check_finite("s", "y", torch.zeros(2, dtype=torch.complex64))


def test_check_same_shape():
    reference = torch.zeros(2, 3, dtype=torch.float64)
    assert _checks.check_same_shape("l", "y_true", torch.ones(2, 3), reference).dtype == torch.float64
    with pytest.raises(ValueError, match=r"l: y_true must have the shape of the prediction \(2, 3\), got \(3,\)"):
        _checks.check_same_shape("l", "y_true", torch.ones(3), reference)


def test_check_options_names_the_option_and_lists_the_accepted_ones():
    _checks.check_options("topk", ["k"], ["k"])
    with pytest.raises(OptionError, match="topk: unknown option 'kk'; accepted: k"):
        _checks.check_options("topk", ["kk"], ["k"])
    with pytest.raises(TypeError, match="argmax: unknown options 'a', 'b'; argmax takes no options"):
        _checks.check_options("argmax", ["a", "b"], [])
    with pytest.raises(ValueError):  # an OptionError is both kinds
        _checks.check_options("argmax", ["a"], [])


def test_rename_deprecated_warns_and_moves_the_value():
    with pytest.warns(DeprecationWarning, match="imle: option 'temperature' is deprecated, use 'noise_scale'"):
        options = _checks.rename_deprecated("imle", {"temperature": 2.0, "lam": 1.0}, {"temperature": "noise_scale"})
    assert options == {"noise_scale": 2.0, "lam": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _checks.rename_deprecated("imle", {"lam": 1.0}, {"temperature": "noise_scale"}) == {"lam": 1.0}
    with pytest.raises(OptionError, match="'temperature' is the old name of 'noise_scale'"):
        _checks.rename_deprecated("imle", {"temperature": 1.0, "noise_scale": 1.0}, {"temperature": "noise_scale"})
