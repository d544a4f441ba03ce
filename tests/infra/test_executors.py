"""The executors the deployments name load in this environment (the image installs the same uv.lock):
KubernetesExecutor (Helm values), CeleryExecutor (compose), LocalExecutor (one box)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.infra.paths import INFRA


@pytest.mark.parametrize("executor", ["KubernetesExecutor", "CeleryExecutor", "LocalExecutor"])
def test_executor_loads(executor: str, tmp_path):
    code = (
        "from airflow.executors.executor_loader import ExecutorLoader;"
        "print(ExecutorLoader.import_default_executor_cls()[0].__name__)"
    )
    env = {"AIRFLOW__CORE__EXECUTOR": executor, "AIRFLOW_HOME": str(tmp_path), "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == executor


def test_helm_values_use_the_kubernetes_executor():
    values = yaml.safe_load((INFRA / "helm" / "airflow-values.yaml").read_text())
    assert values["executor"] == "KubernetesExecutor"
