"""Fixtures shared by several test files."""

import pytest
import torch
from dagster import DagsterInstance

from cardio_assets.defs.resources import PipelineSettings
from cardio_assets.run import materialize_all


@pytest.fixture
def one_torch_thread():
    """One torch thread: on 2 shared cores, oversubscribed threads are far slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """The whole graph on the smoke profile, once per test session, in a Dagster instance on disk
    (`<home>`) so that the web UI tests can serve the same runs, checks and lake."""
    lake = tmp_path_factory.mktemp("lake")
    home = tmp_path_factory.mktemp("dagster_home")
    settings = PipelineSettings(profile="smoke", data_lake=str(lake), workers=2)
    instance = DagsterInstance.local_temp(tempdir=str(home))
    summary = materialize_all(settings, instance, log=lambda _: None)
    return settings, instance, summary
