"""Small PyEPO models for tests/adapters/test_from_pyepo.py, importable by worker processes (not a test module)."""

from __future__ import annotations

import numpy as np
from pyepo import EPO
from pyepo.model.opt import optModel


class PickOne(optModel):
    """Choose the one item of best cost among ``size``; raises on a cost above ``refuse_above``."""

    def __init__(self, size: int, maximize: bool = False, refuse_above: float = np.inf) -> None:
        self.size = size
        self.refuse_above = refuse_above
        if maximize:
            self.modelSense = EPO.MAXIMIZE
        super().__init__()

    def _getModel(self) -> tuple:
        self.costs = np.zeros(self.size)
        return None, list(range(self.size))

    def setObj(self, c) -> None:
        self.costs = np.asarray(c, dtype=np.float64)

    def solve(self) -> tuple:
        if self.costs.max() > self.refuse_above:
            raise RuntimeError(f"cost {self.costs.max()} above {self.refuse_above}")
        best = int(np.argmax(self.costs) if self.modelSense == EPO.MAXIMIZE else np.argmin(self.costs))
        solution = np.zeros(self.size)
        solution[best] = 1.0
        return solution, float(self.costs[best])
