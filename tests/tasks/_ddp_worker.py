"""One process of a distributed Warcraft run, for tests/tasks/test_training_distributed.py.

``python _ddp_worker.py DUMP JSON`` runs ``train(TrainConfig(**JSON))``, stopping
after epoch ``stop_after`` if the JSON has one (exit status 3, as a kill), and writes
this rank's model and estimator state to ``DUMP/rank{RANK}.pt`` (outside the run's
folder). The command-line runs start ``python -m combgrad`` or the console script
themselves.
"""

from __future__ import annotations

import json
import os
import sys

import torch


class _Stopped(Exception):
    pass


def main(argv: list[str]) -> int:
    from combgrad.tasks.warcraft import trainer
    from combgrad.tasks.warcraft.config import TrainConfig

    dump, settings = argv[0], json.loads(argv[1])
    stop_after = settings.pop("stop_after", None)
    captured: dict[str, torch.nn.Module] = {}
    build_loss, build_model = trainer.build_loss, trainer.build_model

    def capture_loss(*args, **kwargs):
        layer, loss = build_loss(*args, **kwargs)
        captured["layer"] = layer
        return layer, loss

    def capture_model(*args, **kwargs):
        captured["model"] = build_model(*args, **kwargs)
        return captured["model"]

    trainer.build_loss, trainer.build_model = capture_loss, capture_model

    def hook(epoch: int, record: dict) -> None:
        if epoch == stop_after:
            raise _Stopped

    try:
        result = trainer.train(TrainConfig(**settings), log=lambda line: None, on_epoch_end=hook)
    except _Stopped:
        return 3
    rank = os.environ.get("RANK", "0")
    torch.save({"model": captured["model"].state_dict(), "layer": captured["layer"].state_dict(),
                "final": result["final"], "history_loss": [r["loss"] for r in result["history"]]},
               os.path.join(dump, f"rank{rank}.pt"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
