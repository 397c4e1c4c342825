"""Evaluation without training in the benchmark: the ``zero-shot`` protocol and retrieval.

The ``zero-shot`` protocol scores a vision-language model (:mod:`thinkingearth.vl`) with no
training at all, on the test split only:

* **classification** and **multilabel** tasks of any suite: the task's class names go through
  the prompt ensemble (:class:`~thinkingearth.vl.zeroshot.ZeroShotClassifier`, the default
  templates); each test image's pooled embedding is scored against them (softmax logits for
  single-label, ``sigmoid(logit + bias)`` per label for multi-label) and the usual metrics of
  :func:`thinkingearth.tasks.metrics.classification_metrics` are reported under the usual keys
  (``oa``, ``f1_macro``, ``map``, ...), so zero-shot rows sit beside ``linear-probe`` rows of the
  same encoder. Multi-label ``oa``/F1 threshold those probabilities at 0.5 (a CLIP-trained model
  has no calibrated bias); ``map`` is threshold-free;
* **retrieval** tasks (suite ``vl-synthetic``): Recall@K, the share of queries whose match is
  among the K most similar gallery items (cosine similarity of the embeddings), for K in
  :data:`RECALL_AT`. Keys (:func:`retrieval_metrics`):

  - ``r@K/t2i``: text → image, each test Sample's ``caption`` finds its image among all test
    images; ``r@K/i2t``: image → text, each image finds its caption among all captions. Samples
    with the very same caption count as matches of each other;
  - ``r@K/<q>→<g>``: cross-sensor, a Sample of sensor ``q`` finds its twin (the same scene seen
    by sensor ``g``; :attr:`~thinkingearth.bench.suites.TaskSpec.gallery`) among all gallery
    Samples, e.g. ``r@1/s1→s2`` and the reverse ``r@1/s2→s1`` (short sensor names:
    :data:`SHORT_SENSOR_NAMES`).

The model named ``chance`` (:mod:`thinkingearth.bench.models`) runs the same protocol with
scores drawn at random (uniform class scores; retrieval: random Gaussian embeddings, so a
uniformly random ranking), seeded per task and seed: the chance level of every metric, measured
the same way. Linear probes of the same encoder are the suite's ``linear-probe`` rows.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from thinkingearth.errors import UserInputError

if TYPE_CHECKING:
    from thinkingearth.bench.models import ModelSpec
    from thinkingearth.bench.suites import Suite, TaskSpec

__all__ = [
    "EVALUATION_PROTOCOLS",
    "RECALL_AT",
    "SHORT_SENSOR_NAMES",
    "ZERO_SHOT",
    "ZERO_SHOT_KINDS",
    "evaluate_run",
    "evaluation_skip_reason",
    "recall_at_k",
    "retrieval_keys",
    "retrieval_metrics",
]

ZERO_SHOT = "zero-shot"
#: Protocols that train nothing (the runner evaluates them here).
EVALUATION_PROTOCOLS: tuple[str, ...] = (ZERO_SHOT,)
#: Task kinds the zero-shot protocol scores.
ZERO_SHOT_KINDS: tuple[str, ...] = ("classification", "multilabel", "retrieval")
#: The K of Recall@K.
RECALL_AT: tuple[int, ...] = (1, 5, 10)
#: Short sensor names in cross-sensor retrieval keys (other sensors keep their full name).
SHORT_SENSOR_NAMES: Mapping[str, str] = {
    "sentinel-1-grd": "s1",
    "sentinel-1-slc": "s1slc",
    "sentinel-2-l2a": "s2",
    "sentinel-2-l1c": "s2l1c",
    "sentinel-3-olci": "s3",
    "sentinel-5p": "s5p",
    "copernicus-dem": "dem",
}


def _short(sensor: str) -> str:
    from thinkingearth.sensors import get_sensor

    name = get_sensor(sensor).name
    return SHORT_SENSOR_NAMES.get(name, name)


def retrieval_keys(direction: str, ks: Sequence[int] = RECALL_AT) -> list[str]:
    """``["r@1/<direction>", "r@5/<direction>", ...]``."""
    return [f"r@{k}/{direction}" for k in ks]


def recall_at_k(
    similarity: Tensor, positives: Tensor, ks: Sequence[int] = RECALL_AT
) -> dict[int, float]:
    """Recall@K of queries (rows) against a gallery (columns).

    Args:
        similarity: ``[Q, G]`` scores, higher = more similar.
        positives: bool ``[Q, G]``, the gallery items that match each query (at least one each).
        ks: The K values.

    Returns:
        ``{K: share of queries with a match among their K highest-scored items}``. A query's
        rank is the number of gallery items scored strictly above its best match (ties favour
        the match).
    """
    if similarity.shape != positives.shape:
        raise ValueError(
            f"similarity {tuple(similarity.shape)} vs positives {tuple(positives.shape)}"
        )
    if not bool(positives.any(dim=1).all()):
        raise ValueError("every query needs at least one matching gallery item")
    sim = similarity.float()
    best = torch.where(positives, sim, torch.full_like(sim, -math.inf)).max(dim=1).values
    rank = (sim > best[:, None]).sum(dim=1)
    return {int(k): float((rank < k).double().mean()) for k in ks}


def retrieval_metrics(
    queries: Tensor, gallery: Tensor, positives: Tensor, direction: str, reverse: str | None
) -> dict[str, float]:
    """Recall@K both ways between two sets of embeddings (:data:`RECALL_AT`).

    Args:
        queries: ``[Q, D]`` (normalised) query embeddings.
        gallery: ``[G, D]`` gallery embeddings.
        positives: bool ``[Q, G]`` matches.
        direction: Key suffix of queries → gallery (``t2i``, ``s1→s2``).
        reverse: Key suffix of gallery → queries (``i2t``, ``s2→s1``), or ``None`` to skip it.
    """
    similarity = queries.float() @ gallery.float().T
    out = {f"r@{k}/{direction}": v for k, v in recall_at_k(similarity, positives).items()}
    if reverse is not None:
        back = recall_at_k(similarity.T, positives.T)
        out.update({f"r@{k}/{reverse}": v for k, v in back.items()})
    return out


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------


def evaluation_skip_reason(task: TaskSpec, spec: ModelSpec, protocol: str) -> str | None:
    """Why a model cannot run a protocol on a task (``None``: it can)."""
    if protocol in EVALUATION_PROTOCOLS:
        if task.kind not in ZERO_SHOT_KINDS:
            return (
                f"{protocol} scores {', '.join(ZERO_SHOT_KINDS)} tasks; {task.name} is {task.kind}"
            )
        if spec.kind != "chance" and not spec.is_vl:
            return (
                f"{protocol} needs a vision-language model (a VL pretrain run's folder or "
                f"vl_model.safetensors, or a VL pretrain config name); {spec.name} is not one"
            )
        if task.kind != "retrieval" and not task.class_names:
            return f"{protocol} needs class names; task {task.name} has none"
        return None
    if task.kind == "retrieval":
        return f"retrieval is evaluated without training ({', '.join(EVALUATION_PROTOCOLS)})"
    if spec.kind == "chance":
        return f"chance scores only the evaluation protocols ({', '.join(EVALUATION_PROTOCOLS)})"
    return None


def _samples(task: TaskSpec, loader: Callable[[str], Any]) -> list[dict[str, Any]]:
    dataset = loader("test")
    return [dict(dataset[i]) for i in range(len(dataset))]


def _timed_encode(
    model: Any, samples: Sequence[Mapping[str, Any]], batch: int
) -> tuple[Tensor, float]:
    start = time.perf_counter()
    with torch.no_grad():
        embeddings = model.encode_samples(samples, batch_size=batch)
    return embeddings.float().cpu(), time.perf_counter() - start


def _classification(
    task: TaskSpec, samples: list[dict[str, Any]], scores: Tensor, multilabel: bool
) -> dict[str, float]:
    from thinkingearth.tasks.metrics import classification_metrics, to_dict

    k = task.num_classes
    metrics = classification_metrics(k, multilabel)
    target = torch.stack([torch.as_tensor(s["label"]).long() for s in samples])
    if multilabel and (target.ndim != 2 or target.shape[1] != k):
        raise UserInputError(f"task {task.name}: expected multi-hot labels [N, {k}]")
    metrics.update(scores, target)
    return to_dict(metrics.compute(), task.class_names or None)


def evaluate_run(
    key: Any,
    task: TaskSpec,
    spec: ModelSpec,
    suite: Suite,
    device: torch.device,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Score one evaluation run; returns the row's fields after the run key (metrics included).

    Raises:
        UserInputError: Samples without what the task needs (labels, captions, twins).
    """
    from thinkingearth.bench.meters import PeakMemory, count_parameters
    from thinkingearth.data.transforms import Normaliser

    chance = spec.kind == "chance"
    # Chance draws its own scores per task and seed (the task in the seed: independent draws).
    generator = torch.Generator().manual_seed(zlib.crc32(f"{task.name}:{int(key.seed)}".encode()))
    samples = _samples(task, task.load)
    n = len(samples)
    if n == 0:
        raise UserInputError(f"task {task.name}: the test split is empty")
    first = samples[0]
    row: dict[str, Any] = {
        "normalisation": Normaliser.mode(first["sensor"], tuple(first["bands"])),
        "train_seconds": 0.0,
        "train_samples": 0,
        "steps": 0,
        "batch_size": suite.eval_batch_size,
        "test_samples": n,
        "device": str(device),
    }
    model = None if chance else spec.vl_model(int(key.seed)).to(device).eval()
    seconds = 0.0
    with PeakMemory(device) as memory:
        if task.kind == "retrieval":
            if task.gallery is None:
                captions = [s.get("caption") for s in samples]
                if any(not isinstance(c, str) or not c for c in captions):
                    raise UserInputError(
                        f"task {task.name}: text retrieval needs a caption per Sample"
                    )
                same = torch.tensor(
                    [[a == b for b in captions] for a in captions], dtype=torch.bool
                )
                if chance:
                    texts = F.normalize(torch.randn(n, 8, generator=generator), dim=-1)
                    images = F.normalize(torch.randn(n, 8, generator=generator), dim=-1)
                else:
                    images, seconds = _timed_encode(model, samples, suite.eval_batch_size)
                    start = time.perf_counter()
                    with torch.no_grad():
                        texts = torch.cat(
                            [
                                model.encode_text(captions[i : i + suite.eval_batch_size])
                                .float()
                                .cpu()
                                for i in range(0, n, suite.eval_batch_size)
                            ]
                        )
                    seconds += time.perf_counter() - start
                metrics = retrieval_metrics(texts, images, same, "t2i", "i2t")
            else:
                twins = _samples(task, task.gallery)
                if len(twins) != n:
                    raise UserInputError(
                        f"task {task.name}: {n} queries but {len(twins)} gallery twins"
                    )
                q, g = _short(first["sensor"]), _short(twins[0]["sensor"])
                if chance:
                    queries = F.normalize(torch.randn(n, 8, generator=generator), dim=-1)
                    gallery = F.normalize(torch.randn(n, 8, generator=generator), dim=-1)
                else:
                    queries, seconds = _timed_encode(model, samples, suite.eval_batch_size)
                    gallery, more = _timed_encode(model, twins, suite.eval_batch_size)
                    seconds += more
                metrics = retrieval_metrics(
                    queries, gallery, torch.eye(n, dtype=torch.bool), f"{q}→{g}", f"{g}→{q}"
                )
        else:
            multilabel = task.kind == "multilabel"
            k = task.num_classes
            if chance:
                scores = torch.rand(n, k, generator=generator)
            else:
                from thinkingearth.vl.zeroshot import ZeroShotClassifier

                head = ZeroShotClassifier(model, task.class_names).to(device)
                images, seconds = _timed_encode(model, samples, suite.eval_batch_size)
                with torch.no_grad():
                    logits = head.logits(images.to(device))
                    scores = (
                        (head.probabilities(logits, multilabel=True) if multilabel else logits)
                        .float()
                        .cpu()
                    )
            metrics = _classification(task, samples, scores, multilabel)
    params = count_parameters(model) if model is not None else (0, 0)
    row.update(
        status="ok",
        reason="",
        primary=metrics.get(task.primary, math.nan),
        inference_ips=n / seconds if seconds > 0 else math.nan,
        params=params[0],
        trainable_params=0,
        peak_mem_mb=memory.peak_mb,
        memory_method=memory.method,
    )
    row.update(metrics)
    if task.primary not in metrics:
        raise UserInputError(
            f"task {task.name}: its primary metric {task.primary!r} is not among the zero-shot "
            f"metrics ({', '.join(metrics)})"
        )
    return row
