"""The retrain DAG's wiring: parse hygiene, task graph, params, approval routing, env script.

Fast: nothing here runs a stage. The end-to-end ``airflow dags test`` run is an integration test elsewhere.
"""

from __future__ import annotations

import copy
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
    "models",
    "train_model",  # mapped: one task instance per model
    "collect_training",
    "fuse_and_select",
    "evaluate",
    "register",
    "compare",
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


def test_training_fans_out_one_mapped_task_per_model(dag) -> None:
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert not isinstance(dag.get_task("models"), MappedOperator)
    train_model = dag.get_task("train_model")
    assert isinstance(train_model, MappedOperator)
    mapped = train_model.op_kwargs_expand_input.value  # what .expand() maps over
    assert set(mapped) == {"model"} and mapped["model"].operator.task_id == "models"
    assert train_model.max_active_tis_per_dagrun == 2  # FUSIONREC_TRAIN_PARALLELISM unset
    assert train_model.map_index_template == "{{ model }}"  # the UI names each instance by its model
    assert not isinstance(dag.get_task("collect_training"), MappedOperator)  # one summary after all models


def test_train_parallelism_comes_from_env(retrain: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSIONREC_TRAIN_PARALLELISM", "3")
    dag = load_dag_module("fusionrec_dag_retrain_parallel").retrain_dag
    assert dag.get_task("train_model").max_active_tis_per_dagrun == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("FUSIONREC_TRAIN_PARALLELISM", bad)
        with pytest.raises(ValueError, match="FUSIONREC_TRAIN_PARALLELISM must be a whole number"):
            retrain.train_parallelism()


def test_approval_gate_wiring(dag) -> None:
    def upstream(task_id: str) -> set[str]:
        return dag.get_task(task_id).upstream_task_ids

    assert upstream("choose_approval_path") == {"compare"}  # the reviewer sees the comparison
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
    assert set(gate.serialized_params) == {"comment", "force"}
    assert gate.params.dump() == {"comment": "", "force": False}
    assert "xcom_pull(task_ids='register')['version']" in gate.subject
    for stage in ("register", "fuse_and_select", "evaluate", "compare"):
        assert f"xcom_pull(task_ids='{stage}')" in gate.body


def test_approval_form_accepts_answers_naming_some_fields(dag) -> None:
    """A REST answer with only ``comment`` keeps ``force`` at its default; an unknown field is an error."""
    gate = copy.deepcopy(dag.get_task("human_approval"))
    gate.validate_params_input({"comment": "ok"})
    assert gate.params.dump() == {"comment": "ok", "force": False}
    gate.validate_params_input({"comment": "worse, but needed", "force": True})
    assert gate.params.dump() == {"comment": "worse, but needed", "force": True}
    with pytest.raises(ValueError, match="unknown fields"):
        gate.validate_params_input({"comment": "ok", "forse": True})


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
        "force": False,
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
        ("force", "yes"),
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


def test_force_comes_from_the_run_or_the_reviewer(retrain: ModuleType) -> None:
    assert not retrain.force_requested({"force": False})
    assert not retrain.force_requested(None, {"params_input": None})
    assert retrain.force_requested({"force": True})
    assert retrain.force_requested({"force": False}, {"params_input": {"comment": "", "force": True}})
    assert not retrain.force_requested({}, {"params_input": {"comment": "", "force": False}})


COMPARISON = {  # the compare task's XCom (pipelines.compare.CompareResult.to_dict())
    "model_name": "fusionrec",
    "challenger_version": "3",
    "champion_version": "2",
    "metric": "ndcg@10",
    "tolerance": 0.01,
    "verdict": "worse",
    "challenger": {"ndcg@10": 0.25, "recall@10": 0.3, "coverage": 0.5},
    "champion": {"ndcg@10": 0.3125, "recall@10": 0.25},
    "difference": {"ndcg@10": -0.0625, "recall@10": 0.05},
    "test_users": 943,
    "champion_cold_users": 7,
    "holdout": "/home/data/splits/test.parquet",
}


class FakeTaskInstance:
    def __init__(self, xcoms: dict[str, dict | None]) -> None:
        self.xcoms = xcoms

    def xcom_pull(self, task_ids: str) -> dict | None:
        return self.xcoms.get(task_ids)


def render_body(dag, comparison: dict | None) -> str:
    """The approval body as Airflow renders it (the DAG's Jinja environment: StrictUndefined)."""
    ti = FakeTaskInstance(
        {
            "register": {"version": "3", "model_uri": "models:/fusionrec/3"},
            "fuse_and_select": {"selected": "ease"},
            "evaluate": {"test_users": 943},
            "compare": comparison,
        }
    )
    template = dag.get_template_env().from_string(dag.get_task("human_approval").body)
    return template.render(ti=ti, run_id="manual__1", params=dag.params.dump())


def test_approval_body_shows_challenger_vs_champion_table(dag) -> None:
    body = render_body(dag, COMPARISON)
    lines = body.splitlines()
    header = lines.index("| metric | challenger | champion | difference |")
    assert lines[header + 1] == "|---|---:|---:|---:|"
    assert lines[header + 2 : header + 4] == [
        "| ndcg@10 | 0.2500 | 0.3125 | -0.0625 |",
        "| recall@10 | 0.3000 | 0.2500 | +0.0500 |",
    ]
    assert lines[header + 4] == ""  # the table ends before the verdict
    assert "Challenger v3 vs champion v2 on 943 test users (7 unknown to the champion):" in body
    assert "**Verdict: worse** on ndcg@10 (tolerance 0.01)." in body
    assert "refused unless **force** is ticked" in body
    assert "- **model_uri**: `models:/fusionrec/3`" in body  # the earlier sections are still there


def test_approval_body_without_champion_or_comparison(dag) -> None:
    first = {
        **COMPARISON,
        "champion_version": None,
        "champion": None,
        "difference": None,
        "verdict": "no_champion",
    }
    body = render_body(dag, first)
    assert "| metric |" not in body and "No champion yet: challenger v3 scores ndcg@10\n0.2500" in body
    assert "**Verdict: no_champion**" in body and "force" not in body
    better = render_body(dag, {**COMPARISON, "verdict": "better"})
    assert "**Verdict: better**" in better and "force" not in better
    assert "No comparison available." in render_body(dag, None)


@pytest.mark.slow  # a real MLflow registry (~30 s)
def test_approval_tasks_refuse_a_worse_challenger_unless_forced(
    dag, retrain: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """auto_approve and record_approval skip (promote is then skipped) on a worse challenger, recording the
    refusal; the run's or the reviewer's force lets it through."""
    from airflow.sdk.exceptions import AirflowSkipException
    from mlflow import MlflowClient

    from fusionrec.config import RunConfig
    from tests.pipelines.test_approve import register_model, write_splits

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home = tmp_path / "home"
    write_splits(home)
    params = {**dag.params.dump(), "home": str(home)}
    cfg = RunConfig.from_env(**retrain.config_overrides(params, "manual__1"))

    def run(task_id: str, *args: object, **run_params: object) -> dict:
        return dag.get_task(task_id).python_callable(*args, params=params | run_params, run_id="manual__1")

    def tags(version: str) -> dict[str, str]:
        client = MlflowClient(tracking_uri=cfg.tracking_uri)
        return client.get_model_version(cfg.registered_model, version).tags

    first = register_model(cfg, "ease")
    assert run("compare")["verdict"] == "no_champion"
    assert run("auto_approve", first)["status"] == "approved"
    worse = register_model(cfg, "popularity")
    assert run("compare")["verdict"] == "worse"
    with pytest.raises(AirflowSkipException, match="worse than champion v1.*use --force"):
        run("auto_approve", worse)
    assert tags(worse)["approval.status"] == "refused" and tags(worse)["approval.by"] == "airflow:auto"

    answer = {
        "chosen_options": ["Approve"],
        "params_input": {"comment": "go"},
        "responded_by_user": {"name": "rita"},
    }
    with pytest.raises(AirflowSkipException, match="use --force"):
        run("record_approval", worse, answer)
    assert tags(worse)["approval.by"] == "rita" and tags(first)["approval.status"] == "approved"
    forced = run("record_approval", worse, answer | {"params_input": {"comment": "go", "force": True}})
    assert forced["forced"] and forced["by"] == "rita" and tags(worse)["approval.forced"] == "true"

    again = register_model(cfg, "ease")  # better than the popularity champion now
    assert run("compare")["verdict"] == "better"
    assert run("auto_approve", again)["forced"] is False
    also_worse = register_model(cfg, "popularity")
    assert run("auto_approve", also_worse, force=True)["forced"] is True  # the run's force param


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
