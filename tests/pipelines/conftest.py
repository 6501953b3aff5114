"""Fixtures for the orchestration tests: the test-only stages, Prefect's test harness, one local Ray."""

from __future__ import annotations

import os

import pytest

from tests.pipelines.fake_stage import CONFIG_YAML, REGISTRATION

# The fake stages register the way out-of-tree stages do; set before any flow or worker starts.
os.environ["FOURM_EXTRA_STAGES"] = REGISTRATION


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API (SQLite) for every in-process flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One real ``prefect server start`` (SQLite, loopback) for every test of the session that needs a server,
    workers and deployments (~20 s to start). Its scheduler loops every 2 s so that schedules fire in tests."""
    from tests.servers import kill, start_prefect_server

    server = start_prefect_server(tmp_path_factory.mktemp("prefect-server"),
                                  {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"})
    yield server
    kill(server.proc)


@pytest.fixture(scope="session")
def ray_local(ray_session):
    """The session's one local Ray (tests/conftest.py); build-dataset reuses it instead of starting its own."""
    yield


@pytest.fixture
def fake_dataset(tmp_path):
    """A dataset config running the fake stages: 12 samples in 3 shards of 4."""
    path = tmp_path / "fk.yaml"
    path.write_text(CONFIG_YAML.format(name="fk"))
    return str(path)
