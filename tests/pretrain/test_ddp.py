"""Lightning DDP on 2 CPU processes (gloo): both ranks end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(tiny, tmp_path):
    config = tiny(trainer={"devices": 2, "strategy": "ddp", "max_steps": 3, "threads": 1})
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(path), str(out)],
        capture_output=True,
        text=True,
        timeout=170,
        env=env,
        cwd=tmp_path,
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world_size"] for i in infos] == [2, 2]
    assert [i["global_step"] for i in infos] == [3, 3]
    assert infos[0]["batch_sums"] != infos[1]["batch_sums"]  # each rank read its own samples
    weights = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    initial = torch.load(sorted((out / "checkpoints").iterdir())[0], weights_only=True)
    assert initial["global_step"] == 2
    assert (out / "encoder.safetensors").is_file()
    print(f"DDP run: {seconds:.1f} s")  # the budget is < 60 s on 2 cores


@pytest.mark.slow
def test_two_gloo_processes_train_from_shards(tiny, tmp_path):
    """``source: shards`` under real DDP: each rank streams its own shards, weights stay equal."""
    from thinkingearth.pretrain.shards import shard_config

    shards = tmp_path / "shards"
    shard_config(tiny(), shards, shard_size=4)  # 4 shards of 4 per sensor: 2 ranks, 2 each
    data = {"source": "shards", "root": str(shards), "sensors": None}
    trainer = {"devices": 2, "strategy": "ddp", "max_steps": 3, "threads": 1}
    config = tiny(data=data, trainer=trainer)
    path = tmp_path / "ddp-shards.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(path), str(out)],
        capture_output=True,
        text=True,
        timeout=170,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["global_step"] for i in infos] == [3, 3]
    assert infos[0]["batch_sums"] != infos[1]["batch_sums"]  # each rank read its own shards
    weights = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3
