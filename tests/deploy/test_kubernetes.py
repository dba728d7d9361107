"""deploy/kubernetes: schema-valid for Kubernetes 1.30, hardened, probed, and a config that loads.

Schemas: the `kubernetes-validate` package (dev dependency, 1.37.0), which ships the
Kubernetes JSON schemas for 1.25 to 1.37; validated strictly (unknown fields are errors)
against 1.30, the oldest version still in wide support whose API has everything used here
(seccomp and probe fields as used here). Rendering: `tests/deploy/kustomize.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from latchkey_server.config import load_settings
from latchkey_server.upstreams.vault import VaultAdapter
from tests.deploy.cli_args import parse_cli
from tests.deploy.kustomize import render
from tests.fixtures.vault import VaultServer
from tests.upstreams.vault.gateway_auth import JwtIssuer

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
BASE = KUBE / "base"
OVERLAY = KUBE / "overlays" / "example"
K8S_VERSION = "1.30.0"
GRPC_PORT = 7400
VAULT_AUDIENCE = "vault"


def _one(resources: list[dict[str, Any]], kind: str, name: str = "latchkey") -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def _pod(resources: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = _one(resources, "Deployment")["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay-example"])
def test_every_rendered_resource_is_valid_for_the_stated_kubernetes(directory: Path) -> None:
    resources = render(directory)
    kinds = sorted(r["kind"] for r in resources)
    for kind in ("ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"):
        assert kind in kinds
    for resource in resources:
        name = f"{resource['kind']}/{resource['metadata']['name']}"
        try:
            kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} is invalid for Kubernetes {K8S_VERSION}: {exc.message}")


def test_deployment_runs_replicas_behind_a_pdb_and_a_service() -> None:
    resources = render(BASE)
    deployment = _one(resources, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    pdb = _one(resources, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["minAvailable"] >= 1
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    service = _one(resources, "Service")
    assert service["spec"]["selector"] == selector
    (port,) = service["spec"]["ports"]
    container = _pod(resources)["containers"][0]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named[port["targetPort"]] == port["port"] == GRPC_PORT


def test_probes_run_the_shipped_health_probe_against_the_grpc_port() -> None:
    pod = _pod(render(BASE))
    container = pod["containers"][0]
    tls_mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["latchkey-server", "healthcheck"], probe
        params = parse_cli(command[1:])
        assert params["addr"] == f"127.0.0.1:{GRPC_PORT}", probe
        assert Path(params["cacert"]).parent == Path(tls_mount["mountPath"]), probe
        assert container[probe]["timeoutSeconds"] > params["timeout"], probe


def test_resources_have_requests_and_limits() -> None:
    container = _pod(render(BASE))["containers"][0]
    for bound in ("requests", "limits"):
        assert set(container["resources"][bound]) == {"cpu", "memory"}, bound


def test_pod_is_non_root_read_only_without_capabilities() -> None:
    pod = _pod(render(BASE))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_secrets_come_from_secret_objects() -> None:
    pod = _pod(render(BASE))
    container = pod["containers"][0]
    for env in container.get("env", []):  # only the pod's own name and IP (downward API)
        assert set(env) == {"name", "valueFrom"}, env
        assert set(env["valueFrom"]) == {"fieldRef"}, env
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "latchkey-tls"
    assert volumes["tokens"]["secret"]["secretName"] == "latchkey-tokens"
    assert volumes["config"]["configMap"]["name"] == "latchkey-config"
    assert volumes["policies"]["configMap"]["name"] == "latchkey-policies"
    for resource in render(OVERLAY):
        assert resource["kind"] != "Secret", "secret values never live in the manifests"


def test_vault_identity_is_a_projected_service_account_token() -> None:
    """No Vault credential is stored anywhere: the kubelet projects a short-lived token of the
    pod's service account for the audience "vault" only, and rotates it."""
    pod = _pod(render(BASE))
    assert pod["automountServiceAccountToken"] is False, "no Kubernetes API token"
    (source,) = _vault_token_volume(pod)["projected"]["sources"]
    token = source["serviceAccountToken"]
    assert token["audience"] == VAULT_AUDIENCE
    assert 600 <= token["expirationSeconds"] <= 3600, "Kubernetes' minimum; short-lived"
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "vault-token")
    assert mount["readOnly"] is True


def _vault_token_volume(pod: dict[str, Any]) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [v for v in pod["volumes"] if "projected" in v]
    (volume,) = volumes
    assert volume["name"] == "vault-token"
    return volume


@pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay-example"])
def test_config_map_and_environment_make_a_valid_gateway_config(
    directory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the pod sees — the file, the ConfigMap env, the Secret env — loads as settings."""
    resources = render(directory)
    pod = _pod(resources)
    container = pod["containers"][0]
    config_mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    args = container["args"]
    assert args[:2] == ["serve", "--config"]
    config_path = Path(args[2])
    assert config_path.parent == Path(config_mount["mountPath"])
    config = _one(resources, "ConfigMap", "latchkey-config")["data"][config_path.name]
    (tmp_path / "gateway.yaml").write_text(config)
    env_from = container["envFrom"][0]["configMapRef"]["name"]
    for name, value in _one(resources, "ConfigMap", env_from)["data"].items():
        monkeypatch.setenv(name, value)
    settings = load_settings(tmp_path / "gateway.yaml")
    assert settings.listen.endswith(f":{GRPC_PORT}")
    auth = settings.vault.auth
    assert auth.method == "jwt"
    assert auth.role
    token_mount = next(m for m in container["volumeMounts"] if m["name"] == "vault-token")
    (source,) = _vault_token_volume(pod)["projected"]["sources"]
    assert auth.jwt_file == Path(token_mount["mountPath"]) / source["serviceAccountToken"]["path"]
    tokens_mount = next(m for m in container["volumeMounts"] if m["name"] == "tokens")
    assert settings.auth.tokens_file is not None
    assert settings.auth.tokens_file.parent == Path(tokens_mount["mountPath"])


def test_overlay_sets_image_replicas_namespace_and_upstreams() -> None:
    base, overlay = render(BASE), render(OVERLAY)
    kustomization = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    container = _pod(overlay)["containers"][0]
    assert container["image"] == f"{image['newName']}:{image['newTag']}"
    (replicas,) = kustomization["replicas"]
    assert _one(overlay, "Deployment")["spec"]["replicas"] == replicas["count"] >= 2
    for resource in overlay:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == kustomization["namespace"]
    before = _one(base, "ConfigMap", "latchkey-upstreams")["data"]
    after = _one(overlay, "ConfigMap", "latchkey-upstreams")["data"]
    assert set(after) == set(before)
    for key in ("LATCHKEY_VAULT__ADDR", "LATCHKEY_CONSUL__ADDR", "LATCHKEY_VAULT__AUTH__MOUNT"):
        assert after[key] != before[key], key
    namespace = _one(overlay, "Namespace", kustomization["namespace"])
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_policies_config_map_matches_the_repository_without_dev() -> None:
    data = _one(render(BASE), "ConfigMap", "latchkey-policies")["data"]
    assert "dev.hcl" not in data
    assert '"dev"' not in data["bindings.hcl"]
    for name, text in data.items():
        if name != "bindings.hcl":
            assert text == (ROOT / "policies" / name).read_text(), f"{name} drifted from policies/"


async def test_the_pod_logs_in_to_a_real_vault_with_its_service_account_token(
    openbao_process: VaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overlay's settings log in to OpenBao configured as the README says: JWT auth trusting
    the cluster's signing key, a role bound to the pod's service account and audience. The
    kubelet's token is played by a JWT signed with that key, at the path the pod reads."""
    resources = render(OVERLAY)
    pod, namespace = _pod(resources), _one(resources, "Deployment")["metadata"]["namespace"]
    config = _one(resources, "ConfigMap", "latchkey-config")["data"]["gateway.yaml"]
    (tmp_path / "gateway.yaml").write_text(config)
    for name, value in _one(resources, "ConfigMap", "latchkey-upstreams")["data"].items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LATCHKEY_VAULT__ADDR", openbao_process.addr)
    settings = load_settings(tmp_path / "gateway.yaml")
    auth = settings.vault.auth
    assert auth.role is not None
    assert auth.jwt_file is not None
    # What the operator does in Vault (README "Deploy on Kubernetes").
    issuer, root = JwtIssuer(), openbao_process.client()
    subject = f"system:serviceaccount:{namespace}:{pod['serviceAccountName']}"
    root.sys.enable_auth_method("jwt", path=auth.mount_path)
    root.auth.jwt.configure(jwt_validation_pubkeys=[issuer.public_pem], path=auth.mount_path)
    root.sys.create_or_update_acl_policy(
        "latchkey-gateway", 'path "secret/data/*" { capabilities = ["read"] }'
    )
    root.write(
        f"auth/{auth.mount_path}/role/{auth.role}", role_type="jwt", user_claim="sub",
        bound_audiences=[VAULT_AUDIENCE], bound_subject=subject,
        token_policies=["latchkey-gateway"], token_ttl="1h", token_max_ttl="24h",
    )  # fmt: skip
    root.secrets.kv.v2.create_or_update_secret("app", {"k": "v"})
    # What the kubelet does: the token file, where the pod reads it (here under tmp_path).
    (source,) = _vault_token_volume(pod)["projected"]["sources"]
    token_file = tmp_path / auth.jwt_file.relative_to("/")
    token_file.parent.mkdir(parents=True)
    audience = source["serviceAccountToken"]["audience"]
    token_file.write_text(issuer.mint(subject, audience=audience))
    auth.jwt_file = token_file
    adapter = VaultAdapter.from_settings(settings.vault)
    try:
        assert (await adapter.read_kv("secret", "app")).data == {"k": "v"}
    finally:
        await adapter.close()


def test_each_pod_is_a_replica_with_an_id_of_its_own() -> None:
    """Two replicas with distinct ids: the pod name (unique among live pods), and the pod IP as
    the address each registers in Consul."""
    resources = render(BASE)
    assert _one(resources, "Deployment")["spec"]["replicas"] >= 2
    env = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
        for e in _pod(resources)["containers"][0]["env"]
    }
    assert env == {
        "LATCHKEY_REPLICA__ID": "metadata.name",
        "LATCHKEY_REPLICA__ADVERTISE_ADDRESS": "status.podIP",
    }
