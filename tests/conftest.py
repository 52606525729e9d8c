"""Fixtures shared by several test modules (none is autouse: a module opts in)."""
from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a whole module, then the old count back: on a shared 2-core machine
    one thread avoids OpenMP oversubscription (and keeps timings stable). Opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
