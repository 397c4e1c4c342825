"""Mind the Modality Gap: the alignment loss, weight interpolation, patching and the recipe."""

from __future__ import annotations

import math
from datetime import date

import pytest
import torch

from thinkingearth.errors import UserInputError
from thinkingearth.vl.modality_gap import (
    PatchingResult,
    alignment_loss,
    interpolate_state_dicts,
    prompt_logits,
    season_of,
    soft_targets,
)

# ----------------------------------------------------------------------------------------------
# The loss against a written-out reference
# ----------------------------------------------------------------------------------------------


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_prompt_logits_are_scaled_cosines_written_out() -> None:
    features = torch.tensor([[3.0, 4.0], [0.0, -2.0]])
    classes = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    scale = torch.tensor(math.log(10.0))
    logits = prompt_logits(features, classes, scale)
    expected = []
    for f in features.tolist():
        nf = math.hypot(*f)
        row = []
        for c in classes.tolist():
            nc = math.hypot(*c)
            row.append(10.0 * (f[0] * c[0] + f[1] * c[1]) / (nf * nc))
        expected.append(row)
    assert torch.allclose(logits, torch.tensor(expected), atol=1e-5)


def test_alignment_loss_matches_explicit_loops() -> None:
    student = torch.tensor([[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]])
    teacher = torch.tensor([[0.0, 2.5, 1.0], [-2.0, 1.0, 3.0]])
    logits = torch.tensor([[2.0, -1.0], [0.5, 3.0]])
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss, parts = alignment_loss(student, teacher, logits, targets, bce_weight=0.05)

    squared = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        for s, t in zip(s_row, t_row, strict=True):
            squared += (s - t) ** 2
    mse = squared / 6  # (1 + 0.25 + 0.25 + 1 + 1 + 0) / 6
    assert mse == pytest.approx(3.5 / 6)
    bce = 0.0
    for l_row, y_row in zip(logits.tolist(), targets.tolist(), strict=True):
        for x, y in zip(l_row, y_row, strict=True):
            p = _sigmoid(x)
            bce += -(y * math.log(p) + (1 - y) * math.log(1 - p))
    bce /= 4
    assert float(parts["mse"]) == pytest.approx(mse, rel=1e-6)
    assert float(parts["bce"]) == pytest.approx(bce, rel=1e-6)
    assert float(loss) == pytest.approx(mse + 0.05 * bce, rel=1e-6)
    # the default weight is the paper's 0.05
    assert float(alignment_loss(student, teacher, logits, targets)[0]) == pytest.approx(float(loss))


def test_alignment_loss_gradients_reach_the_student_only() -> None:
    student = torch.randn(4, 8, requires_grad=True)
    teacher = torch.randn(4, 8, requires_grad=True)
    classes = torch.randn(3, 8)
    logits = prompt_logits(student, classes, torch.tensor(math.log(100.0)))
    loss, _ = alignment_loss(student, teacher, logits, torch.eye(3)[[0, 1, 2, 0]])
    loss.backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0
    assert teacher.grad is None  # the teacher is a target, never trained


def test_alignment_loss_refuses_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        alignment_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="differ"):
        alignment_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2, 3))


def test_soft_targets_are_the_teacher_softmax() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert torch.allclose(soft_targets(logits), torch.tensor([[0.25, 0.75]]))


# ----------------------------------------------------------------------------------------------
# Interpolation
# ----------------------------------------------------------------------------------------------


def test_interpolation_written_out() -> None:
    zero = {"w": torch.tensor([0.0, 2.0, -4.0]), "n": torch.tensor(3)}
    tuned = {"w": torch.tensor([10.0, 4.0, 4.0]), "n": torch.tensor(3)}
    for alpha in (0.0, 0.1, 0.5, 1.0):
        mixed = interpolate_state_dicts(zero, tuned, alpha)
        expected = [
            (1 - alpha) * a + alpha * b for a, b in zip([0, 2, -4], [10, 4, 4], strict=True)
        ]
        assert torch.allclose(mixed["w"], torch.tensor(expected, dtype=torch.float32))
        assert int(mixed["n"]) == 3
    assert torch.equal(interpolate_state_dicts(zero, tuned, 0.0)["w"], zero["w"])
    assert torch.equal(interpolate_state_dicts(zero, tuned, 1.0)["w"], tuned["w"])


def test_interpolation_refuses_what_cannot_be_mixed() -> None:
    a = {"w": torch.zeros(2)}
    with pytest.raises(ValueError, match="alpha"):
        interpolate_state_dicts(a, a, 1.5)
    with pytest.raises(ValueError, match="different keys"):
        interpolate_state_dicts(a, {"v": torch.zeros(2)}, 0.5)
    with pytest.raises(ValueError, match="w:"):
        interpolate_state_dicts(a, {"w": torch.zeros(3)}, 0.5)
    with pytest.raises(ValueError, match="non-floating"):
        interpolate_state_dicts({"n": torch.tensor(1)}, {"n": torch.tensor(2)}, 0.5)


# ----------------------------------------------------------------------------------------------
# Scene tasks
# ----------------------------------------------------------------------------------------------


def test_season_follows_the_captions_calendar() -> None:
    def days(d: date) -> float:
        return float((d - date(1970, 1, 1)).days)

    assert season_of({"time": days(date(2023, 1, 15))}) == 0  # winter
    assert season_of({"time": days(date(2023, 3, 21))}) == 1  # day 80: spring
    assert season_of({"time": days(date(2023, 7, 1))}) == 2  # summer
    assert season_of({"time": days(date(2023, 10, 1))}) == 3  # autumn
    assert season_of({"time": days(date(2023, 12, 25))}) == 0  # winter again
    with pytest.raises(UserInputError, match="time"):
        season_of({"time": float("nan")})


def test_synthetic_tasks_agree_with_the_captions() -> None:
    from thinkingearth.data.synthetic import LANDCOVER_CLASSES
    from thinkingearth.vl.modality_gap import synthetic_scene_samples

    data = synthetic_scene_samples("landcover", n=6, size=32, split="val")
    seasons = synthetic_scene_samples("season", n=6, size=32, split="val")
    for sample, cover, season in zip(data.samples, data.labels, seasons.labels, strict=True):
        caption = sample["caption"]
        # the caption names the dominant class first and the season after "Seen in"
        assert LANDCOVER_CLASSES[int(cover)] in caption.split(".")[0]
        assert f"Seen in {seasons.task.classnames[int(season)]}" in caption


def test_patching_report_table() -> None:
    result = PatchingResult(
        task="landcover",
        control=("season",),
        alphas=(0.0, 0.5, 1.0),
        accuracy={"landcover": [0.2, 0.5, 0.6], "season": [0.4, 0.4, 0.3]},
        chance={"landcover": 0.3, "season": 0.25},
    )
    table = result.to_markdown()
    assert "| 0.5 | 0.500 | 0.400 |" in table
    assert "landcover (task)" in table and "season (control)" in table
    rows = result.to_dict()["rows"]
    assert rows[2] == {"alpha": 1.0, "landcover": 0.6, "season": 0.3}


# ----------------------------------------------------------------------------------------------
# Stage (a): patching a tiny VL model
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    """One torch thread: the tiny models run many times faster on a shared, loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_patching_interpolates_between_zero_shot_and_fine_tuned(tiny_vl, one_thread) -> None:
    from thinkingearth.vl.modality_gap import (
        class_head,
        image_tower_state,
        patch,
        synthetic_scene_samples,
        zero_shot_accuracy,
    )

    model = tiny_vl()
    train = synthetic_scene_samples("landcover", n=64, size=32, split="train")
    held_out = synthetic_scene_samples("landcover", n=48, size=32, split="val")
    control = synthetic_scene_samples("season", n=48, size=32, split="val")
    head = class_head(model, train.task.classnames, None)
    before = zero_shot_accuracy(model, held_out, head)
    before_state = image_tower_state(model)
    text_before = model.encode_text(["a satellite image of cropland."]).clone()
    result, zero_shot, fine_tuned = patch(
        model,
        train,
        {"landcover": held_out, "season": control},
        alphas=(0.0, 0.5, 1.0),
        steps=60,
        batch_size=32,
        lr=1e-3,
        warmup_steps=5,
    )
    # θ(0) is the model as it came: same weights, same accuracy
    assert all(torch.equal(zero_shot[k], before_state[k]) for k in before_state)
    assert result.accuracy["landcover"][0] == pytest.approx(before)
    # fine-tuning through the frozen head learned the task
    assert result.losses[-1] < result.losses[0]
    assert result.accuracy["landcover"][-1] > before + 0.1
    assert result.accuracy["landcover"][-1] > result.chance["landcover"]
    # the text side and the head's temperature were never touched
    assert torch.allclose(model.encode_text(["a satellite image of cropland."]), text_before)
    assert float(model.logit_scale.detach()) == pytest.approx(math.log(1 / 0.07))
    # the model is left at the last alpha (1: fine-tuned)
    assert all(torch.equal(fine_tuned[k], v) for k, v in image_tower_state(model).items())
    assert set(result.accuracy) == {"landcover", "season"} and result.control == ("season",)
    assert all(len(v) == 3 for v in result.accuracy.values())


def test_run_patching_writes_the_report_and_the_chosen_model(tiny_vl, one_thread, tmp_path) -> None:
    import json

    from thinkingearth.vl.modality_gap import (
        image_tower_state,
        interpolate_state_dicts,
        list_patching_configs,
        load_patching_config,
        run_patching,
    )
    from thinkingearth.vl.model import load_vl_model, save_vl_model

    model = tiny_vl()
    save_vl_model(model, tmp_path / "zs" / "vl_model")
    assert "synthetic-landcover" in list_patching_configs()
    config = load_patching_config(
        "synthetic-landcover",
        {
            "weights": str(tmp_path / "zs"),
            "n_train": 16,
            "n_eval": 8,
            "steps": 3,
            "batch_size": 8,
            "alphas": [0.0, 0.25, 1.0],
            "save_alpha": 0.25,
        },
    )
    out = tmp_path / "patch"
    result = run_patching(config, out)
    report = json.loads((out / "patching.json").read_text())
    assert [row["alpha"] for row in report["rows"]] == [0.0, 0.25, 1.0]
    assert report["rows"][1]["landcover"] == result.accuracy["landcover"][1]
    assert "season" in report["rows"][0] and report["task"] == "landcover"
    assert "| 0.25 |" in (out / "patching.md").read_text()
    saved = load_vl_model(out)
    # the saved model is θ(0.25) between the zero-shot and the fine-tuned image towers
    zero = image_tower_state(load_vl_model(tmp_path / "zs"))
    state = image_tower_state(saved)
    key = "projection.weight"
    assert not torch.equal(state[key], zero[key])
    tuned = {k: zero[k] + (state[k] - zero[k]) / 0.25 for k in zero}
    assert torch.allclose(interpolate_state_dicts(zero, tuned, 0.25)[key], state[key], atol=1e-6)
    with pytest.raises(UserInputError, match="exists"):
        run_patching(config, out)


def test_patching_config_errors_are_one_line() -> None:
    from thinkingearth.vl.modality_gap import load_patching_config

    with pytest.raises(UserInputError, match="weights"):
        load_patching_config("synthetic-landcover", {"weights": None})
    with pytest.raises(UserInputError, match="unknown scene task 'flood'"):
        load_patching_config("synthetic-landcover", {"controls": ["flood"]})
    with pytest.raises(UserInputError, match="alphas"):
        load_patching_config("synthetic-landcover", {"alphas": [0.0, 1.5]})
    with pytest.raises(UserInputError, match="'stepz'"):
        load_patching_config("synthetic-landcover", {"stepz": 3})


# ----------------------------------------------------------------------------------------------
# Stage (b): the recipe modality_gap
# ----------------------------------------------------------------------------------------------

_TINY = {
    "embed_dim": 48,
    "depth": 2,
    "num_heads": 2,
    "hyper_dim": 16,
    "patch_size": 8,
    "img_size": 32,
}


def _align_config(teacher: str, changes=None):
    from thinkingearth.configfile import merge
    from thinkingearth.pretrain.config import config_from_dict

    data = {
        "name": "test-modality-gap",
        "recipe": "modality_gap",
        "data": {
            "source": "synthetic",
            "pair": ["sentinel-1-grd", "sentinel-2-l2a"],
            "sensors": [
                {"sensor": "sentinel-1-grd", "n": 192},
                {"sensor": "sentinel-2-l2a", "n": 192},
            ],
            "size": 32,
            "batch_size": 32,
        },
        "optim": {"lr": 1e-3, "warmup_steps": 10},
        "trainer": {
            "max_steps": 120,
            "progress_bar": False,
            "log_every": 10,
            "checkpoint_every": 60,
        },
        "vl": {"teacher": teacher},
    }
    return config_from_dict(merge(data, changes or {}))


def _s2_teacher(tiny_vl, folder):
    """A tiny S2 teacher: a random VL model fine-tuned on land cover through its prompt head."""
    from thinkingearth.vl.modality_gap import (
        class_head,
        finetune_through_head,
        synthetic_scene_samples,
    )
    from thinkingearth.vl.model import save_vl_model

    teacher = tiny_vl()
    train = synthetic_scene_samples("landcover", n=96, size=32, split="train")
    finetune_through_head(
        teacher,
        train,
        class_head(teacher, train.task.classnames, None),
        steps=100,
        batch_size=32,
        lr=1e-3,
    )
    save_vl_model(teacher, folder / "vl_model")
    return teacher


@pytest.mark.slow
def test_alignment_raises_sentinel1_zero_shot_accuracy(tiny_vl, one_thread, tmp_path) -> None:
    """Align Sentinel-1 to a Sentinel-2 teacher: S1 zero-shot land cover rises, S2 stays."""
    from thinkingearth.pretrain import run_pretrain
    from thinkingearth.vl.modality_gap import (
        class_head,
        synthetic_scene_samples,
        zero_shot_accuracy,
    )
    from thinkingearth.vl.model import load_vl_model

    teacher = _s2_teacher(tiny_vl, tmp_path / "teacher")
    s1 = synthetic_scene_samples("landcover", sensor="sentinel-1-grd", n=64, size=32, split="val")
    s2 = synthetic_scene_samples("landcover", n=64, size=32, split="val")
    head = class_head(teacher, s1.task.classnames, None)
    s1_before = zero_shot_accuracy(teacher, s1, head)  # the student starts as the teacher's tower
    s2_teacher = zero_shot_accuracy(teacher, s2, head)
    majority = float(torch.bincount(s1.labels).max()) / len(s1.labels)
    assert s2_teacher > majority  # a teacher worth aligning with

    result = run_pretrain(_align_config(str(tmp_path / "teacher")), tmp_path / "run", log=None)
    assert result.steps == 120
    student = load_vl_model(tmp_path / "run")
    s1_after = zero_shot_accuracy(student, s1, head)
    s2_after = zero_shot_accuracy(student, s2, head)
    print(
        f"S1 zero-shot land cover {s1_before:.3f} -> {s1_after:.3f} (majority {majority:.3f}); "
        f"S2 teacher {s2_teacher:.3f}, student {s2_after:.3f}"
    )
    assert s1_after >= s1_before + 0.08
    assert s1_after > majority
    assert s2_after >= s2_teacher - 0.1
    described = student.describe()
    assert set(described["sensors"]) == {"sentinel-1-grd", "sentinel-2-l2a"}
    assert described["text"]["spec"] == teacher.describe()["text"]["spec"]
    assert described["logit_scale"] == pytest.approx(float(teacher.logit_scale.detach()))


def test_alignment_resumes_exactly(tiny_vl, one_thread, tmp_path) -> None:
    """Interrupted after 2 steps and resumed, the run ends where the uninterrupted one does."""
    import lightning as L

    from thinkingearth.pretrain import run_pretrain
    from thinkingearth.vl.model import load_vl_model, save_vl_model

    save_vl_model(tiny_vl(), tmp_path / "teacher" / "vl_model")
    small = {
        "data": {
            "sensors": [
                {"sensor": "sentinel-1-grd", "n": 16},
                {"sensor": "sentinel-2-l2a", "n": 16},
            ],
            "batch_size": 8,
        },
        "trainer": {"max_steps": 4, "checkpoint_every": 2},
    }
    config = _align_config(str(tmp_path / "teacher"), small)
    run_pretrain(config, tmp_path / "reference", log=None)

    class StopAfterTwo(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step >= 2:
                trainer.should_stop = True

    first = run_pretrain(config, tmp_path / "resumed", callbacks=[StopAfterTwo()], log=None)
    assert first.steps == 2
    second = run_pretrain(config, tmp_path / "resumed", resume=True, log=None)
    assert second.resumed_from == 2 and second.steps == 4
    reference = load_vl_model(tmp_path / "reference").state_dict()
    resumed = load_vl_model(tmp_path / "resumed").state_dict()
    assert reference.keys() == resumed.keys()
    for key, value in reference.items():
        assert torch.allclose(value, resumed[key], atol=1e-6), key
    # the frozen teacher is not in the checkpoints; the student's tower is
    state = torch.load(
        tmp_path / "resumed" / "checkpoints" / "step-00000004.ckpt", weights_only=True
    )["state_dict"]
    assert any(k.startswith("projection.") for k in state)
    assert not any(k.startswith("teacher") or k == "class_head" for k in state)


def test_alignment_config_errors_are_one_line(tmp_path) -> None:
    teacher = str(tmp_path / "teacher")
    with pytest.raises(UserInputError, match=r"vl\.teacher"):
        _align_config(teacher, {"vl": {"teacher": None}})
    with pytest.raises(UserInputError, match=r"recipe modality_gap needs data\.pair"):
        _align_config(teacher, {"data": {"pair": None}})
    with pytest.raises(
        UserInputError, match=r"teacher_sensor sentinel-3-olci is not in data\.pair"
    ):
        _align_config(teacher, {"vl": {"teacher_sensor": "sentinel-3-olci"}})
    with pytest.raises(UserInputError, match=r"'vl\.bce_weigth'"):
        _align_config(teacher, {"vl": {"bce_weigth": 0.1}})
    with pytest.raises(UserInputError, match=r"drop encoder\.init and encoder\.overrides"):
        _align_config(teacher, {"encoder": {"overrides": {"depth": 2}}})
    with pytest.raises(UserInputError, match=r"vl\.student_sensors is empty"):
        _align_config(teacher, {"vl": {"student_sensors": []}})
    # defaults are resolved into the config the run stores
    config = _align_config(teacher)
    assert config.vl["teacher_sensor"] == "sentinel-2-l2a"
    assert config.vl["student_sensors"] == ["sentinel-1-grd", "sentinel-2-l2a"]
    assert config.vl["bce_weight"] == 0.05 and config.vl["targets"] == "labels"
    assert config.vl["classes"][0] == "water"
    assert config.sensors == ("sentinel-1-grd", "sentinel-2-l2a") and config.paired
    # a missing teacher file is named when the run starts, before any output
    from thinkingearth.pretrain import run_pretrain

    with pytest.raises(UserInputError, match="does not exist"):
        run_pretrain(config, tmp_path / "out", log=None)
    assert not (tmp_path / "out").exists()


def test_alignment_on_real_bigearthnet_pairs(tiny_vl, one_thread, realdata, tmp_path) -> None:
    """BigEarthNet S1 + S2 pairs with their 19-class labels through the prompt head."""
    from thinkingearth.data.formats.bigearthnet import CLASSES_19
    from thinkingearth.pretrain import run_pretrain
    from thinkingearth.vl.model import load_vl_model, save_vl_model

    root = realdata / "bigearthnet-v1"
    if not (root / "S1").is_dir():
        pytest.skip(f"no BigEarthNet S1/S2 pairs in {root}")
    save_vl_model(tiny_vl(), tmp_path / "teacher" / "vl_model")
    config = _align_config(
        str(tmp_path / "teacher"),
        {
            "data": {
                "source": "bigearthnet",
                "root": str(root),
                "split": None,
                "sensors": [{"sensor": "sentinel-1-grd"}, {"sensor": "sentinel-2-l2a"}],
                "size": 32,
                "batch_size": 3,
            },
            "trainer": {"max_steps": 2, "checkpoint_every": 2},
        },
    )
    assert config.vl["classes"] == list(CLASSES_19)
    result = run_pretrain(config, tmp_path / "run", log=None)
    assert result.steps == 2 and result.final_loss is not None
    assert math.isfinite(result.final_loss)
    described = load_vl_model(tmp_path / "run").describe()
    assert set(described["sensors"]) == {"sentinel-1-grd", "sentinel-2-l2a"}


def test_teacher_sees_its_bands_and_gradients_reach_the_student_only(tiny_vl, one_thread) -> None:
    """An RGB teacher (as the authors' CLIP) and a student on all S2 bands and on S1."""
    from thinkingearth.data.transforms import Normaliser
    from thinkingearth.pretrain.data import PretrainDataModule, collate_pairs
    from thinkingearth.vl.modality_gap import ModalityGapAlign, modality_gap_settings

    config = _align_config(
        "unused",
        {
            "data": {
                "sensors": [
                    {"sensor": "sentinel-1-grd", "n": 4},
                    {"sensor": "sentinel-2-l2a", "n": 4},
                ],
                "batch_size": 4,
            },
            "vl": {"teacher_bands": ["B04", "B03", "B02"]},
        },
    )
    normaliser = Normaliser()
    data = PretrainDataModule(config, normaliser)
    data.build()
    batch = collate_pairs([data.dataset[i] for i in range(4)])
    teacher = tiny_vl()
    module = ModalityGapAlign(config, normaliser, modality_gap_settings(config), teacher=teacher)
    seen: list[tuple[str, tuple[str, ...]]] = []
    forward = teacher.encoder.forward

    def spy(image, bands, sensor=None, meta=None):
        seen.append((sensor, tuple(bands)))
        return forward(image, bands=bands, sensor=sensor, meta=meta)

    teacher.encoder.forward = spy  # after the student copied the teacher's tower
    loss, parts = module.compute_losses(batch)
    assert seen == [("sentinel-2-l2a", ("B04", "B03", "B02"))]
    assert set(parts) >= {"mse/sentinel-1-grd", "bce/sentinel-2-l2a"}
    loss.backward()
    assert module.projection.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
    # the student is a copy, not the teacher itself
    assert module.encoder is not teacher.encoder


def test_a_teacher_never_aligned_on_its_sensor_is_refused(tiny_vl) -> None:
    from thinkingearth.data.transforms import Normaliser
    from thinkingearth.vl.modality_gap import ModalityGapAlign, modality_gap_settings

    config = _align_config("unused")
    teacher = tiny_vl(sensors={"sentinel-1-grd": ["VV", "VH"]})
    with pytest.raises(UserInputError, match=r"aligned with text on sentinel-1-grd only"):
        ModalityGapAlign(config, Normaliser(), modality_gap_settings(config), teacher=teacher)
