"""Fixtures shared by several test files."""

import json

import pytest
import torch
from dagster import DagsterInstance

from cardio_assets.defs.resources import PipelineSettings
from cardio_assets.run import materialize_all
from cardio_assets_tests.postgres import instance_yaml, local_postgres
from cardio_assets_tests.s3_server import local_s3


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
def s3_options():
    """Storage options reaching the bucket `cardio-lake` on a local S3 server (cardio_assets_tests/s3_server.py)."""
    with local_s3("cardio-lake") as options:
        yield options


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, postgres_url, s3_options):
    """The whole graph on the smoke profile, once per test session, in a Dagster instance whose
    runs, events and schedules live in PostgreSQL, as on a cluster (`make demo` keeps them in
    SQLite files), and whose data lake is on object storage (an S3 bucket on a local server), worked
    on through a local copy (`summary.data_lake`). Its home (`<home>/dagster.yaml`) lets the web UI
    tests serve the same runs, checks and lake."""
    copy = tmp_path_factory.mktemp("lake_copy")
    home = tmp_path_factory.mktemp("dagster_home")
    (home / "dagster.yaml").write_text(instance_yaml(postgres_url))
    settings = PipelineSettings(profile="smoke", data_lake="s3://cardio-lake/smoke", lake_cache=str(copy),
                                lake_storage_options=json.dumps(s3_options), workers=2)
    instance = DagsterInstance.from_config(str(home))
    summary = materialize_all(settings, instance, log=lambda _: None)
    return settings, instance, summary
