"""A stand-in plugin module that registers its solver when imported."""

import combgrad as cg
from plugin_fixture import PluginArgmin

cg.solvers.register("plugin_registering_argmin", PluginArgmin)
