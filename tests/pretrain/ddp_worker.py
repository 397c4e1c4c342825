"""Run a pretraining config under Lightning DDP and save each rank's final weights.

Used by ``test_ddp.py``: ``python ddp_worker.py CONFIG.yaml OUT``. With ``strategy: ddp``
Lightning starts the other ranks by running this script again.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer

from thinkingearth.pretrain import config_from_dict, run_pretrain


class SaveRankWeights(Callback):
    """Write ``rank<R>.pt`` (the module's weights) and ``rank<R>.json`` at the end of training."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.indices: list[int] = []

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx
    ) -> None:
        self.indices.append(float(batch["image"].sum()))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rank = trainer.global_rank
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save(state, self.out / f"rank{rank}.pt")
        info = {
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "batch_sums": self.indices,
        }
        (self.out / f"rank{rank}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    config = config_from_dict(yaml.safe_load(Path(sys.argv[1]).read_text()))
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    run_pretrain(config, out, callbacks=[SaveRankWeights(out)], log=None)
