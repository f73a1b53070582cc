from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One intra-op thread per test module: on a shared 2-core machine, competing threads make each
    forward several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
