"""The web UI as a user meets it: `dagster dev` on the smoke run's instance and lake, driven
through GraphQL (as a script or another service would) and in headless Chromium (as a person).

Needs Debian's `chromium` (`make test` installs it where apt-get can). Screenshots are kept in
$CARDIO_TEST_ARTIFACTS (default `test_artifacts/`) / ui.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from dagster import DagsterRunStatus
from dagster_graphql import DagsterGraphQLClient

from cardio_assets.cohort.cells import CELL_KEYS
from cardio_assets.definitions import defs

REPO = Path(__file__).resolve().parents[1]
LOCATION = "cardio_assets"  # workspace.yaml's location name
ARTIFACTS = Path(os.environ.get("CARDIO_TEST_ARTIFACTS", REPO / "test_artifacts")) / "ui"
CELL = CELL_KEYS[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(base: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body["errors"]
    return body["data"]


def _location_loaded(base: str) -> bool:
    data = _graphql(base, "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }")
    entries = data["workspaceOrError"]["locationEntries"]
    return any(e["name"] == LOCATION and e["loadStatus"] == "LOADED" for e in entries)


@pytest.fixture(scope="module")
def ui(smoke_run):
    """`dagster dev` (webserver + daemon) serving the smoke run, as `make ui` starts it."""
    settings, instance, _ = smoke_run
    port = _free_port()
    env = dict(os.environ, DAGSTER_HOME=instance.root_directory, CARDIO_PROFILE="smoke", CARDIO_DATA_LAKE=settings.data_lake,
               CARDIO_LAKE_CACHE=settings.lake_cache, CARDIO_LAKE_STORAGE_OPTIONS=settings.lake_storage_options, CARDIO_WORKERS="2")
    log = open(instance.root_directory + "/dagster_dev.log", "w")
    dagster = str(Path(sys.executable).with_name("dagster"))
    process = subprocess.Popen([dagster, "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)], cwd=REPO, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, f"dagster dev exited: see {log.name}"
            try:
                if _location_loaded(base):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"dagster dev did not serve the code location within 300 s: see {log.name}"
            time.sleep(2)
        yield base, instance
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()


STALE_AND_CHECKS = """
query ($key: AssetKeyInput!, $partition: String) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      staleStatus(partition: $partition)
      staleCauses(partition: $partition) { reason }
      dataVersion(partition: $partition)
      assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization { runId status } } } }
    }
  }
}"""


def _asset(base: str, key: str, partition: str | None = None) -> dict:
    return _graphql(base, STALE_AND_CHECKS, {"key": {"path": [key]}, "partition": partition})["assetNodeOrError"]


def test_graphql_launches_one_cell_reads_its_checks_and_nothing_downstream_goes_stale(ui):
    base, _ = ui
    before = _asset(base, "frames", CELL)
    assert _asset(base, "diffusion_backbone")["staleStatus"] == "FRESH"

    client = DagsterGraphQLClient("127.0.0.1", port_number=int(base.rsplit(":", 1)[1]))
    run_id = client.submit_job_execution("frames_job", tags={"dagster/partition": CELL})
    deadline = time.monotonic() + 300
    while (status := client.get_run_status(run_id)) not in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
        assert time.monotonic() < deadline, f"run {run_id} still {status} after 300 s"
        time.sleep(2)
    assert status == DagsterRunStatus.SUCCESS

    after = _asset(base, "frames", CELL)
    checks = {c["name"]: c["executionForLatestMaterialization"] for c in after["assetChecksOrError"]["checks"]}
    assert checks["frames_valid"] == {"runId": run_id, "status": "SUCCEEDED"}
    # the same cohort gives the same frames: same content-hash data version, so the generator
    # and everything after it stay fresh instead of "upstream data changed"
    assert after["dataVersion"] == before["dataVersion"]
    for key in ("diffusion_backbone", "controlnet", "attribute_predictors"):
        node = _asset(base, key)
        assert node["staleStatus"] == "FRESH", (key, node["staleCauses"])


@pytest.fixture(scope="module")
def browser():
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("the UI tests need Chromium: `apt-get install chromium` (Debian), or set CHROMIUM to its executable")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def _open(browser, url: str, shot: str):
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(url, wait_until="networkidle", timeout=120_000)
    skip = page.get_by_role("button", name="Skip")  # Dagster's one-time community dialog
    if skip.count():
        skip.click()
    return page


def _screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_the_asset_graph_shows_every_asset(ui, browser):
    base, _ = ui
    groups: dict[str, list[str]] = {}
    for spec in defs.resolve_all_asset_specs():
        groups.setdefault(spec.group_name, []).append(spec.key.to_user_string())
    for group, keys in sorted(groups.items()):
        page = _open(browser, f"{base}/locations/{LOCATION}/asset-groups/{group}", f"graph_{group}")
        for key in keys:
            page.get_by_text(key, exact=True).first.wait_for(state="visible")
        _screenshot(page, f"graph_{group}")
        page.close()


def test_frames_shows_36_materialized_partitions_and_its_check(ui, browser):
    base, _ = ui
    page = _open(browser, f"{base}/assets/frames?view=partitions", "frames_partitions")
    page.get_by_text("Materialized (36)").wait_for(state="visible")
    _screenshot(page, "frames_partitions")
    page.goto(f"{base}/assets/frames?view=checks", wait_until="networkidle")
    page.get_by_text("frames_valid").first.wait_for(state="visible")
    page.get_by_text("Passed").first.wait_for(state="visible")
    _screenshot(page, "frames_checks")
    page.close()


def test_the_fairness_report_shows_table_2_inline(ui, browser):
    base, _ = ui
    page = _open(browser, f"{base}/assets/fairness_report", "fairness_report")
    table = page.locator("table").filter(has_text="Overall").filter(has_text="Obese").first
    table.wait_for(state="visible")
    header = table.inner_text()
    for column in ("group", "prevalence", "real", "synth_only"):
        assert column in header
    _screenshot(page, "fairness_report")
    page.close()
