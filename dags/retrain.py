"""FusionRec retrain DAG: thin Airflow wiring around the stage functions in ``pipelines/``.

Every task builds one ``RunConfig`` from the DAG params and the Airflow run id, calls one stage and returns
the stage result's ``to_dict()`` (small: paths, counts, metrics) for XCom. No business logic lives here.

Heavy libraries (pipelines.*, TensorFlow, MLflow, Feast, GX) are imported inside task bodies only: the
dag-processor re-parses this file constantly and must stay fast.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import Param, TriggerRule, chain, dag, task

DAG_ID = "fusionrec_retrain"
AUTO_APPROVE_TASK = "auto_approve"
HUMAN_APPROVAL_TASK = "human_approval"
UI_APPROVER = "airflow-ui"  # recorded when the HITL response carries no user name

DOC_MD = """
### FusionRec retrain

`ingest → validate → version_data → split → build_features → models → train_model (one per model, in
parallel) → collect_training → fuse_and_select → evaluate → register → compare → approval gate → promote`

* **ingest** – bundled dataset (`dataset` param) or your own files (`interactions_file`, wins when set) into
  canonical parquet tables.
* **validate** – Great Expectations checks; failing rows go to quarantine, the run fails above the reject limit.
* **version_data** – DVC snapshot of the validated data.
* **split / build_features** – evaluation split and the Feast feature repo (offline + online store).
* **models** – checks the `models` param and readies the Optuna and MLflow stores for parallel training.
* **train_model** – one task instance per model (labelled with its name; dynamic task mapping): tunes it with
  Optuna (`n_trials`, or its `model_trials` entry) and fits it, in its own MLflow run. At most
  `FUSIONREC_TRAIN_PARALLELISM` run at once (default 2; set where the dag-processor runs, it is read when the
  DAG is parsed); free executor slots may allow fewer. A failed model can be cleared and rerun alone (with its
  downstream tasks): its study keeps the trials already finished.
* **collect_training** – gathers the models' reports into the `train` summary (MLflow run nesting the models'
  runs); fails naming any model that was not trained in this run.
* **fuse_and_select / evaluate** – blend the candidates, pick the best on validation, score it on test.
* **register** – registers the winner in MLflow with alias `challenger`.
* **compare** – scores the challenger and the current champion on the same holdout (this run's test split);
  the verdict is `better`, `within_tolerance`, `worse` (nDCG@k more than the tolerance below the champion's)
  or `no_champion`.
* **approval gate** – with `auto_approve=true` the challenger is approved by the DAG itself
  (`auto_approve` task). Otherwise `human_approval` waits (up to 7 days) for a reviewer; no answer counts as
  *Reject*. A `worse` challenger is refused (recorded as `approval.status=refused`, nothing is promoted)
  unless the run's `force` param or the reviewer's *force* box is set.
* **promote** – the approved challenger becomes `champion` and its recommendations go to the serving store.
  It runs only after an approval; a *Reject* is recorded on the model version (`record_approval`), promote
  is skipped and the challenger stays unpromoted.

Runs `@daily` (set `FUSIONREC_RETRAIN_SCHEDULE` for another cron/preset), one run at a time, no catch-up.

#### How to approve
* **UI**: open this run → task `human_approval` → *Required actions*, read the challenger-vs-champion table,
  optionally write a comment (and tick *force* to promote a worse challenger), press *Approve* or *Reject*.
* **REST API**: `PATCH /api/v2/dags/fusionrec_retrain/dagRuns/{run_id}/taskInstances/human_approval/-1/hitlDetails`
  with body `{"chosen_options": ["Approve"], "params_input": {"comment": "looks good", "force": false}}`
  (`force` may be left out).
* **No reviewer** (CI, scripted runs): trigger with `{"auto_approve": true}`. `airflow dags test` without it
  waits at `human_approval` until someone answers through the UI or REST API of an api-server on the same
  metadata DB.
"""

APPROVAL_SUBJECT = (
    "Promote FusionRec challenger v{{ ti.xcom_pull(task_ids='register')['version'] }} to champion?"
)

# Rendered by Jinja at run time from the XComs of the earlier stages; shows whatever metrics they report.
# Airflow renders with StrictUndefined: optional keys are read with .get().
APPROVAL_BODY = """
**Run** `{{ run_id }}` · dataset `{{ params.interactions_file or params.dataset }}` · models
`{{ params.models | join(', ') }}`

{% set cmp = ti.xcom_pull(task_ids='compare') or {} -%}
#### Challenger vs champion on the same holdout (compare)
{% if cmp.get('champion') -%}
Challenger v{{ cmp.challenger_version }} vs champion v{{ cmp.champion_version }} on {{ cmp.test_users }} test users
{%- if cmp.champion_cold_users %} ({{ cmp.champion_cold_users }} unknown to the champion){% endif %}:

| metric | challenger | champion | difference |
|---|---:|---:|---:|
{% for metric, difference in cmp.difference.items() -%}
{% set ours, theirs = cmp.challenger[metric], cmp.champion[metric] -%}
| {{ metric }} | {{ '%.4f' | format(ours) }} | {{ '%.4f' | format(theirs) }} | {{ '%+.4f' | format(difference) }} |
{% endfor %}
{% elif cmp -%}
No champion yet: challenger v{{ cmp.challenger_version }} scores {{ cmp.metric }}
{{ '%.4f' | format(cmp.challenger[cmp.metric]) }} on {{ cmp.test_users }} test users.
{% else -%}
No comparison available.
{% endif %}
{%- if cmp %}
**Verdict: {{ cmp.verdict }}** on {{ cmp.metric }} (tolerance {{ cmp.tolerance }}).
{%- if cmp.verdict == 'worse' %} *Approve* is refused unless **force** is ticked (recorded as forced).{% endif %}
{% endif %}

#### Challenger (register)
{% for key, value in (ti.xcom_pull(task_ids='register') or {}).items() -%}
- **{{ key }}**: `{{ value }}`
{% endfor %}
#### Validation (fuse_and_select)
{% for key, value in (ti.xcom_pull(task_ids='fuse_and_select') or {}).items() -%}
- **{{ key }}**: `{{ value }}`
{% endfor %}
#### Test (evaluate)
{% for key, value in (ti.xcom_pull(task_ids='evaluate') or {}).items() -%}
- **{{ key }}**: `{{ value }}`
{% endfor %}
*Approve* makes this version `champion` and refreshes the serving store; *Reject* leaves the current champion.
"""


COLUMN_KEYS = (
    "user_col",
    "item_col",
    "rating_col",
    "timestamp_col",
    "event_col",
    "session_col",
    "price_col",
    "quantity_col",
)


def config_overrides(params: dict[str, Any], run_id: str | None) -> dict[str, Any]:
    """Map DAG params (+ the Airflow run id) to ``RunConfig.from_env`` keyword overrides."""
    own_files = bool(params.get("interactions_file"))
    return {
        "home": params.get("home"),  # None: FUSIONREC_HOME from the environment
        "source": {
            "dataset": None if own_files else params.get("dataset"),
            "interactions": params.get("interactions_file"),
            "items": params.get("items_file"),
            "users": params.get("users_file"),
            "reviews": params.get("reviews_file"),
            # column names of the interactions file, e.g. {"user_col": "customer", "item_col": "sku"}
            **{k: v for k, v in (params.get("columns") or {}).items() if k in COLUMN_KEYS and v},
        },
        "n_trials": params.get("n_trials"),
        "models": params.get("models"),
        "fusions": params.get("fusions"),
        "model_trials": params.get("model_trials") or None,
        "auto_approve": params.get("auto_approve"),
        "drift_action": params.get("drift_action"),
        "run_id": run_id,
    }


def approval_route(auto_approve: bool) -> str:
    """The task id the approval branch follows."""
    return AUTO_APPROVE_TASK if auto_approve else HUMAN_APPROVAL_TASK


def reviewer_and_comment(decision: dict[str, Any]) -> tuple[str, str]:
    """Who decided and why, from the HITL task's XCom (``responded_by_user``, ``params_input``)."""
    reviewer = (decision.get("responded_by_user") or {}).get("name") or UI_APPROVER
    verdict = "approved" if is_approval(decision) else "rejected"
    comment = (decision.get("params_input") or {}).get("comment") or f"{verdict} in Airflow"
    return reviewer, comment


APPROVE, REJECT = "Approve", "Reject"


def is_approval(decision: dict[str, Any]) -> bool:
    return (decision.get("chosen_options") or [None])[0] == APPROVE


def force_requested(params: dict[str, Any] | None, decision: dict[str, Any] | None = None) -> bool:
    """Whether a worse challenger may be promoted: the run's ``force`` param or the reviewer's ``force`` box."""
    reviewer = ((decision or {}).get("params_input") or {}).get("force")
    return bool((params or {}).get("force")) or bool(reviewer)


class ApprovalGate(HITLOperator):
    """The HITL form, accepting answers that name only some of its fields (e.g. just ``comment`` over the
    REST API): the others keep their defaults. HITLOperator itself fails the task on such an answer."""

    def validate_params_input(self, params_input: Mapping) -> None:
        if unknown := set(params_input) - set(self.params):
            raise ValueError(
                f"params_input has unknown fields {sorted(unknown)}; the form has {sorted(self.params)}"
            )
        super().validate_params_input({**self.params.dump(), **params_input})


def _run_config(params: dict[str, Any] | None, run_id: str | None):  # -> fusionrec.config.RunConfig
    from fusionrec.config import RunConfig

    return RunConfig.from_env(**config_overrides(params or {}, run_id))


# Same values as fusionrec.config (a test keeps them equal): this file must parse without the package.
DEFAULT_MODELS = ("ease", "itemknn", "ials", "two_tower")
FUSION_METHODS = ("blend", "rrf", "stacking")

# The stages before the approval gate, in order: (task id, "module:function" in pipelines/). Between the two
# groups training fans out, one mapped train_model task instance per model (see fusionrec_retrain).
BEFORE_TRAINING = (
    ("ingest", "pipelines.ingest:ingest"),
    ("validate", "pipelines.validate:validate"),
    ("version_data", "pipelines.version:version_data"),
    ("split", "pipelines.split:split"),
    ("build_features", "pipelines.features:build_features"),
)
AFTER_TRAINING = (
    ("collect_training", "pipelines.train:collect_training"),
    ("fuse_and_select", "pipelines.fuse:fuse_and_select"),
    ("evaluate", "pipelines.evaluate:evaluate"),
    ("register", "pipelines.register:register"),
    ("compare", "pipelines.compare:compare"),
)
PROMOTE = "pipelines.promote:promote"
TRAIN_PARALLELISM = "FUSIONREC_TRAIN_PARALLELISM"


def train_parallelism() -> int:
    """How many models of one run train at once: ``FUSIONREC_TRAIN_PARALLELISM`` (default 2)."""
    value = os.environ.get(TRAIN_PARALLELISM, "2").strip()
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{TRAIN_PARALLELISM} must be a whole number of at least 1, got {value!r}")
    return int(value)


def stage_task(task_id: str, target: str, **task_kwargs: Any) -> Any:
    """A TaskFlow task running one stage function on the run's config; returns the result dict (XCom).
    The stage module is imported when the task runs, never when the dag-processor parses this file."""

    @task(task_id=task_id, **task_kwargs)
    def run_stage(params: dict | None = None, run_id: str | None = None) -> dict:
        module, function = target.split(":")
        stage = getattr(importlib.import_module(module), function)
        return stage(_run_config(params, run_id)).to_dict()

    return run_stage


@dag(
    dag_id=DAG_ID,
    schedule=os.environ.get("FUSIONREC_RETRAIN_SCHEDULE", "@daily"),  # cron or preset, e.g. "@weekly"
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "fusionrec", "retries": 0},
    tags=["fusionrec", "retrain", "mlops"],
    doc_md=DOC_MD,
    params={
        "dataset": Param(
            "ml-100k",
            type="string",
            enum=["ml-100k", "instacart"],
            description="Bundled dataset (ignored when interactions_file is set).",
        ),
        "interactions_file": Param(
            None,
            type=["null", "string"],
            description="Your interactions file, or a folder of csv/parquet files.",
        ),
        "items_file": Param(None, type=["null", "string"], description="Optional items file."),
        "users_file": Param(None, type=["null", "string"], description="Optional users file."),
        "reviews_file": Param(None, type=["null", "string"], description="Optional reviews file."),
        "columns": Param(
            {},
            type="object",
            properties={key: {"type": "string"} for key in COLUMN_KEYS},
            additionalProperties=False,
            description='Column names of the interactions file when they differ, e.g. {"user_col": "customer"}.',
        ),
        "n_trials": Param(4, type="integer", minimum=1, description="Optuna trials per model."),
        "models": Param(
            list(DEFAULT_MODELS),
            type="array",
            items={"type": "string"},
            minItems=1,
            description="Single models to tune and train (models/registry.py), e.g. ease, itemknn, ials, bpr, "
            "content, two_tower, neumf, sasrec, lightgcn, popularity, buy_again.",
        ),
        "fusions": Param(
            list(FUSION_METHODS),
            type="array",
            items={"type": "string", "enum": list(FUSION_METHODS)},
            description="Fusion methods compared with the single models on validation (may be empty).",
        ),
        "model_trials": Param(
            {},
            type="object",
            additionalProperties={"type": "integer", "minimum": 1},
            description='Per-model Optuna trial budgets overriding n_trials, e.g. {"two_tower": 2}.',
        ),
        "auto_approve": Param(False, type="boolean", description="Skip the human approval gate."),
        "force": Param(
            False,
            type="boolean",
            description="Let auto-approve or a reviewer promote a challenger worse than the champion on the "
            "same holdout (beyond the tolerance); recorded as a forced approval.",
        ),
        "drift_action": Param(
            "warn",
            type="string",
            enum=["warn", "fail", "off"],
            description="What a drift against the last accepted batch does: warn, fail the run, or nothing.",
        ),
        "home": Param(None, type=["null", "string"], description="Override FUSIONREC_HOME."),
    },
)
def fusionrec_retrain() -> None:
    @task.branch
    def choose_approval_path(params: dict | None = None) -> str:
        """``auto_approve`` when the run asked for it, else the human approval gate."""
        return approval_route(bool((params or {}).get("auto_approve")))

    @task(task_id=AUTO_APPROVE_TASK)
    def auto_approve(version: str, params: dict | None = None, run_id: str | None = None) -> dict:
        """Approves the challenger; one worse than the champion (without ``force``) is refused: the refusal
        is recorded on the model version and this task skips, so nothing is promoted."""
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.approve import ApprovalRefused, approve

        cfg = _run_config(params, run_id)
        comment = "auto-approved by DAG param"
        try:
            return approve(
                cfg, version, by="airflow:auto", comment=comment, auto=True, force=force_requested(params)
            ).to_dict()
        except ApprovalRefused as refused:
            raise AirflowSkipException(f"nothing to promote: {refused}") from refused

    @task
    def record_approval(
        version: str, decision: dict, params: dict | None = None, run_id: str | None = None
    ) -> dict:
        """Records the reviewer's decision on the model version; a Reject, or an Approve of a challenger worse
        than the champion without ``force`` (recorded as refused), skips, so nothing is promoted."""
        from airflow.sdk.exceptions import AirflowSkipException

        from pipelines.approve import ApprovalRefused, approve, reject

        reviewer, comment = reviewer_and_comment(decision)
        cfg = _run_config(params, run_id)
        if is_approval(decision):
            force = force_requested(params, decision)
            try:
                return approve(cfg, version, by=reviewer, comment=comment, auto=False, force=force).to_dict()
            except ApprovalRefused as refused:
                raise AirflowSkipException(f"nothing to promote: {refused}") from refused
        reject(cfg, version, by=reviewer, comment=comment)
        raise AirflowSkipException(f"version {version} rejected by {reviewer}: nothing to promote")

    @task(task_id="models")
    def models_to_train(params: dict | None = None, run_id: str | None = None) -> list[str]:
        """The run's models, checked, with the Optuna and MLflow stores ready for parallel training."""
        from pipelines.train import prepare_training

        return prepare_training(_run_config(params, run_id))

    @task(max_active_tis_per_dagrun=train_parallelism(), map_index_template="{{ model }}")
    def train_model(model: str, params: dict | None = None, run_id: str | None = None) -> dict:
        """Tunes and fits one model; the UI labels the task instance with the model's name."""
        from airflow.sdk import get_current_context

        from pipelines.train import train_model as train_one

        get_current_context()["model"] = model  # read by map_index_template
        return train_one(_run_config(params, run_id), model).to_dict()

    before = [stage_task(task_id, target)() for task_id, target in BEFORE_TRAINING]
    models = models_to_train()
    trained = train_model.expand(model=models)  # one task instance per model
    stages = {task_id: stage_task(task_id, target)() for task_id, target in AFTER_TRAINING}
    chain(*before, models, trained, *stages.values())
    registered = stages["register"]  # its result carries the challenger's model ``version``
    branch = choose_approval_path()
    stages["compare"] >> branch

    # HITLOperator rather than ApprovalOperator: the latter skips its downstream on Reject, which would leave
    # the rejection unrecorded; here record_approval always sees the decision and records it in MLflow.
    human_approval = ApprovalGate(
        task_id=HUMAN_APPROVAL_TASK,
        subject=APPROVAL_SUBJECT,
        body=APPROVAL_BODY,
        options=[APPROVE, REJECT],
        defaults=[REJECT],  # applied by the scheduler when the response times out
        response_timeout=timedelta(days=7),
        params={
            "comment": Param("", type="string", description="Why approve / reject (recorded in MLflow)."),
            "force": Param(
                False,
                type="boolean",
                description="Approve even if the challenger is worse than the champion (recorded as forced).",
            ),
        },
    )
    approved_by_dag = auto_approve(registered["version"])
    approved_by_human = record_approval(registered["version"], human_approval.output)
    branch >> [approved_by_dag, human_approval]

    # promote must depend on the approval tasks only: another successful upstream (e.g. register) would
    # let none_failed_min_one_success run it after a Reject (record_approval then skips).
    # Runs after exactly one approval path succeeded; skipped when both are skipped (human Reject).
    promote = stage_task("promote", PROMOTE, trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    [approved_by_dag, approved_by_human] >> promote()


retrain_dag = fusionrec_retrain()
