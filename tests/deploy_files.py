"""Readers for the deployment files (compose, nginx, Kubernetes) used by the static tests.

Why static: no Docker engine or cluster runs in CI, so what matters to an operator — files
that parse, names that exist, settings the service really reads — is checked by reading.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cds_service.runtime.settings import load_settings, registry

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"
COMPOSE_FILES = ("compose.yaml", "compose.scale.yaml")
SETTING_NAMES = frozenset(f.metadata["env"] for f in registry())
# Read by docker/gunicorn.conf.py, not by the app's settings registry.
GUNICORN_ENV = frozenset({"WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", "GUNICORN_LOG_LEVEL"})
PROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def compose(name: str) -> dict:
    return yaml.safe_load((DOCKER / name).read_text())


def spine_cds_services(doc: dict) -> dict[str, dict]:
    """Services that run our image (built from docker/Dockerfile)."""
    return {name: s for name, s in doc["services"].items() if "build" in s}


_VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def interpolate(value: str) -> str:
    """Resolve compose ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}`` as
    compose would with none of the variables set, except that required ones get a stand-in."""

    def one(match: re.Match) -> str:
        text = match.group(0)[2:-1]
        name, rest = match.group(1), text[len(match.group(1)):]
        if rest.startswith((":?", "?")):
            return f"stand-in-{name.lower()}"
        return rest.split("-", 1)[1] if rest.startswith((":-", "-")) else ""

    return _VARIABLE.sub(one, str(value))


def settings_of(environment: dict) -> object:
    """The service's settings as it would load them (raises CdsConfigError when one is bad)."""
    return load_settings({k: interpolate(v) for k, v in environment.items() if k in SETTING_NAMES})


def image_version(image: str) -> tuple[int, ...]:
    """``name:v8.8.0-1`` -> (8, 8, 0); refuses untagged and ``latest`` images."""
    name, _, tag = image.rpartition(":")
    assert name and "/" not in tag, f"{image} has no tag: pin one"
    numbers = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", tag)
    assert numbers, f"{image}: tag {tag!r} is not a version (never latest or a floating name)"
    return tuple(int(n) for n in numbers.groups() if n is not None)


@dataclass
class Directive:
    """One nginx directive: its name, arguments and (for a block) the directives inside."""

    name: str
    args: list[str]
    children: list[Directive] = field(default_factory=list)

    def find(self, name: str) -> list[Directive]:
        """Every directive called ``name`` in this block or any block inside it."""
        found = [d for d in self.children if d.name == name]
        return found + [hit for d in self.children for hit in d.find(name)]


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|#[^\n]*|[{};]|[^\s{};"\']+')


def nginx_conf(path: Path) -> Directive:
    """Parse nginx's configuration syntax (directives, blocks, quotes, comments) into a tree."""
    root = Directive("main", [])
    stack, words = [root], []
    for token in _TOKEN.findall(path.read_text()):
        if token.startswith("#"):
            continue
        if token == ";":
            stack[-1].children.append(Directive(words[0], words[1:]))
            words = []
        elif token == "{":
            block = Directive(words[0], words[1:])
            stack[-1].children.append(block)
            stack.append(block)
            words = []
        elif token == "}":
            assert not words, f"{path.name}: directive {words} lacks its ';'"
            stack.pop()
            assert stack, f"{path.name}: unbalanced '}}'"
        else:
            words.append(token.strip("\"'"))
    assert len(stack) == 1 and not words, f"{path.name}: unclosed block or directive"
    return root


def k8s_documents() -> list[dict]:
    """Every manifest of docker/k8s listed by its kustomization, in order."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def k8s(kind: str, docs: list[dict] | None = None) -> list[dict]:
    return [d for d in (docs or k8s_documents()) if d["kind"] == kind]
