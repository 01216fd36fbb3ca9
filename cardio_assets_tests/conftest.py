"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """One torch thread: on 2 shared cores, oversubscribed threads are far slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
