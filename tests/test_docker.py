"""Static checks of the container files (no Docker engine is needed to run them).

Why: the image cannot be built in CI here, so the properties that matter for operators —
non-root user, health check, the gunicorn entry point, COPY sources that exist and are not
excluded by .dockerignore, a valid gunicorn config — are checked by reading the files.
"""
from __future__ import annotations

import fnmatch
import json
import os
import runpy
import shlex
from pathlib import Path

import pytest
from gunicorn.config import Config

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


def test_installs_the_package_without_pip_cache_at_pinned_versions():
    assert any("pip install --no-cache-dir -c docker/constraints.txt ." in run for run in of("RUN"))


def _requirement_name(text: str) -> str:
    import re
    return re.split(r"[\[<>=!~; ]", text, maxsplit=1)[0].lower().replace("_", "-").replace(".", "-")


def test_the_image_pins_every_dependency_and_pyproject_bounds_each_from_above():
    """An unpinned rebuild brought gunicorn 27 and its control socket: never again silently."""
    import tomllib
    lines = [line.strip() for line in (ROOT / "docker" / "constraints.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines and all("==" in line and ";" not in line for line in lines), "every constraint is one exact version"
    pinned = {_requirement_name(line) for line in lines}
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in runtime:
        assert "<" in requirement, f"{requirement}: give it an upper bound in pyproject.toml"
        assert _requirement_name(requirement) in pinned, f"{requirement} is not pinned in docker/constraints.txt"
    from importlib.metadata import version
    gunicorn = next(line for line in lines if line.startswith("gunicorn=="))
    assert gunicorn == f"gunicorn=={version('gunicorn')}", "the image runs the gunicorn the tests ran"


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
    assert conf["workers"] == 2 * len(os.sched_getaffinity(0)) + 1
    # gthread whose threads only see whole requests: a slow client holds a buffer, never a thread
    assert conf["worker_class"] == "cds_service.tools.buffered_worker.BufferingThreadWorker"
    assert conf["threads"] == 2 and conf["worker_connections"] == 1000
    assert conf["reuse_port"] is True  # the kernel spreads connections over the workers
    assert conf["timeout"] == 30 and conf["graceful_timeout"] == 20
    assert conf["accesslog"] is None  # access logs carry URLs: off by default
    assert conf["preload_app"] is False
    assert conf["control_socket_disable"] is True  # gunicorn 25.1+'s control socket stays closed
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
    assert config.worker_class_str == "cds_service.tools.buffered_worker.BufferingThreadWorker"
    assert config.worker_class.__name__ == "BufferingThreadWorker"   # gunicorn can load it

