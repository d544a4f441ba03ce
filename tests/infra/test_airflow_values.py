"""infra/helm/airflow-values.yaml for the official Apache Airflow chart, which can't be fetched here: every
value path it sets must be one the chart's values.schema.json knows (airflow_chart_keys.txt, with its
source), and the FusionRec parts must agree with each other and with our own charts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.paths import HELM_DIR, load_yaml

KEYS_FILE = Path(__file__).with_name("airflow_chart_keys.txt")
VALUES = HELM_DIR / "airflow-values.yaml"
HOME = "/var/lib/fusionrec"


def chart_keys() -> list[str]:
    return [line.strip() for line in KEYS_FILE.read_text().splitlines() if line.strip() and line[0] != "#"]


def value_paths(values: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves of a values mapping (lists are leaves)."""
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            paths += value_paths(value, f"{path}.")
        else:
            paths.append(path)
    return paths


def unknown_paths(paths: list[str], keys: list[str]) -> list[str]:
    """The paths no chart key allows (exact, or under a ``prefix.*`` entry)."""
    exact = {k for k in keys if not k.endswith(".*")}
    prefixes = tuple(k[:-1] for k in keys if k.endswith(".*"))
    return [p for p in paths if p not in exact and not f"{p}.".startswith(prefixes)]


@pytest.fixture(scope="module")
def values() -> dict:
    return load_yaml(VALUES)


def test_checker_refuses_a_misspelt_key() -> None:
    keys = ["workers.extraVolumes.*", "executor"]
    assert unknown_paths(["workers.extraVolumes", "executor"], keys) == []
    assert unknown_paths(["workers.extraVolume", "executors", "workers"], keys) == [
        "workers.extraVolume",
        "executors",
        "workers",
    ]


def test_every_value_path_is_a_chart_key(values: dict) -> None:
    assert unknown_paths(value_paths(values), chart_keys()) == []


def test_env_and_secret_items_have_the_chart_shape(values: dict) -> None:
    assert all(set(item) == {"name", "value"} for item in values["env"])
    assert all(set(item) == {"envName", "secretName", "secretKey"} for item in values["secret"])


def test_kubernetes_executor_on_the_fusionrec_image(values: dict) -> None:
    assert values["executor"] == "KubernetesExecutor"
    image = f"{values['defaultAirflowRepository']}:{values['defaultAirflowTag']}"
    (init,) = values["apiServer"]["extraInitContainers"]
    assert init["image"] == image, "the api-server init container must use the same image"
    assert values["postgresql"]["enabled"] is False
    assert values["data"]["metadataConnection"]["db"] == "airflow"
    assert values["config"]["core"]["dags_folder"] == "/opt/fusionrec/dags"
    assert "/execution/" in values["config"]["core"]["execution_api_server_url"]
    # one pre-created Secret for what every component must share
    names = {values[k] for k in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName")}
    assert names == {"fusionrec-airflow"}


def test_fusionrec_env_and_shared_home(values: dict) -> None:
    env = {item["name"]: item["value"] for item in values["env"]}
    assert env["FUSIONREC_PROFILE"] == "production" and env["FUSIONREC_HOME"] == HOME
    assert env["FUSIONREC_REDIS_URL"].startswith("redis://")
    assert env["MLFLOW_TRACKING_URI"].startswith("http://")
    secrets = {item["envName"]: item for item in values["secret"]}
    assert set(secrets) == {"FUSIONREC_POSTGRES_URL", "FUSIONREC_PSEUDONYM_KEY"}
    mounts = values["workers"]["extraVolumeMounts"]
    assert {"name": "fusionrec-home", "mountPath": HOME} in mounts
    serving = load_yaml(HELM_DIR / "fusionrec-serving" / "values.yaml")
    assert serving["config"]["home"] == HOME, "serving and task pods must share the FUSIONREC_HOME path"


def test_no_log_groomer_without_its_script(values: dict) -> None:
    for component in ("workers", "scheduler", "triggerer", "dagProcessor"):
        assert values[component]["logGroomerSidecar"]["enabled"] is False, component
