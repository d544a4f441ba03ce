"""The retrain DAG's wiring: parse hygiene, task graph, params, approval routing, env script.

Fast: nothing here runs a stage. The end-to-end ``airflow dags test`` run is an integration test elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "retrain.py"
ENV_SCRIPT = REPO / "scripts" / "airflow_env.sh"

STAGES = [
    "ingest",
    "validate",
    "version_data",
    "split",
    "build_features",
    "train",
    "fuse_and_select",
    "evaluate",
    "register",
]
GATE = ["choose_approval_path", "auto_approve", "human_approval", "record_approval", "promote"]
# Must never be imported while the dag-processor parses the DAG file.
HEAVY_PACKAGES = {
    "tensorflow",
    "keras",
    "mlflow",
    "feast",
    "great_expectations",
    "optuna",
    "dvc",
    "pipelines",
    "models",
    "sklearn",
    "torch",
}

# Fresh interpreter: parse the DAG the way the dag-processor does, report errors and what got imported.
_PARSE_PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dags),
    "top_level_modules": sorted({m.split(".")[0] for m in sys.modules}),
}))
"""


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Keep Airflow from writing ``~/airflow`` when the caller did not pick a home."""
    return os.environ.get("AIRFLOW_HOME") or str(tmp_path_factory.mktemp("airflow-home"))


def load_dag_module(name: str = "fusionrec_dag_retrain") -> ModuleType:
    """Execute the DAG file as a module (``dags/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(name, DAG_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def retrain(airflow_home: str) -> ModuleType:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_HOME", airflow_home)
        mp.delenv("FUSIONREC_RETRAIN_SCHEDULE", raising=False)
        return load_dag_module()


@pytest.fixture(scope="module")
def dag(retrain: ModuleType):
    return retrain.retrain_dag


def test_dagbag_parses_without_errors_or_heavy_imports(airflow_home: str) -> None:
    env = {**os.environ, "AIRFLOW_HOME": airflow_home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run(
        [sys.executable, "-c", _PARSE_PROBE, str(DAG_FILE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["import_errors"] == {}
    assert report["dag_ids"] == ["fusionrec_retrain"]
    assert HEAVY_PACKAGES.isdisjoint(report["top_level_modules"])


def test_tasks_and_linear_stage_order(dag) -> None:
    assert set(dag.task_ids) == set(STAGES + GATE)
    for upstream, downstream in zip(STAGES, STAGES[1:], strict=False):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}, downstream
    assert dag.get_task("ingest").upstream_task_ids == set()


def test_approval_gate_wiring(dag) -> None:
    def upstream(task_id: str) -> set[str]:
        return dag.get_task(task_id).upstream_task_ids

    assert upstream("choose_approval_path") == {"register"}
    assert dag.get_task("choose_approval_path").downstream_task_ids == {"auto_approve", "human_approval"}
    assert upstream("human_approval") == {"choose_approval_path"}
    assert upstream("auto_approve") == {"choose_approval_path", "register"}  # register: the version XCom
    assert upstream("record_approval") == {"human_approval", "register"}
    # Only approval tasks upstream of promote: with any other successful parent, a human Reject (which skips
    # record_approval) would still satisfy none_failed_min_one_success and promote the challenger.
    assert upstream("promote") == {"auto_approve", "record_approval"}
    assert dag.get_task("promote").trigger_rule == "none_failed_min_one_success"
    assert dag.get_task("record_approval").trigger_rule == "all_success"


def test_human_approval_operator(dag) -> None:
    from airflow.providers.standard.operators.hitl import HITLOperator

    gate = dag.get_task("human_approval")
    assert isinstance(gate, HITLOperator)
    assert gate.options == ["Approve", "Reject"] and not gate.multiple
    assert gate.response_timeout == timedelta(days=7)
    assert gate.defaults == ["Reject"]  # an unanswered request never promotes
    assert "comment" in gate.serialized_params
    assert "xcom_pull(task_ids='register')['version']" in gate.subject
    for stage in ("register", "fuse_and_select", "evaluate"):
        assert f"xcom_pull(task_ids='{stage}')" in gate.body


def test_approval_templates_are_valid_jinja(retrain: ModuleType) -> None:
    import jinja2

    env = jinja2.Environment()
    env.parse(retrain.APPROVAL_SUBJECT)
    env.parse(retrain.APPROVAL_BODY)


def test_schedule_and_run_settings(dag) -> None:
    assert dag.dag_id == "fusionrec_retrain"
    assert dag.schedule == "@daily"
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert {"fusionrec", "retrain"} <= set(dag.tags)
    assert "approve" in dag.doc_md.lower()


def test_schedule_can_be_overridden_from_env(retrain: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSIONREC_RETRAIN_SCHEDULE", "@weekly")
    assert load_dag_module("fusionrec_dag_retrain_weekly").retrain_dag.schedule == "@weekly"


def test_param_defaults(dag) -> None:
    assert dag.params.dump() == {
        "dataset": "ml-100k",
        "interactions_file": None,
        "items_file": None,
        "users_file": None,
        "reviews_file": None,
        "columns": {},
        "n_trials": 4,
        "models": ["ease", "itemknn", "ials", "two_tower"],
        "fusions": ["blend", "rrf", "stacking"],
        "model_trials": {},
        "auto_approve": False,
        "drift_action": "warn",
        "home": None,
    }


def test_dag_defaults_are_the_config_defaults(retrain: ModuleType) -> None:
    from fusionrec.config import DEFAULT_MODELS, FUSION_METHODS

    assert (retrain.DEFAULT_MODELS, retrain.FUSION_METHODS) == (DEFAULT_MODELS, FUSION_METHODS)


@pytest.mark.parametrize(
    ("name", "bad_value"),
    [
        ("n_trials", 0),
        ("dataset", "netflix"),
        ("models", []),
        ("models", "ease"),
        ("auto_approve", "yes"),
        ("fusions", ["median"]),
        ("model_trials", {"ease": 0}),
        ("drift_action", "explode"),
    ],
)
def test_params_reject_bad_input(dag, name: str, bad_value: object) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        dag.params.get_param(name).resolve(bad_value)


def test_branch_routes_on_auto_approve(dag) -> None:
    choose = dag.get_task("choose_approval_path").python_callable
    assert choose(params={"auto_approve": True}) == "auto_approve"
    assert choose(params={"auto_approve": False}) == "human_approval"
    assert choose(params=dag.params.dump()) == "human_approval"  # default: a human decides


def test_config_overrides_build_the_run_config(retrain: ModuleType, tmp_path: Path) -> None:
    from fusionrec.config import RunConfig

    params = {
        **retrain.retrain_dag.params.dump(),
        "n_trials": 2,
        "models": ["ease"],
        "fusions": ["rrf"],
        "model_trials": {"ease": 3},
        "auto_approve": True,
    }
    cfg = RunConfig.from_env(**retrain.config_overrides({**params, "home": str(tmp_path)}, "manual__1"))
    assert (cfg.fusions, cfg.model_trials) == (("rrf",), {"ease": 3})
    assert cfg.home == tmp_path.resolve()
    assert cfg.source.dataset == "ml-100k"
    assert cfg.source.interactions is None
    assert (cfg.n_trials, cfg.models, cfg.auto_approve, cfg.run_id) == (2, ("ease",), True, "manual__1")


def test_own_interactions_file_replaces_the_dataset(retrain: ModuleType, tmp_path: Path) -> None:
    from fusionrec.config import RunConfig

    params = {
        **retrain.retrain_dag.params.dump(),
        "interactions_file": "/data/events.csv",
        "columns": {"user_col": "customer", "timestamp_col": "ts"},
    }
    cfg = RunConfig.from_env(**retrain.config_overrides({**params, "home": str(tmp_path)}, None))
    assert cfg.source.dataset is None
    assert cfg.source.interactions == "/data/events.csv"
    assert (cfg.source.user_col, cfg.source.timestamp_col, cfg.source.item_col) == (
        "customer",
        "ts",
        "item_id",
    )


def test_home_defaults_to_fusionrec_home_env(
    retrain: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fusionrec.config import RunConfig

    monkeypatch.setenv("FUSIONREC_HOME", str(tmp_path))
    cfg = RunConfig.from_env(**retrain.config_overrides(retrain.retrain_dag.params.dump(), "r"))
    assert cfg.home == tmp_path.resolve()


def test_reviewer_and_comment_from_hitl_output(retrain: ModuleType) -> None:
    # Shape of the HITLOperator's XCom (HITLTriggerEventSuccessPayload) after an API/UI response.
    decision = {
        "chosen_options": ["Approve"],
        "params_input": {"comment": "beats champion on NDCG"},
        "responded_by_user": {"id": "alice", "name": "alice"},
    }
    assert retrain.reviewer_and_comment(decision) == ("alice", "beats champion on NDCG")
    anonymous = {"chosen_options": ["Approve"], "params_input": {}, "responded_by_user": None}
    assert retrain.reviewer_and_comment(anonymous) == ("airflow-ui", "approved in Airflow")
    rejected = {"chosen_options": ["Reject"], "params_input": {}, "responded_by_user": {"name": "bob"}}
    assert retrain.reviewer_and_comment(rejected) == ("bob", "rejected in Airflow")
    assert retrain.is_approval(decision) and not retrain.is_approval(rejected)


def test_env_script_sets_airflow_layout(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FUSIONREC"))}
    out = subprocess.run(
        ["bash", "-c", f'cd / && source "{ENV_SCRIPT}" && env'],
        env={**clean, "FUSIONREC_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=True,
    )
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert env["AIRFLOW_HOME"] == f"{tmp_path}/airflow"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path}/airflow/airflow.db"
    assert env["PATH"].split(":")[0] == str(REPO / ".venv" / "bin")
    assert (tmp_path / "airflow").is_dir()
