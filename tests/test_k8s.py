"""Static checks of the Kubernetes example (docker/k8s), read as a cluster would read it.

Why: no cluster runs in CI, and the mistakes that matter here fail only at deploy time — a
selector that matches no pod, a probe on a port the container does not open, a ConfigMap key
the service never reads, a Secret URL it cannot parse.  Everything below is cross-checked
against the files it must agree with: the settings registry, the Dockerfile, gunicorn.conf.py.
"""
from __future__ import annotations

import runpy
from urllib.parse import urlsplit

import pytest
import yaml
from deploy_files import K8S, PROJECT_VERSION, SETTING_NAMES, image_version, k8s, k8s_documents

from cds_service.runtime.settings import load_settings

API_VERSIONS = {"ConfigMap": "v1", "Secret": "v1", "Service": "v1", "Deployment": "apps/v1",
                "HorizontalPodAutoscaler": "autoscaling/v2", "PodDisruptionBudget": "policy/v1"}


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return k8s_documents()


@pytest.fixture(scope="module")
def pod(docs) -> dict:
    [deployment] = k8s("Deployment", docs)
    return deployment["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    [main] = pod["spec"]["containers"]
    return main


def test_every_manifest_is_in_the_kustomization_and_uses_a_current_api(docs):
    listed = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]) == listed
    for doc in docs:
        assert API_VERSIONS[doc["kind"]] == doc["apiVersion"], doc["kind"]
        assert doc["metadata"]["name"]


def test_settings_are_real_and_load_as_the_pods_would(docs, container):
    sources = {ref["configMapRef"]["name"] if "configMapRef" in ref else ref["secretRef"]["name"]
               for ref in container["envFrom"]}
    values = {}
    for doc in k8s("ConfigMap", docs) + k8s("Secret", docs):
        assert doc["metadata"]["name"] in sources, f"{doc['metadata']['name']} is not used by the pods"
        data = doc.get("data") or doc.get("stringData")
        assert set(data) <= SETTING_NAMES, f"{sorted(set(data) - SETTING_NAMES)} are not settings"
        values.update(data)
    assert len(sources) == 2
    settings = load_settings(values)  # raises CdsConfigError naming a bad value
    assert settings.auth and settings.public_base_url.startswith("https://")
    assert urlsplit(settings.database_path).scheme == "postgresql"
    assert urlsplit(settings.cache_url).scheme == "redis"
    assert all(not v for k, v in values.items() if k == "SPINE_CDS_TODAY")  # never a fixed date in production


def test_database_and_cache_hosts_are_the_external_services(docs):
    [secret] = k8s("Secret", docs)
    external = {d["metadata"]["name"] for d in k8s("Service", docs) if d["spec"]["type"] == "ExternalName"}
    hosts = {urlsplit(secret["stringData"][k]).hostname for k in ("SPINE_CDS_DATABASE", "SPINE_CDS_CACHE_URL")}
    assert hosts == external


def test_probes_ask_health_on_the_port_gunicorn_binds(container):
    port = int(runpy.run_path(str(K8S.parent / "gunicorn.conf.py"))["bind"].rpartition(":")[2])
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named == {"http": port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/health" and named[get["port"]] == port, probe
    assert container["livenessProbe"]["failureThreshold"] >= container["readinessProbe"]["failureThreshold"]


def test_selectors_match_the_pods(docs, pod):
    labels = pod["metadata"]["labels"]
    [deployment] = k8s("Deployment", docs)
    [pdb] = k8s("PodDisruptionBudget", docs)
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [service] = [s for s in k8s("Service", docs) if s["spec"]["type"] == "ClusterIP"]
    assert service["spec"]["selector"].items() <= labels.items()
    [port] = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in pod["spec"]["containers"][0]["ports"]}


def test_the_autoscaler_scales_the_deployment(docs):
    [hpa] = k8s("HorizontalPodAutoscaler", docs)
    [deployment] = k8s("Deployment", docs)
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    [pdb] = k8s("PodDisruptionBudget", docs)
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a drain can always proceed


def test_pods_run_as_the_images_user_with_a_read_only_root(pod, container, docs):
    security = pod["spec"]["securityContext"]
    dockerfile_user = [line.split()[1] for line in (K8S.parent / "Dockerfile").read_text().splitlines()
                       if line.startswith("USER ")][-1]
    assert security["runAsNonRoot"] and f"{security['runAsUser']}:{security['runAsGroup']}" == dockerfile_user
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    [configmap] = k8s("ConfigMap", docs)
    assert {"/tmp", configmap["data"]["SPINE_CDS_DATA_DIR"]} <= mounts  # the only places it writes
    assert pod["spec"]["terminationGracePeriodSeconds"] > runpy.run_path(
        str(K8S.parent / "gunicorn.conf.py"))["graceful_timeout"]


def test_the_image_is_pinned_to_the_project_version(container):
    image_version(container["image"])
    assert container["image"].endswith(f"/spine-cds:{PROJECT_VERSION}")
