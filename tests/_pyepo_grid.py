"""An exact solver over PyEPO's 5x5 shortest-path grid, independent of PyEPO's Gurobi model."""

import math

import torch


class PyEPOGridDP:
    """Min-cost path from node 0 to 24 over PyEPO's grid ``arcs`` (they point right and down,
    so node order is a topological order), as a combgrad solver object: ``[B, 40] -> [B, 40]``."""

    name, sense, event_ndim = "grid_dp", "min", 1

    def __init__(self, arcs):
        self.arcs = list(arcs)

    def __call__(self, costs):
        out = torch.zeros_like(costs)
        for row, c in enumerate(costs.tolist()):
            best, parent = [0.0] + [math.inf] * 24, [None] * 25
            for node in range(25):
                for arc, (tail, head) in enumerate(self.arcs):
                    if tail == node and best[node] + c[arc] < best[head]:
                        best[head], parent[head] = best[node] + c[arc], arc
            node = 24
            while node != 0:
                out[row, parent[node]] = 1.0
                node = self.arcs[parent[node]][0]
        return out
