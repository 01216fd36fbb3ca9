"""Fixtures shared by several test files."""

import pytest
import torch
from dagster import DagsterInstance

from cardio_assets.defs.resources import PipelineSettings
from cardio_assets.run import materialize_all
from cardio_assets_tests.postgres import instance_yaml, local_postgres


@pytest.fixture
def one_torch_thread():
    """One torch thread: on 2 shared cores, oversubscribed threads are far slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def postgres_url():
    """A PostgreSQL server of this test session (cardio_assets_tests/postgres.py)."""
    with local_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, postgres_url):
    """The whole graph on the smoke profile, once per test session, in a Dagster instance whose
    runs, events and schedules live in PostgreSQL, as on a cluster (`make demo` keeps them in
    SQLite files). Its home (`<home>/dagster.yaml`) lets the web UI tests serve the same runs,
    checks and lake."""
    lake = tmp_path_factory.mktemp("lake")
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text(instance_yaml(postgres_url))
    settings = PipelineSettings(profile="smoke", data_lake=str(lake), workers=2)
    instance = DagsterInstance.from_config(str(home))
    summary = materialize_all(settings, instance, log=lambda _: None)
    return settings, instance, summary
