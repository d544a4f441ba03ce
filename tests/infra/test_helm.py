"""Our Helm charts (infra/helm/mlflow, infra/helm/fusionrec-serving): `helm lint`, `helm template` rendered
and read back as Kubernetes objects, and bad values refused with a message that names the problem."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra.paths import HELM_DIR, load_yaml

MLFLOW = HELM_DIR / "mlflow"
SERVING = HELM_DIR / "fusionrec-serving"
CHART_FILES = (
    "Chart.yaml",
    "values.yaml",
    "values.schema.json",
    "templates/_helpers.tpl",
    "templates/NOTES.txt",
)


def _helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120)


def render(helm: str, chart: Path, *sets: str, test_values: bool = True) -> dict[str, list[dict]]:
    """``helm template`` of ``chart`` as {kind: [objects]}; fails the test on a helm error."""
    args = ["template", "rel", str(chart)]
    if test_values:
        args += ["-f", str(chart / "ci" / "test-values.yaml")]
    for item in sets:
        args += ["--set", item]
    result = _helm(helm, *args)
    assert result.returncode == 0, result.stderr
    objects: dict[str, list[dict]] = {}
    for doc in yaml.safe_load_all(result.stdout):
        if doc:
            objects.setdefault(doc["kind"], []).append(doc)
    return objects


def refused(helm: str, chart: Path, *sets: str, test_values: bool = True) -> str:
    """The error of a ``helm template`` that must fail."""
    args = ["template", "rel", str(chart)]
    if test_values:
        args += ["-f", str(chart / "ci" / "test-values.yaml")]
    for item in sets:
        args += ["--set", item]
    result = _helm(helm, *args)
    assert result.returncode != 0, f"helm accepted {sets}"
    return result.stderr


def container(objects: dict[str, list[dict]], name: str) -> dict:
    (deployment,) = objects["Deployment"]
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)


def env_of(spec: dict) -> dict[str, dict]:
    return {e["name"]: e for e in spec.get("env", [])}


@pytest.mark.parametrize("chart", [MLFLOW, SERVING], ids=lambda c: c.name)
def test_chart_files_and_lint(helm: str, chart: Path) -> None:
    for name in CHART_FILES:
        assert (chart / name).is_file(), f"{chart.name}: missing {name}"
    result = _helm(helm, "lint", str(chart), "-f", str(chart / "ci" / "test-values.yaml"), "--strict")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("chart", [MLFLOW, SERVING], ids=lambda c: c.name)
def test_notes_render(helm: str, chart: Path, tmp_path: Path) -> None:
    """NOTES.txt only renders on a real install; here it goes through `tpl` in a throwaway ConfigMap."""
    copy = tmp_path / chart.name
    shutil.copytree(chart, copy)
    shutil.copy(copy / "templates" / "NOTES.txt", copy / "notes.txt")
    (copy / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n"
        '{{ tpl (.Files.Get "notes.txt") . | indent 4 }}\n'
    )
    objects = render(
        helm, copy, "home.existingClaim=" if chart == SERVING else "artifacts.persistence.enabled=false"
    )
    notes = next(c for c in objects["ConfigMap"] if c["metadata"]["name"] == "notes")["data"]["notes"]
    assert f"svc/rel-{chart.name}" in notes and "WARNING" in notes


def test_mlflow_renders_server_service_pvc_and_secret(helm: str) -> None:
    objects = render(helm, MLFLOW)
    assert set(objects) == {"Deployment", "Service", "PersistentVolumeClaim", "Secret"}
    server = container(objects, "mlflow")
    args = server["args"]
    assert args[0] == "server" and "--serve-artifacts" in args
    destination = args[args.index("--artifacts-destination") + 1]
    mount = next(m for m in server["volumeMounts"] if m["name"] == "artifacts")
    assert mount["mountPath"] == destination
    (pvc,) = objects["PersistentVolumeClaim"]
    volumes = objects["Deployment"][0]["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "artifacts", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}}]
    # the backend URL comes from the Secret, never from the pod spec
    (secret,) = objects["Secret"]
    ref = env_of(server)["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert secret["stringData"][ref["key"]].startswith("postgresql+psycopg2://")
    assert "$(MLFLOW_BACKEND_STORE_URI)" in args
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"]["path"] == "/health"
    hosts = args[args.index("--allowed-hosts") + 1].split(",")
    assert "rel-mlflow" in hosts and "rel-mlflow:*" in hosts
    (init,) = objects["Deployment"][0]["spec"]["template"]["spec"]["initContainers"]
    assert init["command"][:3] == ["mlflow", "db", "upgrade"]
    (service,) = objects["Service"]
    assert service["spec"]["ports"][0]["port"] == 5000


def test_mlflow_existing_secret_and_no_persistence(helm: str) -> None:
    objects = render(
        helm,
        MLFLOW,
        "backendStore.existingSecret=mlflow-db",
        "artifacts.persistence.enabled=false",
        test_values=False,
    )
    assert "Secret" not in objects and "PersistentVolumeClaim" not in objects
    ref = env_of(container(objects, "mlflow"))["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "mlflow-db"


def test_serving_renders_deployment_service_hpa_config_secret(helm: str) -> None:
    objects = render(helm, SERVING)
    assert set(objects) == {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "Secret"}
    (deployment,) = objects["Deployment"]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    api = container(objects, "serving")
    assert api["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert api[probe]["httpGet"] == {"path": "/health", "port": "http"}
    (config,) = objects["ConfigMap"]
    assert api["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert config["data"]["FUSIONREC_PROFILE"] == "production"
    assert config["data"]["FUSIONREC_REDIS_URL"].startswith("redis://")
    home_mount = next(m for m in api["volumeMounts"] if m["name"] == "fusionrec-home")
    assert home_mount["mountPath"] == config["data"]["FUSIONREC_HOME"]
    (secret,) = objects["Secret"]
    env = env_of(api)
    for key in ("FUSIONREC_ADMIN_TOKEN", "FUSIONREC_PSEUDONYM_KEY", "FUSIONREC_POSTGRES_URL"):
        ref = env[key]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": key}
        assert secret["stringData"][key]
    (hpa,) = objects["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "fusionrec-home", "persistentVolumeClaim": {"claimName": "fusionrec-home"}}]
    # a changed Secret or ConfigMap rolls the pods
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert {"checksum/config", "checksum/secret"} <= set(annotations)


def test_serving_without_hpa_and_with_an_existing_secret(helm: str) -> None:
    objects = render(
        helm, SERVING, "autoscaling.enabled=false", "replicaCount=3", "secret.existingSecret=fusionrec-secrets",
        "config.servingShards=redis://a:6379/0\\,redis://b:6379/0", test_values=False,
    )  # fmt: skip
    assert "HorizontalPodAutoscaler" not in objects and "Secret" not in objects
    assert objects["Deployment"][0]["spec"]["replicas"] == 3
    token = env_of(container(objects, "serving"))["FUSIONREC_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token["name"] == "fusionrec-secrets"
    assert objects["ConfigMap"][0]["data"]["FUSIONREC_SERVING_SHARDS"] == "redis://a:6379/0,redis://b:6379/0"


@pytest.mark.parametrize(
    ("chart", "setting", "message"),
    [
        (SERVING, "service.type=Ingress", "service.type"),
        (SERVING, "config.redisUrl=http://redis:6379", "config.redisUrl"),
        (
            SERVING,
            "autoscaling.targetCPUUtilizationPercentage=150",
            "autoscaling.targetCPUUtilizationPercentage",
        ),
        (SERVING, "config.home=relative/home", "config.home"),
        (SERVING, "secret.adminTokn=x", "adminTokn"),
        (MLFLOW, "backendStore.uri=sqlite:///mlflow.db", "backendStore.uri"),
        (MLFLOW, "server.workers=0", "server.workers"),
    ],
)
def test_schema_refuses_bad_values(helm: str, chart: Path, setting: str, message: str) -> None:
    error = refused(helm, chart, setting)
    assert "values don't meet the specifications of the schema" in error
    assert message in error


def test_missing_secrets_are_named(helm: str) -> None:
    assert "set secret.adminToken" in refused(helm, SERVING, test_values=False)
    assert "set backendStore.uri" in refused(helm, MLFLOW, test_values=False)


def test_the_shared_home_claim() -> None:
    """One ReadWriteMany claim, the name both the serving chart and the Airflow task pods mount."""
    pvc = load_yaml(HELM_DIR / "fusionrec-home-pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert load_yaml(SERVING / "values.yaml")["home"]["existingClaim"] == pvc["metadata"]["name"]
    workers = load_yaml(HELM_DIR / "airflow-values.yaml")["workers"]
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in workers["extraVolumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [pvc["metadata"]["name"]]
