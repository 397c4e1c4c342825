"""Any-sensor encoders: a ViT with hypernetwork patch embedding, and exact imports of published ones.

Public API::

    from thinkingearth.models import create_encoder, list_models, load, save

    encoder = create_encoder("thinkingearth_vit_base")          # new model, random weights
    encoder = load("CopernicusFM_ViT_base_varlang_e100.pth")     # published checkpoint
    features = encoder(image, bands=["B04", "B08"], sensor="sentinel-2-l2a", meta=batch)
    maps = encoder.forward_intermediates(image, bands=..., indices=[3, 5, 7, 11])
    save(encoder, "runs/my_encoder")                            # .safetensors + .json
    fast = load("runs/my_encoder.safetensors", precision="int8")  # ONNX Runtime int8 trunk

See :mod:`thinkingearth.models.encoder` for the calling conventions,
:mod:`thinkingearth.models.weights` for the checkpoint formats, and
:mod:`thinkingearth.models.fused` / :mod:`thinkingearth.models.int8` for the CPU inference
paths (exact fp32, the default; int8 on request).
"""

from thinkingearth.models.encoder import Encoder, EncoderConfig
from thinkingearth.models.text import TextEncoderUnavailableError
from thinkingearth.models.weights import (
    CheckpointFormatError,
    create_encoder,
    import_state_dict,
    list_models,
    load,
    register_config,
    save,
)

__all__ = [
    "CheckpointFormatError",
    "Encoder",
    "EncoderConfig",
    "TextEncoderUnavailableError",
    "create_encoder",
    "import_state_dict",
    "list_models",
    "load",
    "register_config",
    "save",
]
