"""Answer the DAG's `human_approval` task as a reviewer would through Airflow's REST API: this calls the
api-server's own PATCH .../hitlDetails route implementation against the same metadata DB.

Usage (with the Airflow env of the run): python hitl_respond.py Approve|Reject USER COMMENT
"""

from __future__ import annotations

import sys
import time

from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
from airflow.models.taskinstance import TaskInstance
from airflow.utils.session import create_session
from airflow.utils.state import TaskInstanceState
from sqlalchemy import select

DAG_ID, TASK_ID = "fusionrec_retrain", "human_approval"


def wait_for_request(timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with create_session() as session:
            ti = session.scalar(
                select(TaskInstance).where(
                    TaskInstance.dag_id == DAG_ID,
                    TaskInstance.task_id == TASK_ID,
                    TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
                )
            )
            if ti is not None:
                return ti.run_id
        time.sleep(1)
    sys.exit("no approval request appeared")


def main() -> None:
    choice, user, comment = sys.argv[1:4]
    run_id = wait_for_request()
    with create_session() as session:
        update_hitl_detail(
            dag_id=DAG_ID,
            dag_run_id=run_id,
            task_id=TASK_ID,
            update_hitl_detail_payload=UpdateHITLDetailPayload(
                chosen_options=[choice], params_input={"comment": comment}
            ),
            user=SimpleAuthManagerUser(username=user, role="admin"),
            session=session,
        )
    print(f"answered {choice} for {run_id}")


if __name__ == "__main__":
    main()
