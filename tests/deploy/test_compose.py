"""docker-compose.yml: valid Compose, health-checked, and consistent with the README and bootstrap.

Schema: the Compose Specification's JSON schema as shipped in the docker-compose 1.29.2 wheel on
PyPI (`compose/config/compose_spec.json`), unpacked into `.cache/schemas/` by
`scripts/fetch-schemas.sh` (which `make test` runs); validated with jsonschema (Draft 2019-09).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from tests.deploy.cli_args import parse_cli

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / ".cache" / "schemas" / "compose-spec-docker-compose-1.29.2.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def _published(service: dict[str, Any]) -> dict[int, tuple[str, int]]:
    """container port -> (host ip, host port)."""
    out: dict[int, tuple[str, int]] = {}
    for spec in service.get("ports", []):
        host_ip, host_port, container = str(spec).rsplit(":", 2)
        out[int(container)] = (host_ip, int(host_port))
    return out


def _mount(service: dict[str, Any], volume: str) -> Path:
    for spec in service["volumes"]:
        source, target, *_ = spec.split(":")
        if source == volume:
            return Path(target)
    raise AssertionError(f"volume {volume} is not mounted")


def _readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## Run with Docker Compose", 1)[1].split("\n## ", 1)[0]


def test_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    if not SCHEMA.exists():
        pytest.fail(
            f"{SCHEMA.relative_to(ROOT)} is missing: run `bash scripts/fetch-schemas.sh` "
            "(`make test` does)",
            pytrace=False,
        )
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert [f"{list(e.absolute_path)}: {e.message}" for e in errors] == []


def test_every_service_has_a_healthcheck_or_says_why_not(compose: dict[str, Any]) -> None:
    blocks = re.split(
        r"^  (?=[a-z][\w.-]*:\n)", COMPOSE.read_text().split("\nservices:\n")[1], flags=re.M
    )
    text_of = {block.split(":", 1)[0]: block for block in blocks if block.strip()}
    for name, service in _services(compose).items():
        check = service.get("healthcheck", {})
        if check.get("test") and not check.get("disable"):
            continue
        comments = [ln for ln in text_of[name].splitlines() if ln.strip().startswith("#")]
        assert any("healthcheck" in ln.lower() for ln in comments), f"{name}: no reason given"


def test_start_order_waits_on_health_and_completion(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            if rule["condition"] == "service_healthy":
                assert services[dependency]["healthcheck"]["test"], f"{name} -> {dependency}"
    assert services["latchkey"]["depends_on"]["bootstrap"] == {
        "condition": "service_completed_successfully"
    }
    for upstream in ("vault", "consul", "postgres"):
        assert services["bootstrap"]["depends_on"][upstream] == {"condition": "service_healthy"}


def test_upstreams_are_the_official_images_in_dev_mode(compose: dict[str, Any]) -> None:
    services = _services(compose)
    assert services["vault"]["image"].startswith("hashicorp/vault:")
    assert "-dev" in services["vault"]["command"]
    assert "IPC_LOCK" in services["vault"]["cap_add"]
    assert services["consul"]["image"].startswith("hashicorp/consul:")
    assert services["consul"]["command"] == ["agent", "-dev", "-client", "0.0.0.0"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    for name in ("bootstrap", "latchkey"):
        assert services[name]["build"]["dockerfile"] == "Dockerfile"


def test_bootstrap_arguments_match_the_services(compose: dict[str, Any]) -> None:
    """The bootstrap command parses with the real CLI and points at the compose services."""
    services = _services(compose)
    command = services["bootstrap"]["command"]
    assert command[0] == "bootstrap"
    args = parse_cli(command)
    vault = urlsplit(args["vault_addr"])
    vault_env = services["vault"]["environment"]
    assert (vault.hostname, vault.port) == ("vault", 8200)
    assert vault_env["VAULT_DEV_LISTEN_ADDRESS"].endswith(f":{vault.port}")
    assert args["vault_token"] == vault_env["VAULT_DEV_ROOT_TOKEN_ID"]
    assert args["consul_addr"] == "consul:8500"
    assert 8500 in _published(services["consul"])
    dsn = conninfo_to_dict(args["pg_dsn"])
    assert (dsn["host"], int(str(dsn["port"]))) == ("postgres", 5432)
    assert dsn["password"] == services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert dsn["user"] == services["postgres"]["environment"]["POSTGRES_USER"]


def test_gateway_reads_what_bootstrap_writes(compose: dict[str, Any]) -> None:
    services = _services(compose)
    boot, gateway = services["bootstrap"], services["latchkey"]
    args = parse_cli(boot["command"])
    state = _mount(boot, "latchkey-state")
    assert _mount(gateway, "latchkey-state") == state
    for key in ("tokens_file", "config_out", "tls_dir"):
        assert state in Path(args[key]).parents, key
    serve = parse_cli(gateway["command"])
    assert gateway["command"][0] == "serve"
    assert serve["config_path"] == args["config_out"]
    assert _mount(gateway, "./policies") == args["policies_dir"]
    listen_port = int(args["listen"].rsplit(":", 1)[1])
    assert listen_port in _published(gateway)
    probe = gateway["healthcheck"]["test"]
    assert probe[:3] == ["CMD", "latchkey-server", "healthcheck"]
    probe_args = parse_cli(probe[2:])
    assert probe_args["addr"] == f"127.0.0.1:{listen_port}"
    assert probe_args["cacert"] == args["tls_dir"] / "ca.crt"
    assert "latchkey" in args["tls_names"]


def test_readme_documents_the_services_and_ports(compose: dict[str, Any]) -> None:
    section = _readme_section()
    documented = {
        name: port
        for name, port in re.findall(r"^\| `([a-z0-9-]+)` \|[^|]*\| (`\d+`|—) \|", section, re.M)
    }
    services = _services(compose)
    assert set(documented) == set(services)
    for name, service in services.items():
        published = _published(service)
        if documented[name] == "—":
            assert published == {}, name
            continue
        (host_ip, host_port) = next(iter(published.values()))
        assert host_ip == "127.0.0.1", f"{name} is published beyond loopback"
        assert documented[name] == f"`{host_port}`", name
    exports = dict(re.findall(r"^export ([A-Z_]+)=(\S+)", section, re.M))
    exports |= dict(re.findall(r" ([A-Z_]+)=(\S+)$", section, re.M))
    assert exports["LATCHKEY_ADDR"] == f"127.0.0.1:{_published(services['latchkey'])[7400][1]}"
    assert exports["VAULT_TOKEN"] == services["vault"]["environment"]["VAULT_DEV_ROOT_TOKEN_ID"]
    assert exports["CONSUL_HTTP_ADDR"] == f"127.0.0.1:{_published(services['consul'])[8500][1]}"
    assert "docker compose up --build -d" in section
    assert "LATCHKEY_CACERT" in exports
