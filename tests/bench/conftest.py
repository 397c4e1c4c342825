"""One intra-op thread for the benchmark tests: their tensors are tiny, and on a shared 2-core
machine two threads per op spend more time waiting for each other than computing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
