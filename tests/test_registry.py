"""Tests for combgrad/registry.py and the solver registry built on it."""

import importlib.metadata
import sys
from pathlib import Path

import pytest
import torch

import combgrad as cg
import combgrad.registry
from combgrad.registry import Registry
from combgrad.solvers import registry as solver_registry

GROUP = "combgrad.solvers"


def make_registry() -> Registry:
    # A group nothing installs: the registry starts empty and stays isolated.
    return Registry("solver", entry_point_group="combgrad.tests.no_such_group")


def test_register_get_and_names():
    registry = make_registry()
    registry.register("zeta", lambda **options: ("zeta", options))
    registry.register("alpha", lambda **options: ("alpha", options))
    assert registry.names() == ["alpha", "zeta"]
    assert registry.get("zeta", k=3) == ("zeta", {"k": 3})
    assert registry.factory("alpha")() == ("alpha", {})
    assert "alpha" in registry and "beta" not in registry


def test_register_returns_the_factory_and_works_as_a_decorator():
    registry = make_registry()

    def factory():
        return "plain"

    assert registry.register("plain", factory) is factory

    @registry.register("decorated")
    def decorated(*, scale=1):
        return ("decorated", scale)

    assert decorated(scale=2) == ("decorated", 2)  # the decorator returns the function itself
    assert registry.get("decorated", scale=5) == ("decorated", 5)
    assert registry.names() == ["decorated", "plain"]


def test_duplicate_raises_unless_overwrite():
    registry = make_registry()
    registry.register("name", lambda: 1)
    with pytest.raises(ValueError, match="solver 'name' is already registered; pass overwrite=True"):
        registry.register("name", lambda: 2)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("name")(lambda: 3)
    assert registry.get("name") == 1
    registry.register("name", lambda: 4, overwrite=True)
    assert registry.get("name") == 4
    registry.register("name", overwrite=True)(lambda: 5)
    assert registry.get("name") == 5


def test_unknown_name_lists_the_known_ones():
    registry = make_registry()
    registry.register("beta", lambda: None)
    registry.register("alpha", lambda: None)
    with pytest.raises(KeyError, match="unknown solver 'gamma'; known: alpha, beta"):
        registry.get("gamma")
    with pytest.raises(KeyError, match="unknown solver"):
        registry.factory(["unhashable"])


def test_unregister():
    registry = make_registry()
    registry.register("gone", lambda: None)
    registry.unregister("gone")
    assert registry.names() == []
    with pytest.raises(KeyError, match="unknown solver 'gone'"):
        registry.unregister("gone")


@pytest.mark.parametrize("name", ["", None, 3])
def test_bad_names(name):
    with pytest.raises(ValueError, match="solver name must be a non-empty string"):
        make_registry().register(name, lambda: None)


def test_non_callable_factory():
    with pytest.raises(TypeError, match="factory for 'x' must be callable"):
        make_registry().register("x", 42)


def test_global_solver_registry_has_the_built_ins():
    names = cg.solvers.names()
    assert names == sorted(names)
    assert {"argmax", "assignment", "knapsack", "topk"} <= set(names)
    with pytest.raises(KeyError, match="unknown solver 'no_such_solver'; known: .*argmax.*topk"):
        cg.solvers.get("no_such_solver")


def test_global_register_and_unregister_round_trip():
    assert "test_registry_tmp" not in cg.solvers.names()

    @cg.solvers.register("test_registry_tmp")
    def factory():
        return cg.solvers.get("argmax")

    try:
        assert cg.solvers.get("test_registry_tmp")(torch.tensor([0.0, 1.0])).tolist() == [0.0, 1.0]
        with pytest.raises(ValueError, match="already registered"):
            cg.solvers.register("argmax", factory)
    finally:
        cg.solvers.unregister("test_registry_tmp")
    assert "test_registry_tmp" not in cg.solvers.names()


# Third-party plugins through a faked ``importlib.metadata.entry_points``.


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Install fake entry points; returns (set_entry_points, calls)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    for module in ("plugin_fixture", "plugin_fixture_registering"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    state = {"entry_points": [], "calls": []}

    def entry_points(*, group):
        state["calls"].append(group)
        return [entry_point for entry_point in state["entry_points"] if entry_point.group == group]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)

    def install(*specs):
        state["entry_points"] = [
            importlib.metadata.EntryPoint(name=name, value=value, group=group)
            for name, value, group in specs
        ]

    return install, state["calls"]


def test_plugin_factory_is_loaded_lazily_on_first_lookup(fake_entry_points):
    install, calls = fake_entry_points
    install(("plugin_argmin", "plugin_fixture:PluginArgmin", GROUP))
    registry = Registry("solver", entry_point_group=GROUP)
    registry.register("builtin", lambda: "builtin")
    assert calls == [] and "plugin_fixture" not in sys.modules
    solver = registry.get("plugin_argmin", offset=1.0)
    assert calls == [GROUP] and "plugin_fixture" in sys.modules
    assert solver.offset == 1.0 and solver.sense == "min"
    assert solver(torch.tensor([[3.0, -1.0, 2.0]])).tolist() == [[0.0, 1.0, 0.0]]
    assert registry.names() == ["builtin", "plugin_argmin"]
    assert calls == [GROUP]  # read once, not on every lookup


@pytest.mark.parametrize("lookup", ["names", "contains", "factory", "unregister"])
def test_every_lookup_loads_plugins(fake_entry_points, lookup):
    install, calls = fake_entry_points
    install(("plugin_argmin", "plugin_fixture:PluginArgmin", GROUP))
    registry = Registry("solver", entry_point_group=GROUP)
    if lookup == "names":
        assert registry.names() == ["plugin_argmin"]
    elif lookup == "contains":
        assert "plugin_argmin" in registry
    elif lookup == "factory":
        assert registry.factory("plugin_argmin").__name__ == "PluginArgmin"
    else:
        registry.unregister("plugin_argmin")
        assert registry.names() == []
    assert calls == [GROUP]


def test_plugin_module_that_registers_itself(fake_entry_points, monkeypatch):
    install, calls = fake_entry_points
    install(("anything", "plugin_fixture_registering", GROUP))
    # A fresh look at the global registry's plugins; restored after the test.
    monkeypatch.setattr(solver_registry.SOLVERS, "_plugins_loaded", False)
    try:
        assert "plugin_registering_argmin" in cg.solvers.names()
        assert "anything" not in cg.solvers.names()  # a module is not a factory
        solver = cg.solvers.get("plugin_registering_argmin")
        assert solver(torch.tensor([2.0, 1.0])).tolist() == [0.0, 1.0]
    finally:
        cg.solvers.unregister("plugin_registering_argmin")
    assert calls == [GROUP]


def test_broken_plugin_only_warns(fake_entry_points):
    install, _ = fake_entry_points
    install(
        ("missing_module", "plugin_fixture_does_not_exist:Solver", GROUP),
        ("missing_attribute", "plugin_fixture:NoSuchSolver", GROUP),
        ("plugin_argmin", "plugin_fixture:PluginArgmin", GROUP),
    )
    registry = Registry("solver", entry_point_group=GROUP)
    registry.register("builtin", lambda: "builtin")
    with pytest.warns(RuntimeWarning, match="could not load solver plugin") as record:
        names = registry.names()
    messages = " ".join(str(warning.message) for warning in record)
    assert "'missing_module'" in messages and "'missing_attribute'" in messages
    assert names == ["builtin", "plugin_argmin"]
    assert registry.get("builtin") == "builtin"


def test_plugin_does_not_replace_a_registered_name(fake_entry_points):
    install, _ = fake_entry_points
    install(("argmax", "plugin_fixture:PluginArgmin", GROUP))
    registry = Registry("solver", entry_point_group=GROUP)
    registry.register("argmax", lambda: "builtin")
    assert registry.get("argmax") == "builtin"


def test_entry_points_of_other_groups_are_ignored(fake_entry_points):
    install, calls = fake_entry_points
    install(("plugin_argmin", "plugin_fixture:PluginArgmin", "combgrad.estimators"))
    registry = Registry("solver", entry_point_group=GROUP)
    assert registry.names() == []
    assert calls == [GROUP]


def test_unknown_and_missing_options_name_the_option_and_list_the_accepted_ones():
    # Used to be bare "TypeError: TopK.__init__() missing 1 required keyword-only
    # argument" / "Argmax() takes no arguments".
    with pytest.raises(cg.OptionError, match="solver 'topk': missing required option 'k'; accepted options: k"):
        cg.solvers.get("topk")
    with pytest.raises(TypeError, match="solver 'argmax': unknown option 'k'; accepted options: backend"):
        cg.solvers.get("argmax", k=2)
    with pytest.raises(ValueError, match="solver 'assignment': unknown options 'a', 'b'"):
        cg.solvers.get("assignment", a=1, b=2)
    with pytest.raises(cg.OptionError, match=r"solver 'shortest_path': unknown option 'neighborhood'; accepted options: .*neighbourhood"):
        cg.solvers.get("shortest_path", neighborhood=4)


def test_factories_taking_kwargs_receive_every_option():
    registry = make_registry()
    registry.register("open", lambda **options: options)
    assert registry.get("open", anything=1) == {"anything": 1}


def test_options_are_read_from_the_signature_and_the_docstring():
    registry = make_registry()

    def factory(k: int, *, scale: float = 1.0, mode: str = "fast"):
        """A test factory.

        Args:
            k: How many; at least 1. More words.
            scale, mode: Shared text (see ``x.y``) of two options.
        """

    registry.register("documented", factory)
    options = registry.options("documented")
    assert list(options) == ["k", "scale", "mode"]
    assert options["k"].default is cg.registry.REQUIRED and repr(options["k"].default) == "<required>"
    assert options["k"].description == "How many"
    assert options["scale"] == ("scale", 1.0, "Shared text (see ``x.y``) of two options")
    assert options["mode"].default == "fast"


@pytest.mark.parametrize("kind", ["solvers", "gradients"])
def test_every_builtin_option_is_documented(kind):
    module = getattr(cg, kind)
    for name in module.names():
        for option in module.options(name).values():
            assert option.description, f"{kind} {name!r}: option {option.name!r} has no docstring entry"


def test_a_module_imported_twice_re_registers_its_own_entry():
    # One module's doctests under pytest's importlib mode import it a second time.
    registry = make_registry()
    namespace: dict = {"__name__": "some_plugin"}
    source = "class Solver:\n    pass\n"
    exec(source, namespace)
    registry.register("mine", namespace["Solver"])
    exec(source, namespace)  # the same definition, executed again
    registry.register("mine", namespace["Solver"])
    assert registry.factory("mine") is namespace["Solver"]
    with pytest.raises(ValueError, match="already registered"):
        registry.register("mine", lambda: None)
