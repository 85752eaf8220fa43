"""deploy/kubernetes/: kustomize builds it, the schema validator passes it, and it agrees with the server's own settings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from smls.config import Settings
from tests.helpers import MANIFESTS, ROOT, container, manifests

KUBERNETES = "1.37.0"  # the schema version kubernetes-validate checks against


def env() -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container()["env"]}


@pytest.mark.live
def test_probes_and_port_are_the_servers(live_server):
    """The probes ask the routes that mean alive and ready, on the port the server listens on."""
    spec = container()
    port = {p["name"]: p["containerPort"] for p in spec["ports"]}["http"]
    assert int(env()["SMLS_PORT"]) == port
    assert Settings.from_env({k: v for k, v in env().items() if v is not None}).port == port
    for probe, path in (("startupProbe", "/health"), ("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        get = spec[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, "http"), probe
        assert requests.get(live_server.url + path, timeout=10).status_code == 200, path  # a warm server answers it
    service = manifests()["Service"]["spec"]["ports"][0]
    assert service["targetPort"] == "http"


def test_grace_period_outlasts_the_preStop_pause_and_gunicorns_graceful_stop():
    conf = (ROOT / "gunicorn.conf.py").read_text()
    graceful = int(re.search(r"^graceful_timeout = (\d+)", conf, re.M).group(1))
    pause = int(container()["lifecycle"]["preStop"]["exec"]["command"][1])
    grace = manifests()["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > graceful + pause


def test_workers_match_the_cpu_limit_and_the_autoscaler_its_deployment():
    limits = container()["resources"]["limits"]
    assert int(env()["SMLS_WORKERS"]) == int(limits["cpu"])
    hpa = manifests()["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": manifests()["Deployment"]["metadata"]["name"]}
    labels = manifests()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert manifests()["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert manifests()["Service"]["spec"]["selector"].items() <= labels.items()


def test_secrets_carry_the_key_and_the_store():
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container()["env"] if "valueFrom" in e}
    assert refs["SMLS_API_KEY"] == {"name": "smls", "key": "api-key"}  # required: a pod without its key does not start
    assert refs["SMLS_STORE"]["optional"] is True


@pytest.mark.deploy
def test_kustomize_builds_it_and_the_schema_validator_passes_it(tmp_path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("SMLS_REQUIRE_CLIENTS"):
            pytest.fail("kubectl is not installed (make test-deploy installs it)")
        pytest.skip("kubectl is not installed")
    built = subprocess.run([kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(built.stdout)]
    assert sorted(kinds) == ["Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    out = tmp_path / "smls.yaml"
    out.write_text(built.stdout)
    validator = [str(Path(sys.executable).with_name("kubernetes-validate")), "--strict", "-k", KUBERNETES]
    checked = subprocess.run([*validator, str(out)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("passed") == 4
    # The validator can fail: a misspelt field is refused.
    out.write_text(built.stdout.replace("minAvailable", "minAvailabel"))
    assert subprocess.run([*validator, str(out)], capture_output=True, text=True, timeout=120).returncode == 1
