"""``data: {source: shards, root: DIR}``: shards read back through the data module, resumably."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback
from safetensors.torch import load_file
from sources_fakes import geotiff

from thinkingearth.errors import UserInputError
from thinkingearth.pretrain import run_pretrain
from thinkingearth.pretrain.data import PretrainDataModule, ShardLoader
from thinkingearth.pretrain.shards import shard_config
from thinkingearth.pretrain.transforms import Normaliser


class _StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:  # type: ignore[no-untyped-def]
        if trainer.global_step >= self.step:
            trainer.should_stop = True


@pytest.fixture
def shards(tiny, tmp_path: Path) -> Path:
    """The tiny synthetic S2 + S1 data (16 samples each) as shards of 4."""
    out = tmp_path / "shards"
    shard_config(tiny(), out, shard_size=4)
    return out


def _from_shards(tiny, root: Path, trainer=None, **data):
    """A config reading ``root``, its sensors left to the shards' index (``sensors: null``)."""
    data = {"source": "shards", "root": str(root), "sensors": None, **data}
    return tiny(data=data, trainer=trainer or {})


def test_sensors_come_from_the_index_and_batches_follow_the_group_plan(tiny, shards) -> None:
    config = _from_shards(tiny, shards, trainer={"max_steps": 12})
    # data.sensors of the tiny config is replaced by the shards' own groups
    assert config.sensors == ("sentinel-2-l2a", "sentinel-1-grd")
    assert config.data.sensors[0].bands is not None and len(config.data.sensors[0].bands) == 12
    module = PretrainDataModule(config, Normaliser())
    module.build()
    assert module.group_sizes == [16, 16] and "32 samples" in module.notes[0]
    loader = module.train_dataloader()
    assert isinstance(loader, ShardLoader)
    batches = list(loader)
    assert len(batches) == 12
    plan = [loader.sampler.global_batch(step)[0] for step in range(12)]
    sensors = ["sentinel-2-l2a", "sentinel-1-grd"]
    assert [set(b["sensor"]) for b in batches] == [{sensors[g]} for g in plan]
    # every sample of a group once per epoch (an epoch: 2 batches of 4... per 16 samples)
    first_epoch = [b for b, g in zip(batches, plan, strict=True) if g == 0][:4]
    keys = Counter(float(x) for b in first_epoch for x in b["image"][:, 0, 0, 0])
    assert len(keys) == 16


def test_resume_from_shards_is_exact(tiny, shards, tmp_path: Path) -> None:
    config = _from_shards(tiny, shards, trainer={"max_steps": 6, "checkpoint_every": 3})
    whole = run_pretrain(config, tmp_path / "whole", log=None)
    run_pretrain(config, tmp_path / "parts", callbacks=[_StopAt(3)], log=None)
    parts = run_pretrain(config, tmp_path / "parts", resume=True, log=None)
    assert parts.resumed_from == 3 and parts.final_loss == whole.final_loss
    a = load_file(tmp_path / "whole" / "encoder.safetensors")
    b = load_file(tmp_path / "parts" / "encoder.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pairs_from_shards_and_errors(tiny, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    s2, s1 = tmp_path / "s2", tmp_path / "s1"
    geotiff(s2 / "x.tif", rng.integers(1, 4000, (12, 64, 64), dtype=np.uint16))
    geotiff(
        s1 / "x.tif",
        rng.lognormal(-2.5, 0.5, (2, 64, 64)).astype(np.float32),
        descriptions=("VV", "VH"),
    )
    entries = [{"sensor": "s2", "root": str(s2)}, {"sensor": "s1", "root": str(s1)}]
    source = tiny(
        recipe="cross_sensor",
        data={
            "source": "folder",
            "size": 32,
            "batch_size": 2,
            "pair": ["s1", "s2"],
            "sensors": entries,
        },
    )
    out = tmp_path / "pairs"
    shard_config(source, out, shard_size=2)
    config = tiny(
        recipe="cross_sensor",
        data={
            "source": "shards",
            "root": str(out),
            "batch_size": 2,
            "pair": ["s1", "s2"],
            "sensors": None,
        },
        trainer={"max_steps": 2},
    )
    module = PretrainDataModule(config, Normaliser())
    module.build()
    batch = next(iter(module.train_dataloader()))
    assert set(batch["a"]["sensor"]) == {"sentinel-1-grd"}
    assert batch["a"]["transform"] == batch["b"]["transform"]
    module.on_before_batch_transfer(batch, 0)
    assert "nodata_windows" not in batch["a"] and module.nodata_windows == 0
    wrong = tiny(
        recipe="cross_sensor",
        data={"source": "shards", "root": str(out), "pair": ["s1", "sentinel-2-l1c"],
              "sensors": [{"sensor": "s1"}, {"sensor": "sentinel-2-l1c"}]},
    )  # fmt: skip
    with pytest.raises(UserInputError, match="hold no sentinel-1-grd\\+sentinel-2-l1c pairs"):
        PretrainDataModule(wrong, Normaliser()).build()
    with pytest.raises(UserInputError, match=r"has no index\.json") as exc:
        _from_shards(tiny, tmp_path)
    assert "\n" not in str(exc.value)
    with pytest.raises(UserInputError, match=r"data\.root is missing: source shards"):
        tiny(data={"source": "shards"})


def test_too_few_shards_for_the_workers_is_one_line_from_the_main_process(tiny, shards) -> None:
    # 4 shards per sensor group cannot give each of 5 data-loader workers one: said before any
    # worker starts (inside one, the line would come wrapped in the worker's traceback)
    config = _from_shards(tiny, shards, trainer={"max_steps": 2}, num_workers=5)
    module = PretrainDataModule(config, Normaliser())
    module.build()
    with pytest.raises(UserInputError, match=r"4 shards .* cannot feed 1 processes x 5 workers"):
        next(iter(module.train_dataloader()))
