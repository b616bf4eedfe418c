"""Every Istio manifest shipped in istio/ and every `pepctl render istio` output, validated as a
cluster would take them:

- Istio's kinds against the schemas of Istio's published CRDs, as the PyPI package
  cloudcoil-models-istio carries them (pydantic models generated from the CRDs' OpenAPI schemas:
  types, enums, patterns, required fields), with unknown fields refused (the API server prunes
  them silently: a misspelt `principles` would vanish);
- Kubernetes' own kinds against Kubernetes' OpenAPI schemas in their strict form (no unknown
  fields), as the PyPI package kubernetes-validate carries them, for the oldest Kubernetes the
  manifests support (1.29, native sidecars) and the newest the package knows;
- what no schema sees, and what made the previous manifests fail in a mesh: wildcards that Istio
  matches only at the start or the end of a value, the sidecar injection label, the start-up
  order of pepctl's init containers, and the wiring between the objects: the filter's
  `as_cluster` is made by a ServiceEntry and is TLS to the AS that verifies it (DestinationRule:
  SIMPLE, CA, SNI, subject alt name), its `resource_sync` cluster is pepctl's Service, and
  pepctl's AuthorizationPolicy lets the filter's namespace read /filter-config.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from support.pepctl import PEPCTL
from support.processes import ROOT

try:
    import kubernetes_validate
    from cloudcoil.models.istio.extensions import v1alpha1 as istio_extensions
    from cloudcoil.models.istio.networking import v1 as istio_networking
    from cloudcoil.models.istio.networking import v1alpha3 as istio_networking_v1alpha3
    from cloudcoil.models.istio.security import v1 as istio_security
    from pydantic import ValidationError as PydanticError

    MISSING = None
    KUBERNETES_VERSIONS = ["1.29", kubernetes_validate.utils.latest_version()]
    ISTIO_KINDS = {
        ("extensions.istio.io/v1alpha1", "WasmPlugin"): istio_extensions.WasmPlugin,
        ("networking.istio.io/v1", "ServiceEntry"): istio_networking.ServiceEntry,
        ("networking.istio.io/v1", "DestinationRule"): istio_networking.DestinationRule,
        ("networking.istio.io/v1alpha3", "EnvoyFilter"): istio_networking_v1alpha3.EnvoyFilter,
        ("security.istio.io/v1", "AuthorizationPolicy"): istio_security.AuthorizationPolicy,
    }
except ImportError as e:  # each test fails saying so (never skipped, never the whole session)
    MISSING = str(e)


@pytest.fixture(autouse=True)
def _schema_packages():
    if MISSING:
        pytest.fail(f"{MISSING}: the schema packages are missing; `make tools` installs them "
                    "(cloudcoil-models-istio, kubernetes-validate)", pytrace=False)


ISTIO_DIR = ROOT / "istio"
KUBERNETES_KINDS = {"Namespace", "ServiceAccount", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"}


# ---------------------------------------------------------------------------------------------
# Schema validation


def _dropped(given, kept, path: str) -> list[str]:
    """Keys of `given` that the model did not keep: fields the schema does not have."""
    out: list[str] = []
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [path or "."]
        for k, v in given.items():
            if k not in kept:
                out.append(f"{path}.{k}" if path else k)
            else:
                out += _dropped(v, kept[k], f"{path}.{k}" if path else k)
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (g, k) in enumerate(zip(given, kept)):
            out += _dropped(g, k, f"{path}[{i}]")
    return out


def schema_errors(doc: dict) -> list[str]:
    """What the cluster's API server would refuse (or silently drop) in one object."""
    kind = (doc.get("apiVersion"), doc.get("kind"))
    name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
    if kind in ISTIO_KINDS:
        model = ISTIO_KINDS[kind]
        try:
            parsed = model.model_validate(doc)
        except PydanticError as e:
            return [f"{name}: {err['loc']}: {err['msg']}" for err in e.errors()]
        kept = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return [f"{name}: unknown field {p}" for p in _dropped(doc, kept, "")]
    if doc.get("kind") in KUBERNETES_KINDS:
        errors = []
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                errors.append(f"{name} (Kubernetes {version}): {'.'.join(map(str, e.path))}: {e.message}")
        return errors
    return [f"{name}: {doc.get('apiVersion')} {doc.get('kind')} is not a kind these manifests should hold"]


# ---------------------------------------------------------------------------------------------
# What the schemas cannot see


def wildcard_errors(doc: dict) -> list[str]:
    """Istio matches `*` in an AuthorizationPolicy only alone, as a prefix (`abc*`) or as a
    suffix (`*abc`): anywhere else it is a literal character and the rule matches nobody."""
    if doc.get("kind") != "AuthorizationPolicy":
        return []
    errors = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif isinstance(node, str) and "*" in node:
            if node != "*" and (node.count("*") > 1 or node.strip("*") != node.replace("*", "")
                                 or not (node.startswith("*") or node.endswith("*"))):
                errors.append(f"AuthorizationPolicy/{doc['metadata']['name']}{path}: {node!r} has `*` "
                              "where Istio does not match it (only alone, at the start or at the end)")

    walk(doc.get("spec", {}).get("rules", []), ".spec.rules")
    return errors


def istio_value_matches(pattern: str, value: str) -> bool:
    """Istio's string match in an AuthorizationPolicy."""
    if pattern == "*":
        return bool(value)
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return pattern == value


def _field_matches(patterns, value) -> bool:
    return patterns is None or any(istio_value_matches(p, value) for p in patterns)


def authorization_allows(policies: list[dict], labels: dict, source: dict, method: str, path: str) -> bool:
    """Whether ALLOW policies selecting a workload with `labels` admit a request. A source is
    `{"namespace": ns, "principal": "cluster.local/ns/<ns>/sa/<sa>"}` (mTLS)."""
    selecting = [p for p in policies
                 if all(labels.get(k) == v for k, v in
                        ((p["spec"].get("selector") or {}).get("matchLabels") or {}).items())]
    assert all(p["spec"].get("action", "ALLOW") == "ALLOW" for p in selecting), "only ALLOW policies are modelled"
    for policy in selecting:
        for rule in policy["spec"].get("rules") or [{}]:
            froms = [f["source"] for f in rule.get("from", [])] or [{}]
            tos = [t["operation"] for t in rule.get("to", [])] or [{}]
            if any(_field_matches(s.get("namespaces"), source["namespace"])
                   and _field_matches(s.get("principals"), source["principal"]) for s in froms) \
                    and any(_field_matches(o.get("methods"), method) and _field_matches(o.get("paths"), path)
                            for o in tos):
                return True
    return False


def _cluster(value: str) -> tuple[int, str]:
    m = re.fullmatch(r"outbound\|(\d+)\|\|(.+)", value)
    assert m, f"{value!r} is not an Istio outbound cluster name"
    return int(m.group(1)), m.group(2)


def _filter_of(doc: dict) -> tuple[dict, str, dict] | None:
    """(filter configuration, namespace, workload labels) of a WasmPlugin or an EnvoyFilter."""
    ns = doc["metadata"].get("namespace", "default")
    if doc["kind"] == "WasmPlugin":
        return doc["spec"]["pluginConfig"], ns, doc["spec"]["selector"]["matchLabels"]
    if doc["kind"] == "EnvoyFilter":
        patch = doc["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
        return json.loads(patch["configuration"]["value"]), ns, doc["spec"]["workloadSelector"]["labels"]
    return None


def tls_to_as_errors(docs: list[dict]) -> list[str]:
    """The filter's AS cluster exists in its proxies and carries TLS that verifies the AS."""
    errors = []
    for doc in docs:
        found = _filter_of(doc)
        if not found:
            continue
        cfg, ns, labels = found
        port, host = _cluster(cfg["as_cluster"])
        where = f"{doc['kind']}/{doc['metadata']['name']} as_cluster {cfg['as_cluster']}"
        entries = [d for d in docs if d["kind"] == "ServiceEntry" and d["metadata"]["namespace"] == ns
                   and host in d["spec"]["hosts"] and any(p["number"] == port for p in d["spec"]["ports"])]
        if not entries:
            errors.append(f"{where}: no ServiceEntry in {ns} makes it (host {host}, port {port})")
            continue
        se_port = next(p for p in entries[0]["spec"]["ports"] if p["number"] == port)
        if se_port["protocol"] != "HTTP":
            errors.append(f"{where}: the ServiceEntry port is {se_port['protocol']}; the filter sends HTTP")
        rules = [d for d in docs if d["kind"] == "DestinationRule" and d["metadata"]["namespace"] == ns
                 and d["spec"]["host"] == host]
        tls = None
        for dr in rules:
            selector = (dr["spec"].get("workloadSelector") or {}).get("matchLabels") or {}
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            policy = dr["spec"].get("trafficPolicy", {})
            for level in policy.get("portLevelSettings", []):
                if level["port"]["number"] == port and "tls" in level:
                    tls = level["tls"]
            tls = tls or policy.get("tls")
        if tls is None:
            errors.append(f"{where}: no DestinationRule in {ns} for the filter's workloads originates TLS")
            continue
        if tls.get("mode") != "SIMPLE":
            errors.append(f"{where}: tls.mode is {tls.get('mode')}, not SIMPLE")
        if tls.get("insecureSkipVerify"):
            errors.append(f"{where}: insecureSkipVerify")
        if not (tls.get("caCertificates") or tls.get("credentialName")):
            errors.append(f"{where}: neither caCertificates nor credentialName: the AS is not verified")
        if tls.get("sni") != host:
            errors.append(f"{where}: sni {tls.get('sni')!r} is not {host!r}")
        if host not in (tls.get("subjectAltNames") or []):
            errors.append(f"{where}: subjectAltNames {tls.get('subjectAltNames')} lack {host!r}")
    return errors


def resource_sync_errors(docs: list[dict], pepctl_docs: list[dict]) -> list[str]:
    """The filter's resource_sync cluster is pepctl's Service, and pepctl admits the filter."""
    errors = []
    services = {f"{d['metadata']['name']}.{d['metadata']['namespace']}.svc.cluster.local": d
                for d in pepctl_docs if d["kind"] == "Service"}
    deployment = next(d for d in pepctl_docs if d["kind"] == "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    policies = [d for d in pepctl_docs if d["kind"] == "AuthorizationPolicy"]
    for doc in docs:
        found = _filter_of(doc)
        if not found or "resource_sync" not in found[0]:
            continue
        cfg, ns, _ = found
        port, host = _cluster(cfg["resource_sync"]["cluster"])
        where = f"{doc['kind']}/{doc['metadata']['name']} resource_sync {cfg['resource_sync']['cluster']}"
        service = services.get(host)
        if not service or not any(p["port"] == port for p in service["spec"]["ports"]):
            errors.append(f"{where}: istio/pepctl.yaml has no Service port for it")
            continue
        if service["spec"]["selector"].items() - pod_labels.items():
            errors.append(f"{where}: the Service does not select pepctl's pods")
        source = {"namespace": ns, "principal": f"cluster.local/ns/{ns}/sa/default"}
        if not authorization_allows(policies, pod_labels, source, "GET", cfg["resource_sync"]["path"]):
            errors.append(f"{where}: pepctl's AuthorizationPolicy refuses GET {cfg['resource_sync']['path']} "
                          f"from the namespace {ns}")
    return errors


def mesh_errors(docs: list[dict]) -> list[str]:
    """Sidecar injection on each namespace, and pepctl's init containers after the proxy."""
    errors = []
    for d in docs:
        if d["kind"] == "Namespace":
            labels = d["metadata"].get("labels") or {}
            if labels.get("istio-injection") != "enabled" and "istio.io/rev" not in labels:
                errors.append(f"Namespace/{d['metadata']['name']}: no sidecar injection label")
        if d["kind"] == "Deployment":
            template = d["spec"]["template"]
            notes = template["metadata"].get("annotations") or {}
            if template["spec"].get("initContainers") and notes.get("sidecar.istio.io/nativeSidecar") != "true":
                errors.append(f"Deployment/{d['metadata']['name']}: init containers would run before the "
                              "proxy (no sidecar.istio.io/nativeSidecar)")
            proxy = json.loads(notes.get("proxy.istio.io/config", "{}"))
            if proxy.get("holdApplicationUntilProxyStarts") is not True:
                errors.append(f"Deployment/{d['metadata']['name']}: holdApplicationUntilProxyStarts is not set")
    return errors


def all_errors(docs: list[dict], pepctl_docs: list[dict]) -> list[str]:
    errors = []
    for d in docs:
        errors += schema_errors(d) + wildcard_errors(d)
    return errors + mesh_errors(docs) + tls_to_as_errors(docs) + resource_sync_errors(docs, pepctl_docs)


def load(text: str) -> list[dict]:
    docs = []
    for d in yaml.safe_load_all(text):
        if d is None:
            continue
        docs += d["items"] if d.get("kind") == "List" else [d]
    return docs


def shipped() -> dict[str, list[dict]]:
    return {p.name: load(p.read_text()) for p in sorted(ISTIO_DIR.glob("*.yaml"))}


def render_istio(tmp_path: Path, *flags: str) -> list[dict]:
    client = tmp_path / "client.json"
    client.write_text(json.dumps({"client_id": "pep-client", "client_secret": "s3cret"}))
    client.chmod(0o600)
    p = subprocess.run([str(PEPCTL), "--issuer", "https://keycloak.example.org/realms/eoepca", "--profile",
                        "keycloak", "--client", str(client), "--db", str(tmp_path / "pepctl.db"),
                        "render", "istio", *flags], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    return load(p.stdout)


# ---------------------------------------------------------------------------------------------
# The tests


def test_every_shipped_istio_manifest_is_valid_and_wired():
    files = shipped()
    assert {"pepctl.yaml", "wasmplugin.yaml", "envoyfilter.yaml"} <= set(files)
    everything = [d for docs in files.values() for d in docs]
    errors = all_errors(everything, files["pepctl.yaml"])
    assert not errors, "\n".join(errors)
    # Each file alone holds what it needs (applied one by one, as docs/istio.md says).
    for name, docs in files.items():
        assert not all_errors(docs, files["pepctl.yaml"]), name


RENDERINGS = {
    "plugin only": ["--namespace", "apps", "--wasm-url", "oci://registry.example.org/uma-pep:0.1.0"],
    "with the AS service entry": ["--namespace", "apps", "--selector", "app=my-api", "--with-as-service-entry",
                                  "--wasm-url", "oci://registry.example.org/uma-pep@sha256:" + "ab" * 32,
                                  "--wasm-sha256", "ab" * 32, "--unmatched", "deny",
                                  "--sync-url", "http://pepctl.uma-pep.svc.cluster.local:5576"],
    "private CA and AS address, JSON": ["--namespace", "apps", "--with-as-service-entry", "--as-credential-name",
                                        "keycloak-ca", "--as-address", "keycloak.keycloak.svc.cluster.local:8443",
                                        "--wasm-url", "https://artifacts.example.org/uma_pep.wasm", "--json"],
    "custom CA file, gateway": ["--namespace", "istio-system", "--selector", "istio=ingressgateway",
                                "--with-as-service-entry", "--as-ca-certificates", "/etc/istio/as-ca/ca.pem",
                                "--wasm-url", "file:///opt/uma_pep.wasm"],
}


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_render_istio_output_is_valid(tmp_path, name):
    docs = render_istio(tmp_path, *RENDERINGS[name])
    kinds = [d["kind"] for d in docs]
    with_se = "--with-as-service-entry" in RENDERINGS[name]
    assert kinds == (["WasmPlugin", "ServiceEntry", "DestinationRule"] if with_se else ["WasmPlugin"])
    errors = []
    for d in docs:
        errors += schema_errors(d)
    if with_se:
        errors += tls_to_as_errors(docs)
    if "--sync-url" in RENDERINGS[name]:
        errors += resource_sync_errors(docs, shipped()["pepctl.yaml"])
    assert not errors, "\n".join(errors)


def test_without_the_service_entry_nothing_makes_the_as_cluster(tmp_path):
    """Why --with-as-service-entry exists: the WasmPlugin alone names a cluster no one makes."""
    errors = tls_to_as_errors(render_istio(tmp_path, *RENDERINGS["plugin only"]))
    assert errors and "no ServiceEntry" in errors[0]


def _pepctl_docs() -> list[dict]:
    return shipped()["pepctl.yaml"]


def _policy(docs: list[dict]) -> dict:
    return next(d for d in docs if d["kind"] == "AuthorizationPolicy")


def test_the_checks_refuse_what_broke_the_previous_manifests():
    """Each check fails on the mistake it is for (the first three are those of the previous
    istio/pepctl.yaml and istio/wasmplugin.yaml)."""
    docs = _pepctl_docs()
    # 1. principals with `*` in the middle: matches nobody, /filter-config unreachable.
    old = json.loads(json.dumps(docs))
    _policy(old)["spec"]["rules"][1]["from"] = [{"source": {"principals": ["cluster.local/ns/*/sa/*"]}}]
    errors = all_errors(old, old)
    assert any("where Istio does not match it" in e for e in errors), errors
    assert any("refuses GET /filter-config" in e for e in
               resource_sync_errors(load((ISTIO_DIR / "wasmplugin.yaml").read_text()), old)), errors
    # 2. no injection label on the namespace.
    old = json.loads(json.dumps(docs))
    next(d for d in old if d["kind"] == "Namespace")["metadata"].pop("labels")
    assert any("no sidecar injection label" in e for e in mesh_errors(old))
    # 3. the WasmPlugin without a ServiceEntry and DestinationRule for its as_cluster.
    plugin = [d for d in load((ISTIO_DIR / "wasmplugin.yaml").read_text()) if d["kind"] == "WasmPlugin"]
    assert any("no ServiceEntry" in e for e in tls_to_as_errors(plugin))
    # 4. init containers started before a classic sidecar.
    old = json.loads(json.dumps(docs))
    next(d for d in old if d["kind"] == "Deployment")["spec"]["template"]["metadata"].pop("annotations")
    assert len([e for e in mesh_errors(old) if "Deployment/pepctl" in e]) == 2


def test_the_schemas_refuse_unknown_fields_wrong_types_and_unverified_tls():
    rendered = load((ISTIO_DIR / "wasmplugin.yaml").read_text())
    plugin, entry, rule = (json.loads(json.dumps(d)) for d in rendered)
    plugin["spec"]["failStrategy"] = "FAIL_OPEN_PLEASE"
    plugin["spec"]["sha256"] = "not-a-digest"
    assert len(schema_errors(plugin)) == 2, schema_errors(plugin)
    typo = json.loads(json.dumps(entry))
    typo["spec"]["hostz"] = ["typo.example.org"]
    assert schema_errors(typo) == ["ServiceEntry/uma-pep-as: unknown field spec.hostz"]
    bad_port = json.loads(json.dumps(entry))
    bad_port["spec"]["ports"][0]["number"] = "four-four-three"
    assert any("number" in e for e in schema_errors(bad_port))
    tls = rule["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"]
    tls.pop("caCertificates")
    tls["sni"] = "other.example.org"
    errors = tls_to_as_errors([plugin, entry, rule])
    assert any("not verified" in e for e in errors) and any("sni" in e for e in errors), errors
    policy = json.loads(json.dumps(_policy(_pepctl_docs())))
    policy["spec"]["rules"][1]["from"][0]["source"]["principles"] = ["x"]
    assert any("principles" in e for e in schema_errors(policy))
    deployment = json.loads(json.dumps(next(d for d in _pepctl_docs() if d["kind"] == "Deployment")))
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    errors = schema_errors(typo)
    assert len(errors) == 2 and all("'volumeMount' was unexpected" in e for e in errors), errors
    deployment["spec"]["replicas"] = "one"
    assert any("spec.replicas" in e for e in schema_errors(deployment))


def test_the_authorization_model_matches_istio():
    assert istio_value_matches("cluster.local/ns/apps/sa/*", "cluster.local/ns/apps/sa/api")
    assert not istio_value_matches("cluster.local/ns/*/sa/*", "cluster.local/ns/apps/sa/api")
    assert istio_value_matches("*/sa/api", "cluster.local/ns/apps/sa/api")
    assert istio_value_matches("/resources/*", "/resources/abc")
    assert not istio_value_matches("/resources/*", "/filter-config")
    policies = [_policy(_pepctl_docs())]
    labels = {"app": "pepctl"}
    apps = {"namespace": "apps", "principal": "cluster.local/ns/apps/sa/default"}
    other = {"namespace": "elsewhere", "principal": "cluster.local/ns/elsewhere/sa/default"}
    assert authorization_allows(policies, labels, apps, "GET", "/filter-config")
    assert not authorization_allows(policies, labels, other, "GET", "/filter-config")
    assert not authorization_allows(policies, labels, apps, "POST", "/filter-config")
    assert authorization_allows(policies, labels, other, "GET", "/resources/x")
    assert not authorization_allows(policies, labels, other, "GET", "/admin")
