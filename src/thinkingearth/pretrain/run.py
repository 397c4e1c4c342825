"""Run a pretraining configuration end to end: ``thinkingearth pretrain`` calls :func:`run_pretrain`.

Output folder ``OUT``::

    OUT/config.yaml              the resolved configuration of the run
    OUT/normalisation.json       the normalisation (with statistics estimated for the run)
    OUT/checkpoints/step-*.ckpt  Lightning checkpoints, atomic, the latest few kept
    OUT/logs/csv/metrics.csv     losses and learning rate (CSV)
    OUT/logs/tensorboard/        the same for TensorBoard
    OUT/encoder.safetensors      the pretrained encoder (with OUT/encoder.json), loadable with
                                 thinkingearth.models.load
    OUT/summary.json             steps, time, final loss
    OUT/...                      what a plugin recipe adds (``image_text``: vl_model.safetensors
                                 + vl_model.json, see :mod:`thinkingearth.pretrain.plugins`)

``--resume`` continues from the latest checkpoint with the optimiser, scheduler, step counter and
data-order position restored; an ``OUT`` that holds a run is refused without ``--resume`` (or
``--overwrite``, which deletes that run's files once the new run's inputs are checked), and so is
``--resume`` with no checkpoint or a corrupt one. SIGTERM stops the run after the current step
with a checkpoint of it (exit status 143); ``--resume`` continues from there. Augmentations and
MAE masks are drawn from ``(seed, step, rank)``, so a resumed run repeats exactly what the
uninterrupted run would have done. A run resumed with a different ``--max-steps`` fits its
learning-rate schedule to the new end (the change is stored in the checkpoint; see
:class:`~thinkingearth.pretrain.modules.WarmupCosine`). Resumed before its old end, the rate
decays from the resume step along a cosine from the value it had there to its floor
(``optim.min_lr_ratio * optim.lr``) at the new ``max_steps``. Resumed at or after its old end
(a finished run, at the floor), it is re-warmed as in continual pretraining (Gupta et al. 2023):
the rate rises linearly from the floor over ``optim.warmup_steps`` steps (at least 1) to the
schedule planned for the new ``max_steps``, then follows that schedule's cosine down. Either way
the rate is continuous at the resume and reaches the floor only at the new end. With the same
``--max-steps`` the schedule is the uninterrupted run's, exactly.

Scaling: ``trainer.devices``/``num_nodes`` with ``strategy: ddp`` run Lightning DDP (gloo on CPU,
NCCL on GPUs); Lightning starts the processes itself, or joins those of ``torchrun`` or SLURM.
Every rank reads the same sensor at each step and contrastive recipes gather embeddings across
ranks. Only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import yaml

from thinkingearth.errors import UserInputError
from thinkingearth.fileio import atomic_file, check_writable_parent, remove_outputs
from thinkingearth.pretrain.config import PretrainConfig

__all__ = ["RESUMABLE_CHANGES", "PretrainResult", "run_pretrain"]

#: Settings that may differ between a run and its ``--resume``.
RESUMABLE_CHANGES: frozenset[str] = frozenset(
    {
        "name",
        "trainer.max_steps",
        "trainer.max_time_s",
        "trainer.progress_bar",
        "trainer.checkpoint_every",
        "trainer.keep_checkpoints",
        "trainer.log_every",
        "trainer.threads",
        "trainer.devices",
        "trainer.num_nodes",
        "trainer.strategy",
        "trainer.accelerator",
        "data.num_workers",
    }
)
#: What a run writes in ``OUT`` (deleted by ``--overwrite``; nothing else in ``OUT`` is touched).
RUN_OUTPUTS: tuple[str, ...] = (
    "checkpoints",
    "logs",
    "config.yaml",
    "normalisation.json",
    "encoder.safetensors",
    "encoder.json",
    "summary.json",
)


def _run_outputs(config: PretrainConfig) -> tuple[str, ...]:
    """:data:`RUN_OUTPUTS` plus the files a plugin recipe writes."""
    from thinkingearth.pretrain.plugins import get_recipe, is_plugin

    if not is_plugin(config.recipe):
        return RUN_OUTPUTS
    return (*RUN_OUTPUTS, *get_recipe(config.recipe).outputs)


@dataclass(frozen=True)
class PretrainResult:
    """What a run produced.

    Attributes:
        out: The output folder.
        encoder: Path of the exported ``encoder.safetensors`` (``None`` on ranks other than 0).
        steps: Optimiser steps reached.
        seconds: Wall time of training (data generation included).
        final_loss: Last logged training loss.
        resumed_from: Step of the checkpoint the run resumed from (``None`` for a fresh run).
    """

    out: Path
    encoder: Path | None
    steps: int
    seconds: float
    final_loss: float | None
    resumed_from: int | None


def _rank() -> int:
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def _check_same_config(saved: Mapping[str, Any], config: PretrainConfig, path: Path) -> None:
    from thinkingearth.runs import check_same_config  # runs imports Lightning: lazily

    check_same_config(
        saved,
        config.to_dict(),
        resumable=RESUMABLE_CHANGES,
        opaque=("overrides", "kwargs"),
        where=f"{path.name}; the run's own config is OUT/config.yaml",
    )


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _export_encoder(encoder: Any, out: Path) -> Path:
    """Save the encoder as ``out/encoder.safetensors`` + ``.json``, each file renamed into place."""
    from thinkingearth.models import save

    staging = out / f".encoder-export-{uuid.uuid4().hex[:8]}"
    try:
        tensors = save(encoder, staging / "encoder")
        os.replace(tensors, out / "encoder.safetensors")
        os.replace(tensors.with_suffix(".json"), out / "encoder.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / "encoder.safetensors"


def _export_plugin(config: PretrainConfig, module: Any, out: Path) -> dict[str, Path]:
    """What a plugin recipe writes after training (rank 0), by name."""
    from thinkingearth.pretrain.plugins import get_recipe, is_plugin

    if not is_plugin(config.recipe):
        return {}
    export = get_recipe(config.recipe).export
    return dict(export(module, out)) if export is not None else {}


def _strategy(config: PretrainConfig) -> Any:
    t = config.trainer
    processes = t.devices * t.num_nodes
    name = t.strategy
    if name == "auto" and processes == 1:
        return "auto"
    from lightning.pytorch.strategies import DDPStrategy

    backend = "gloo" if t.accelerator == "cpu" else None
    return DDPStrategy(
        process_group_backend=backend,
        find_unused_parameters=True,  # e.g. the variable hypernetwork idles on optical batches
        start_method="spawn" if name == "ddp_spawn" else "popen",
    )


def run_pretrain(
    config: PretrainConfig,
    out: str | Path,
    *,
    max_steps: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    teacher: torch.nn.Module | None = None,
    callbacks: Sequence[Any] = (),
    log: Callable[[str], None] | None = print,
) -> PretrainResult:
    """Pretrain an encoder as ``config`` says and export it.

    Args:
        config: A validated configuration (:func:`~thinkingearth.pretrain.config.load_config`).
        out: Output folder (see the module docstring).
        max_steps: Override ``trainer.max_steps``.
        resume: Continue from the latest checkpoint in ``out/checkpoints``.
        overwrite: Replace a run in ``out``: its files (:data:`RUN_OUTPUTS`) are deleted once
            the configuration, data and model are built, before training starts.
        teacher: A frozen teacher module for distillation (instead of ``distill.teacher``).
        callbacks: Extra Lightning callbacks.
        log: Where progress lines go (``None`` = silent).

    Returns:
        A :class:`PretrainResult`.

    Raises:
        UserInputError: ``out`` holds a run and neither ``resume`` nor ``overwrite`` is given;
            both are; ``resume`` with no checkpoint, a corrupt one, or a different
            configuration; unwritable ``out``.
        Terminated: SIGTERM arrived (:mod:`thinkingearth.stopping`); a checkpoint of the step
            reached is saved when training had started.
    """
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger

    from thinkingearth.pretrain.callbacks import (
        ResumableCSVLogger,
        StepCheckpoint,
        truncate_metrics,
    )
    from thinkingearth.pretrain.checkpoint import (
        AtomicCheckpointIO,
        list_checkpoints,
        read_checkpoint,
    )
    from thinkingearth.pretrain.data import PretrainDataModule
    from thinkingearth.pretrain.modules import CHECKPOINT_FORMAT, WarmupCosine, build_module
    from thinkingearth.pretrain.teacher import Teacher, build_teacher
    from thinkingearth.pretrain.transforms import Normaliser
    from thinkingearth.progress import QuietLightning, progress_callbacks
    from thinkingearth.runs import StopOnSignal, stop_on_sigterm

    say = log or (lambda _message: None)
    if resume and overwrite:
        raise UserInputError("give --resume (continue the run in OUT) or --overwrite, not both")
    if max_steps is not None:
        if max_steps <= 0:
            raise UserInputError(f"--max-steps must be positive, got {max_steps}")
        config = dataclasses.replace(
            config, trainer=dataclasses.replace(config.trainer, max_steps=int(max_steps))
        )
    config = config.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file; expected a folder")
    check_writable_parent(out / "config.yaml")
    folder = out / "checkpoints"
    found = list_checkpoints(folder)
    resumed_from: int | None = None
    ckpt_path: Path | None = None
    saved: dict[str, Any] = {}
    if resume:
        if not found:
            raise UserInputError(
                f"--resume: no checkpoint in {folder}; start without --resume to begin a new run"
            )
        resumed_from, ckpt_path = found[-1]
        saved = read_checkpoint(ckpt_path)[CHECKPOINT_FORMAT]
        _check_same_config(saved.get("config", {}), config, ckpt_path)
        if resumed_from >= config.trainer.max_steps:
            raise UserInputError(
                f"--resume: the run already reached step {resumed_from} of max_steps "
                f"{config.trainer.max_steps}; raise --max-steps to train further"
            )
        say(f"[pretrain] resuming from {ckpt_path.name} (step {resumed_from})")
        planned = saved.get("config", {}).get("trainer", {}).get("max_steps")
        if planned is not None and planned != config.trainer.max_steps:
            # the module stretches the restored schedule (PretrainModule.on_train_start)
            change = f"[pretrain] max_steps {planned} -> {config.trainer.max_steps}"
            if config.optim.schedule == "cosine" and resumed_from >= planned:
                rewarm = WarmupCosine.rewarm_steps(
                    config.optim.warmup_steps, resumed_from, config.trainer.max_steps
                )
                change += (
                    f": the run had finished at its floor learning rate; it re-warms over "
                    f"{rewarm} steps, then follows the cosine planned for "
                    f"{config.trainer.max_steps} steps to its floor at step "
                    f"{config.trainer.max_steps}"
                    if rewarm
                    else ": the run had finished at its floor learning rate; with one step "
                    "left it stays there"
                )
            elif config.optim.schedule == "cosine":
                change += (
                    f": the learning rate decays from its step-{resumed_from} value to its floor "
                    f"at step {config.trainer.max_steps}"
                )
            say(change)
    elif not overwrite and (found or (out / "encoder.safetensors").exists()):
        what = f"checkpoints (latest {found[-1][1].name})" if found else "a pretrained encoder"
        raise UserInputError(
            f"{out} already holds {what}; pass --resume to continue that run, --overwrite to "
            "replace it, or choose another --out"
        )
    if config.trainer.threads is not None:
        torch.set_num_threads(config.trainer.threads)

    start = time.perf_counter()
    normaliser = Normaliser()
    datamodule = PretrainDataModule(config, normaliser)
    datamodule.build()
    if _rank() == 0:
        for note in datamodule.notes:  # what a real source found: files, patches, left-outs
            say(f"[pretrain] {note}")
    if saved.get("normalisation"):
        normaliser.stats.update(Normaliser(saved["normalisation"]).stats)
    wrapped_teacher: Teacher | None = None
    if config.distill is not None:
        module_teacher = teacher
        if module_teacher is None:
            if config.distill.teacher is None:
                raise UserInputError("distill needs a teacher: set distill.teacher in the config")
            module_teacher = build_teacher(config.distill.teacher)
        wrapped_teacher = Teacher(module_teacher, config.distill.teacher_bands)
    elif teacher is not None:
        raise UserInputError("a teacher was given but the config has no distill section")
    module = build_module(config, normaliser, wrapped_teacher)

    if _rank() == 0:
        if overwrite:
            for path in remove_outputs(out, _run_outputs(config)):
                say(f"[pretrain] --overwrite: deleted {path}")
        out.mkdir(parents=True, exist_ok=True)
        _write_text(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
        _write_text(out / "normalisation.json", normaliser.to_json())
        if resumed_from is not None:
            truncate_metrics(out / "logs" / "csv" / "metrics.csv", resumed_from)

    t = config.trainer
    loggers = [
        ResumableCSVLogger(out, name="logs", version="csv", flush_logs_every_n_steps=t.log_every),
        TensorBoardLogger(out, name="logs", version="tensorboard", default_hp_metric=False),
    ]
    # Lightning's banners, tips and warnings are noise here, from the Trainer's construction on;
    # progress comes from our callbacks (a bar on a terminal, else lines), on stderr.
    progress, bar = progress_callbacks(log if t.progress_bar else None, "[pretrain]")
    with QuietLightning():
        trainer = L.Trainer(
            max_steps=t.max_steps,
            max_epochs=-1,  # max_steps ends the run (the sampler yields exactly max_steps batches)
            max_time=timedelta(seconds=t.max_time_s) if t.max_time_s is not None else None,
            accelerator=t.accelerator,
            devices=t.devices,
            num_nodes=t.num_nodes,
            strategy=_strategy(config),
            precision=t.precision,
            callbacks=[
                StepCheckpoint(folder, t.checkpoint_every, t.keep_checkpoints),
                StopOnSignal(),
                *progress,
                *callbacks,
            ],
            plugins=[AtomicCheckpointIO()],
            logger=loggers,
            log_every_n_steps=t.log_every,
            enable_checkpointing=False,
            enable_progress_bar=bar,
            enable_model_summary=False,
            use_distributed_sampler=False,
            gradient_clip_val=config.optim.grad_clip or None,
            num_sanity_val_steps=0,
            default_root_dir=out,
        )
        with stop_on_sigterm(trainer, f"its checkpoint is in {folder}; run again with --resume"):
            trainer.fit(
                module,
                datamodule=datamodule,
                ckpt_path=str(ckpt_path) if ckpt_path is not None else None,
                weights_only=True,
            )
    seconds = time.perf_counter() - start
    # ddp_spawn returns the weights, not the loop state, to the main process: read the step of
    # the final checkpoint too.
    saved_steps = [step for step, _ in list_checkpoints(folder)]
    steps = max([int(trainer.global_step), *saved_steps])
    loss = trainer.callback_metrics.get("train/loss")
    final_loss = float(loss) if loss is not None else None
    encoder_path: Path | None = None
    if trainer.is_global_zero:
        encoder_path = _export_encoder(module.encoder, out)
        extra = _export_plugin(config, module, out)
        summary = {
            "config": config.name,
            "recipe": config.recipe,
            "steps": steps,
            "seconds": round(seconds, 2),
            "final_loss": final_loss,
            "resumed_from": resumed_from,
            "encoder": encoder_path.name,
            **{key: path.name for key, path in extra.items()},
        }
        data_summary = datamodule.summary()  # real sources: notes and no-data windows skipped
        if data_summary:
            summary["data"] = data_summary
            skipped = data_summary["nodata_windows_skipped"]
            if skipped:
                say(f"[pretrain] skipped {skipped} window(s) with no valid pixel (no data)")
        _write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        say(f"[pretrain] {steps} steps in {seconds:.1f} s; encoder: {encoder_path}")
        for key, path in extra.items():
            say(f"[pretrain] {key}: {path}")
    return PretrainResult(
        out=out,
        encoder=encoder_path,
        steps=steps,
        seconds=seconds,
        final_loss=final_loss,
        resumed_from=resumed_from,
    )
