"""Tiny pretraining configurations: a 2-block, 32-wide encoder on 32-px synthetic samples."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from thinkingearth.pretrain import PretrainConfig, config_from_dict
from thinkingearth.pretrain.config import merge

TINY: dict[str, Any] = {
    "name": "tiny-test",
    "recipe": "mae",
    "seed": 0,
    "encoder": {
        "name": "thinkingearth_vit_tiny",
        "overrides": {
            "embed_dim": 32,
            "depth": 2,
            "num_heads": 2,
            "hyper_dim": 16,
            "patch_size": 8,
            "img_size": 32,
        },
    },
    "data": {
        "size": 32,
        "sensors": [{"sensor": "sentinel-2-l2a", "n": 16}, {"sensor": "sentinel-1-grd", "n": 16}],
        "batch_size": 8,
    },
    "augment": {"crop_size": 32},
    "mae": {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2},
    "contrastive": {"proj_dim": 16, "proj_hidden": 32},
    "optim": {"lr": 1e-3, "warmup_steps": 2},
    "trainer": {"max_steps": 4, "checkpoint_every": 2, "log_every": 1, "progress_bar": False},
}


def tiny_dict(**overrides: Any) -> dict[str, Any]:
    """The tiny configuration as a dict, with nested ``overrides`` merged in."""
    return merge(copy.deepcopy(TINY), overrides)


@pytest.fixture
def tiny() -> Callable[..., PretrainConfig]:
    """Build a validated tiny configuration: ``tiny(recipe="softcon", trainer={...})``."""

    def build(**overrides: Mapping[str, Any] | Any) -> PretrainConfig:
        return config_from_dict(tiny_dict(**overrides))

    return build
