"""A reviewer approves the challenger in the Airflow UI, in a real browser.

Airflow's api-server, scheduler (LocalExecutor) and dag-processor run on loopback against PostgreSQL; the DAG
is triggered without auto-approve; headless Chromium (Debian's, driven by Playwright) signs in through the
login form, opens the run's *Required Action* page of `human_approval`, writes a comment and presses
*Approve*. The run then finishes and the champion alias and the serving store must show the approved version,
recorded as approved by the signed-in user with that comment.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import POSTGRES_HOST, POSTGRES_PORT, reachable
from tests.integration.airflow_stack import AirflowStack, airflow_stack, wait_for
from tests.integration.test_dag_e2e import _fusionrec

pytestmark = [pytest.mark.slow, pytest.mark.services]
CHROMIUM = Path("/usr/bin/chromium")
DAG_ID, TASK_ID = "fusionrec_retrain", "human_approval"
# The cheapest real run: one model, one trial, no fusion (the approval path is what is under test).
CONF = {"dataset": "ml-100k", "models": ["popularity"], "n_trials": 1, "auto_approve": False, "fusions": []}
REVIEWER, COMMENT = "reviewer", "approved in the browser: metrics look right"


def _run_url(run_id: str) -> str:
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}"


def _trigger(stack: AirflowStack, api: httpx.Client) -> str:
    """Wait for the dag-processor to parse the DAG, unpause it and trigger one run; returns its run id."""
    wait_for("the DAG to be parsed", lambda: stack.check_alive() or _found(api), timeout=180)
    api.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": False}).raise_for_status()
    run_id = f"browser-approval-{int(time.time())}"
    answer = api.post(
        f"/api/v2/dags/{DAG_ID}/dagRuns", json={"dag_run_id": run_id, "logical_date": None, "conf": CONF}
    )
    assert answer.status_code == 200, answer.text
    return run_id


def _found(api: httpx.Client) -> bool:
    return api.get(f"/api/v2/dags/{DAG_ID}").status_code == 200


def _task_states(api: httpx.Client, run_id: str) -> dict[str, str | None]:
    answer = api.get(f"{_run_url(run_id)}/taskInstances")
    answer.raise_for_status()
    return {ti["task_id"]: ti["state"] for ti in answer.json()["task_instances"]}


def _wait_for_run(stack: AirflowStack, api: httpx.Client, run_id: str, done, what: str, timeout: float):
    """Poll the run until ``done(run_state, task_states)``; a failed run or a dead service fails at once."""

    def check() -> bool:
        stack.check_alive()
        try:
            state = api.get(_run_url(run_id)).json()["state"]
            tasks = _task_states(api, run_id)
        except httpx.HTTPError:  # a busy api-server: ask again on the next poll
            return False
        assert state != "failed", f"run {run_id} failed: {tasks}"
        return done(state, tasks)

    wait_for(what, check, timeout=timeout, every=3)


def _approve_in_browser(stack: AirflowStack, run_id: str, screenshot: Path) -> None:
    """Sign in through the UI, open the Required Action page of the approval task, comment, Approve."""
    from playwright.sync_api import expect, sync_playwright

    page_url = f"{stack.url}/dags/{DAG_ID}/runs/{run_id}/tasks/{TASK_ID}/required_actions"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        # Tall enough that the request's metrics, the form and its buttons are all in the screenshot.
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        try:
            page.goto(page_url)  # not signed in yet: the SimpleAuthManager's login form, next=page_url
            page.get_by_label("Username").fill(stack.user)
            page.get_by_label("Password").fill(stack.password)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"**/tasks/{TASK_ID}/required_actions")
            page.locator("input[name=element_comment]").fill(COMMENT)
            approve = page.get_by_test_id("hitl-option-Approve")
            expect(approve).to_be_enabled()  # the options stay disabled until the required comment is set
            approve.scroll_into_view_if_needed()
            page.screenshot(path=str(screenshot))
            approve.click()
            # The page then shows "Response received at <time> from <user>".
            expect(page.get_by_text(f"from {stack.user}")).to_be_visible(timeout=30_000)
        except Exception:
            failure = screenshot.with_name("browser-failure.png")
            page.screenshot(path=str(failure))
            print(f"browser at {page.url}; screenshot {failure}")
            raise
        finally:
            browser.close()


def test_reviewer_approves_in_the_airflow_ui(tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing (Debian: apt-get install chromium)")
    if not reachable(POSTGRES_HOST, POSTGRES_PORT):
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_HOST}:{POSTGRES_PORT}")
    started = time.monotonic()

    def lap(what: str) -> None:
        print(f"[{time.monotonic() - started:5.0f} s] {what}")

    screenshot = tmp_path / "approval-form.png"
    with airflow_stack(tmp_path / "home", user=REVIEWER) as stack, stack.client() as api:
        lap("api-server, scheduler and dag-processor up")
        run_id = _trigger(stack, api)
        lap(f"triggered {run_id}")
        _wait_for_run(
            stack,
            api,
            run_id,
            lambda _, tasks: tasks.get(TASK_ID) == "awaiting_input",
            f"{TASK_ID} to await input",
            timeout=900,
        )
        lap(f"{TASK_ID} awaits input")
        _approve_in_browser(stack, run_id, screenshot)
        lap("approved in the browser")
        _wait_for_run(
            stack, api, run_id, lambda state, _: state == "success", "the run to succeed", timeout=600
        )
        lap("run succeeded")
        status = _fusionrec(stack.env, "status", "--json")
    lap("stack stopped")
    assert screenshot.stat().st_size > 10_000
    champion = status["champion"]
    assert champion is not None and champion["airflow_run_id"] == run_id, champion
    approval = champion["approval"]
    assert approval["status"] == "approved" and approval["auto"] == "false"
    assert approval["by"] == REVIEWER and approval["comment"] == COMMENT
    assert status["serving"]["live_version"].startswith(f"fusionrec-v{champion['version']}-")
