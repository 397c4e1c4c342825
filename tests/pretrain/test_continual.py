"""Continual pretraining from published weights; the MAE target on the encoder's padded grid.

The published checkpoint here is a tiny Copernicus-FM (one block, 192 wide, patch 16) saved in
the authors' layout and registered under a weights name through the registry dict, with the
caches pointed at temporary folders and downloads made to fail the test: never the network.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
import yaml
from sources_fakes import bigearthnet_v1
from torch import Tensor

from thinkingearth.errors import UserInputError
from thinkingearth.models import create_encoder, load, published, save
from thinkingearth.models.published import PublishedWeights, WeightsUnavailableError
from thinkingearth.pretrain import config_from_dict, list_configs, load_config, run_pretrain
from thinkingearth.pretrain import modules as modules_module
from thinkingearth.pretrain.config import merge
from thinkingearth.pretrain.data import PretrainDataModule
from thinkingearth.pretrain.modules import MAEPretrain, build_encoder, build_module
from thinkingearth.pretrain.teacher import Teacher
from thinkingearth.pretrain.transforms import Normaliser

FAKE_FILE = "CopernicusFM_ViT_tiny_test.pth"
S2_BANDS = ("B02", "B03", "B04", "B08")


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Move every tensor (zeros included) so that every path matters."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.add_(0.02 * torch.randn(value.shape, generator=generator))


@pytest.fixture(scope="module")
def fake_cfm_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A one-block, 192-wide Copernicus-FM with 16-px patches in the authors' layout.

    The authors' file is a bare state dict with no ``fc_norm`` (MAE pretraining); torchgeo's
    module has the same keys otherwise.
    """
    from torchgeo.models.copernicusfm import CopernicusFM

    torch.manual_seed(11)
    model = CopernicusFM(img_size=64, patch_size=16, embed_dim=192, depth=1, num_heads=3)
    _perturb(model, 11)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(("fc_norm.", "head."))}
    path = tmp_path_factory.mktemp("published") / FAKE_FILE
    torch.save(state, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _config(init: str | None, **over: Any) -> dict[str, Any]:
    """A small MAE configuration on 64-px synthetic Sentinel-2 L1C, starting from ``init``."""
    base: dict[str, Any] = {
        "name": "continual-test",
        "recipe": "mae",
        "seed": 0,
        "encoder": {"init": init},
        "data": {"size": 64, "sensors": [{"sensor": "sentinel-2-l1c", "n": 4}], "batch_size": 2},
        "augment": {"crop_size": 64},
        "mae": {"decoder_dim": 16, "decoder_depth": 1, "decoder_heads": 2},
        "contrastive": {"proj_dim": 16, "proj_hidden": 32},
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "trainer": {"max_steps": 2, "checkpoint_every": 2, "log_every": 1, "progress_bar": False},
    }
    return merge(base, over)


def _first_batch(config: Any, normaliser: Normaliser) -> dict[str, Any]:
    data = PretrainDataModule(config, normaliser)
    data.build()
    return next(iter(data.train_dataloader()))


def _padded_patches(image: Tensor, patch: int, padding: int) -> Tensor:
    """Patches ``[B, N, C, p*p]`` cut one by one from the zero-padded image, row-major."""
    padded = F.pad(image, (padding, padding, padding, padding))
    b, c, h, w = padded.shape
    rows, cols = (h - patch) // patch + 1, (w - patch) // patch + 1
    cut = [
        padded[:, :, i * patch : (i + 1) * patch, j * patch : (j + 1) * patch].reshape(b, c, -1)
        for i in range(rows)
        for j in range(cols)
    ]
    return torch.stack(cut, dim=1)


def _changed(before: Tensor, after: Tensor) -> set[int]:
    """Indices along dim 1 whose values differ (``[B, N, ...]``)."""
    diff = (after - before).abs().flatten(2).amax(dim=(0, 2))
    return {int(i) for i in torch.nonzero(diff > 1e-4 * max(float(diff.max()), 1e-12))}


# ----------------------------------------------------------------------------------------------
# The MAE target on the encoder's patch grid
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 72])
def test_padded_encoder_grid_and_manual_patches_cover_the_same_pixels(fake_cfm_file, size):
    """The ground truth the target must match: which token sees which pixel of a padded image."""
    encoder = load(fake_cfm_file[0])
    assert (encoder.config.patch_size, encoder.config.conv_padding) == (16, 1)
    image = torch.randn(1, len(S2_BANDS), size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens, grid = encoder.embed(image, bands=list(S2_BANDS), sensor="sentinel-2-l1c")
    manual = _padded_patches(image, 16, 1)
    assert grid == (4, 4) and manual.shape[1] == 16 == tokens.shape[1] - 1
    # A pixel lies in the token whose padded window holds it, or in none (the last row and
    # column of a 64-px image, the last 9 of a 72-px one).
    for y, x in [(0, 0), (14, 14), (15, 15), (16, 40), (47, 31), (62, 62), (63, 63), (size - 1, 5)]:
        poked = image.clone()
        poked[0, 1, y, x] += 10.0
        with torch.no_grad():
            poked_tokens, _ = encoder.embed(poked, bands=list(S2_BANDS), sensor="sentinel-2-l1c")
        seen_by = _changed(tokens[:, 1:], poked_tokens[:, 1:])
        assert seen_by == _changed(manual, _padded_patches(poked, 16, 1)), (y, x)
        inside = 0 <= y + 1 < 64 and 0 <= x + 1 < 64
        assert seen_by == ({((y + 1) // 16) * 4 + (x + 1) // 16} if inside else set()), (y, x)
    # The target helper cuts exactly these patches.
    assert torch.equal(modules_module.patchify(image, 16, padding=1), manual)


def test_mae_target_is_cut_from_the_padded_grid_the_encoder_saw(fake_cfm_file, monkeypatch):
    """Through the real training path: the loss compares predictions with the padded patches."""
    config = config_from_dict(_config(str(fake_cfm_file[0])))
    normaliser = Normaliser()
    batch = _first_batch(config, normaliser)
    module = MAEPretrain(config, normaliser)
    seen: dict[str, Any] = {}
    make_view = module.augmenter.view

    def view(*args: Any, **kwargs: Any) -> Any:
        seen["view"] = make_view(*args, **kwargs)
        return seen["view"]

    loss_of = modules_module.masked_reconstruction_loss

    def loss(pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool) -> Tensor:
        seen["pred"], seen["target"] = pred, target
        return loss_of(pred, target, mask, norm_pix)

    monkeypatch.setattr(module.augmenter, "view", view)
    monkeypatch.setattr(modules_module, "masked_reconstruction_loss", loss)
    module.compute_losses(batch)
    image = seen["view"].image
    assert image.shape[-2:] == (64, 64)
    expected = _padded_patches(image, 16, 1)
    assert seen["pred"].shape == expected.shape == (2, 16, image.shape[1], 256)
    assert torch.equal(seen["target"], expected)


# ----------------------------------------------------------------------------------------------
# Continual pretraining from a published weights name (a fake registry entry, no network)
# ----------------------------------------------------------------------------------------------

FAKE_NAME = "tiny_copernicusfm"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Empty temporary caches, offline, and a download that fails the test if called."""
    for variable in ("HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("THINKINGEARTH_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(**kwargs: object) -> str:
        raise AssertionError(f"hf_hub_download called: {kwargs}")

    monkeypatch.setattr(published, "hf_hub_download", no_network)
    return tmp_path / "weights"


@pytest.fixture
def fake_published(
    offline: Path, monkeypatch: pytest.MonkeyPatch, fake_cfm_file: tuple[Path, str]
) -> PublishedWeights:
    """``tiny_copernicusfm``: the tiny file in the weights folder, registered by name."""
    path, digest = fake_cfm_file
    offline.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, offline / FAKE_FILE)
    entry = PublishedWeights(
        name=FAKE_NAME,
        repo_id="test-org/tiny-copernicusfm",
        filename=FAKE_FILE,
        sha256=digest,
        architecture="copernicusfm_vit_192",  # what load() infers: 192 wide
        licence="CC-BY-4.0",
        citation="test entry",
        size=path.stat().st_size,
        reference="original",
    )
    monkeypatch.setitem(published.WEIGHTS, entry.name, entry)
    return entry


def _blocks(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if k.startswith("blocks.")}


class _StateAtFirstStep(L.Callback):
    """Copies the encoder's tensors when the first optimiser step is about to run."""

    def __init__(self) -> None:
        self.state: dict[str, Tensor] | None = None

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == 0 and self.state is None:
            self.state = {k: v.detach().clone() for k, v in module.encoder.state_dict().items()}


def test_shipped_continue_copernicusfm_validates_without_weights_or_data(offline):
    assert "continue-copernicusfm" in list_configs()
    shipped = load_config("continue-copernicusfm")  # no file, no network, no data needed
    assert (shipped.encoder.init, shipped.encoder.name, shipped.encoder.overrides) == (
        "copernicusfm_base",
        None,
        {},
    )
    assert shipped.recipe == "mae" and shipped.sensors == ("sentinel-2-l2a",)
    assert shipped.data.source == "bigearthnet" and shipped.crop_size % 16 == 0
    assert config_from_dict(shipped.to_dict()) == shipped
    moved = load_config("continue-copernicusfm", {"data": {"root": "elsewhere"}})
    assert moved.data.root == "elsewhere"


def _run_shipped(tmp_path: Path, overrides: dict[str, Any]) -> None:
    """The shipped configuration from the fake weights name for 2 steps, checked throughout."""
    over = merge(
        {
            "encoder": {"init": FAKE_NAME},
            "optim": {"warmup_steps": 0, "lr": 1e-3},
            "trainer": {
                "max_steps": 2,
                "checkpoint_every": 2,
                "log_every": 1,
                "progress_bar": False,
                "accelerator": "cpu",
            },
        },
        overrides,
    )
    config = load_config("continue-copernicusfm", over)
    original = load(FAKE_NAME)
    first = _StateAtFirstStep()
    result = run_pretrain(config, tmp_path / "run", callbacks=[first], log=None)
    assert result.steps == 2
    # Before step 1 the module's encoder is the published checkpoint, tensor for tensor.
    assert first.state is not None and first.state.keys() == original.state_dict().keys()
    for key, value in original.state_dict().items():
        assert torch.equal(first.state[key], value), key
    # After it the weights moved, the architecture did not, and the export loads.
    assert result.encoder is not None
    exported = load(result.encoder)
    assert exported.config == original.config
    assert exported.config.conv_padding == 1 and exported.config.norm_eps == 1e-6
    blocks = _blocks(original.state_dict())
    moved = [k for k, v in blocks.items() if not torch.equal(exported.state_dict()[k], v)]
    assert len(moved) > len(blocks) // 2
    image = torch.randn(2, 4, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = exported(image, bands=list(S2_BANDS), sensor="sentinel-2-l2a")
    assert features.shape == (2, 192) and torch.isfinite(features).all()
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["encoder"] == {"name": None, "overrides": {}, "init": FAKE_NAME}


@pytest.mark.slow
def test_shipped_continue_copernicusfm_runs_from_the_published_weights(fake_published, tmp_path):
    """On tiny BigEarthNet v1 patches in the real layout (72 px, 4 in the train split)."""
    bigearthnet_v1(tmp_path / "ben", n_s2=8, n_s1=1, size=72)
    data = {"root": str(tmp_path / "ben"), "size": 64, "batch_size": 2}
    _run_shipped(tmp_path, {"data": data, "augment": {"crop_size": 64}})


@pytest.mark.slow
def test_shipped_continue_copernicusfm_on_real_bigearthnet(fake_published, realdata, tmp_path):
    """The real patches beside the project, as the config's header says (no split files)."""
    root = realdata / "bigearthnet-v1"
    if not (root / "S2").is_dir():
        pytest.skip(f"no BigEarthNet v1 Sentinel-2 patches in {root}")
    data = {"root": str(root), "split": None, "batch_size": 4}
    _run_shipped(tmp_path, {"data": data})


@pytest.mark.parametrize("recipe", ["softcon", "cross_sensor", "distill"])
def test_every_recipe_starts_from_the_checkpoint(fake_published, recipe):
    extra: dict[str, Any] = {"recipe": recipe, "encoder": {"init": FAKE_NAME}}
    if recipe == "cross_sensor":
        extra["data"] = {"pair": ["sentinel-1-grd", "sentinel-2-l1c"]}
    if recipe == "distill":
        extra["distill"] = {"teacher": {"factory": "torch.nn:Identity"}}
    config = config_from_dict(_config(None, **extra))
    teacher = Teacher(torch.nn.Identity()) if recipe == "distill" else None
    module = build_module(config, Normaliser(), teacher)
    original = load(FAKE_NAME)
    assert module.encoder.training and module.encoder.config == original.config
    for key, value in original.state_dict().items():
        assert torch.equal(module.encoder.state_dict()[key], value), key


# ----------------------------------------------------------------------------------------------
# Validation: names, paths, and architecture contradictions
# ----------------------------------------------------------------------------------------------


def _one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_published_names_validate_from_the_registry_alone(offline):
    # No file anywhere and downloads fail the test: the registry is enough to validate.
    config = config_from_dict(_config("copernicusfm_base"))
    assert config.encoder.name is None and config.encoder.init == "copernicusfm_base"
    named = config_from_dict(
        _config("copernicusfm_base", encoder={"name": "copernicusfm_vit_base"})
    )
    assert named.encoder.name == "copernicusfm_vit_base"
    config_from_dict(_config("dofa_large"))
    # Without init the name still defaults to the tiny architecture, as before.
    assert config_from_dict(_config(None)).encoder.name == "thinkingearth_vit_tiny"


def test_a_distillation_teacher_is_named_like_an_init(offline):
    # The registry validates the name (nothing fetched now); load() fetches it when the run starts
    named = config_from_dict(_config(None, distill={"teacher": {"checkpoint": "dofa_base"}}))
    assert named.distill is not None and named.distill.teacher is not None
    assert named.distill.teacher.checkpoint == "dofa_base"
    with pytest.raises(UserInputError) as error:
        config_from_dict(_config(None, distill={"teacher": {"checkpoint": "dofa_bse"}}))
    assert re.match(
        r"distill\.teacher\.checkpoint: checkpoint dofa_bse does not exist and is not a published "
        r"weights name; .*dofa_base",
        _one_line(error),
    )


@pytest.mark.parametrize(
    ("encoder", "message"),
    [
        (
            {"init": "copernicusfm_base", "name": "dofa_vit_base"},
            r"encoder\.name 'dofa_vit_base' contradicts encoder\.init copernicusfm_base, a "
            r"copernicusfm_vit_base checkpoint.*set it to 'copernicusfm_vit_base'",
        ),
        (
            {"init": "copernicusfm_base", "overrides": {"depth": 2}},
            r"encoder\.overrides \(depth\) cannot change encoder\.init copernicusfm_base",
        ),
        (
            {"init": "copernicusfm_bse"},
            r"encoder\.init: checkpoint copernicusfm_bse does not exist and is not a published "
            r"weights name; .*copernicusfm_base",
        ),
        (
            {"init": "copernicusfm_vit_base"},
            r"encoder\.init: 'copernicusfm_vit_base' is an architecture",
        ),
        ({"init": "runs/none/encoder.safetensors"}, r"encoder\.init: checkpoint runs/none/"),
        ({"name": "copernicusfm_bse"}, r"encoder\.name: unknown model 'copernicusfm_bse'"),
    ],
)
def test_encoder_contradictions_are_one_line_errors(offline, encoder, message):
    data = _config(None)
    data["encoder"] = encoder
    with pytest.raises(UserInputError) as error:
        config_from_dict(data)
    assert re.search(message, _one_line(error))


def test_our_checkpoint_is_checked_from_its_json(tmp_path):
    """A .safetensors init: the architecture and patch size come from the JSON beside it."""
    encoder = create_encoder(
        "thinkingearth_vit_tiny", embed_dim=32, depth=1, num_heads=2, hyper_dim=16, patch_size=8
    )
    path = save(encoder, tmp_path / "mine")
    config = config_from_dict(_config(str(path), augment={"crop_size": 32}))
    assert build_encoder(config.encoder, 0).config == encoder.config
    config_from_dict(_config(str(path), encoder={"name": "thinkingearth_vit_tiny"}))
    with pytest.raises(UserInputError, match="contradicts"):
        config_from_dict(_config(str(path), encoder={"name": "thinkingearth_vit_small"}))
    with pytest.raises(UserInputError, match=r"crop_size \(36\) must be a multiple .* \(8\)"):
        config_from_dict(_config(str(path), augment={"crop_size": 36}))


def test_pth_architecture_is_checked_when_the_tensors_are_read(fake_cfm_file):
    """A .pth tells its architecture only when loaded: at module construction, not later."""
    path = str(fake_cfm_file[0])
    config = config_from_dict(_config(path, encoder={"name": "copernicusfm_vit_base"}))
    with pytest.raises(UserInputError, match=r"a copernicusfm_vit_192 checkpoint") as error:
        build_module(config, Normaliser())
    _one_line(error)
    config = config_from_dict(_config(path, data={"size": 40}, augment={"crop_size": 40}))
    with pytest.raises(UserInputError, match=r"crop_size \(40\) must be a multiple .* \(16\)"):
        build_module(config, Normaliser())


def test_unavailable_weights_fail_when_the_run_starts(offline, tmp_path):
    """Valid config, no cached file, offline: the registry's one-line error, nothing written."""
    config = config_from_dict(_config("copernicusfm_base"))
    with pytest.raises(WeightsUnavailableError) as error:
        run_pretrain(config, tmp_path / "run", log=None)
    text = _one_line(error)
    assert "CopernicusFM_ViT_base_varlang_e100.pth" in text and str(offline) in text
    assert not (tmp_path / "run" / "config.yaml").exists()
