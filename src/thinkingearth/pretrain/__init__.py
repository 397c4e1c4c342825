"""Self-supervised pretraining of the any-sensor encoder on any mix of Copernicus sensors.

Recipes (LightningModules in :mod:`thinkingearth.pretrain.modules`):

* ``mae``: masked autoencoding with a dynamic decoder that reconstructs whatever bands were input
  (He et al. 2022), optionally with feature distillation from a frozen teacher (Copernicus-FM,
  Wang et al. 2025);
* ``softcon``: multi-label guided soft contrastive learning (Wang et al. 2024), with ``supcon``
  (Khosla et al. 2020) and ``simclr`` (Chen et al. 2020) as baselines on the same code path;
* ``cross_sensor``: co-registered samples of two sensors of one place are positives;
* ``distill``: cosine feature distillation from any frozen torch module.

Use::

    from thinkingearth.pretrain import load_config, run_pretrain

    config = load_config("tiny-synthetic")          # or a YAML file
    result = run_pretrain(config, "runs/tiny", max_steps=100)
    encoder = thinkingearth.models.load(result.encoder)

or ``thinkingearth pretrain --config tiny-synthetic --out runs/tiny [--max-steps N] [--resume]``.
"""

from thinkingearth.pretrain.config import (
    PretrainConfig,
    config_from_dict,
    list_configs,
    load_config,
)
from thinkingearth.pretrain.run import PretrainResult, run_pretrain

__all__ = [
    "PretrainConfig",
    "PretrainResult",
    "config_from_dict",
    "list_configs",
    "load_config",
    "run_pretrain",
]
