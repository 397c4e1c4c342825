"""Cost meters of a benchmark run: parameters, peak memory, training time, inference speed.

* **parameters**: every parameter of the task module (encoder or baseline plus head), and the
  trainable ones under the protocol;
* **peak memory** (:class:`PeakMemory`): on CPU, the peak resident set size of the process
  above its level when the run started (after freed heap is handed back to the OS, so memory
  an earlier run left mapped does not hide this run's growth), sampled every 10 ms from ``/proc/self/statm`` (Linux;
  elsewhere the growth of ``ru_maxrss``, which only moves when the process sets a new record).
  ``tracemalloc`` is not used: it does not see PyTorch's own allocator. On a GPU, the peak of
  ``torch.cuda.max_memory_allocated`` during the run;
* **train seconds**: wall-clock time of ``Trainer.fit``;
* **inference images/s** (:func:`inference_throughput`): samples through the task module's
  forward pass per second over the test split, in eval mode without gradients, after one
  warm-up batch, with any feature cache switched off (a change-detection sample, three
  acquisitions, counts as one).
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from thinkingearth.resources import release_freed_memory

__all__ = ["PeakMemory", "count_parameters", "inference_throughput", "to_device"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = "/proc/self/statm"


def _rss_bytes() -> int | None:
    try:
        with open(_STATM, encoding="ascii") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _maxrss_bytes() -> int:
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(value) if sys.platform == "darwin" else int(value) * 1024


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """``(all, trainable)`` parameter counts (shared parameters counted once)."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in module.parameters()}
    total = sum(p.numel() for p in seen.values())
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return total, trainable


class PeakMemory:
    """Measure the peak memory of a block (see the module docstring for what is measured).

    Args:
        device: ``"cpu"`` or a CUDA device; CUDA measures allocated GPU memory.
        interval: Sampling period in seconds (CPU).

    Attributes:
        peak_mb: Peak above the starting level, MiB, after the block.
        method: What was measured (``"rss"``, ``"maxrss"`` or ``"cuda"``).
    """

    def __init__(self, device: str | torch.device = "cpu", interval: float = 0.01) -> None:
        """Choose the method for the device."""
        self.device = torch.device(device)
        self.interval = interval
        self.peak_mb = 0.0
        self.method = "cuda" if self.device.type == "cuda" else "rss"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0
        self._peak = 0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            rss = _rss_bytes()
            if rss is not None and rss > self._peak:
                self._peak = rss

    def __enter__(self) -> PeakMemory:
        """Start measuring."""
        if self.method == "cuda":
            torch.cuda.synchronize(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        release_freed_memory()  # else memory kept from an earlier run hides this run's growth
        rss = _rss_bytes()
        if rss is None:
            self.method = "maxrss"
            self._start = _maxrss_bytes()
            return self
        self._start = self._peak = rss
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop measuring and set :attr:`peak_mb`."""
        if self.method == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method == "maxrss":
            peak = _maxrss_bytes()
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._peak, _rss_bytes() or 0)
        self.peak_mb = max(0.0, (peak - self._start) / 2**20)


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move the tensors of a batch to ``device``."""
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def inference_throughput(
    module: nn.Module, batches: Iterable[Mapping[str, Any]], device: str | torch.device = "cpu"
) -> float:
    """Samples per second of ``module(batch)`` in eval mode without gradients.

    The first batch runs once untimed (warm-up), then every batch is timed, the first included.
    Returns NaN when there is no batch.
    """
    device = torch.device(device)
    was_training = module.training
    module.eval()
    seconds, count = 0.0, 0
    try:
        with torch.no_grad():
            for i, raw in enumerate(batches):
                batch = to_device(raw, device)
                if i == 0:
                    module(batch)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                start = time.perf_counter()
                module(batch)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds += time.perf_counter() - start
                count += int(batch["image"].shape[0])
    finally:
        module.train(was_training)
    return count / seconds if count and seconds > 0 else float("nan")
