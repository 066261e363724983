#!/usr/bin/env python3
"""Check deploy/ offline: the Kubernetes manifests, the Dockerfile and the nginx snippet.

Every Kubernetes object (each file of deploy/k8s, and each overlay rendered by
`kubectl kustomize` when kubectl is installed) is checked field by field
against the models of the official `kubernetes` Python client: an unknown or
misspelt field, a value of the wrong type, or a missing required field is an
error. Then the rules docs/deploy.md promises are checked: at least three
replicas, `maxUnavailable: 0`, probes on /healthz and /readyz, a preStop sleep,
a termination grace longer than the preStop sleep plus the gateway's
`shutdown_grace_seconds`, a read-only root filesystem without privilege
escalation, a PodDisruptionBudget and an autoscaler aimed at the Deployment, a
Service selecting the pods. The Dockerfile must build in stages, run as a
non-root user, stop with SIGTERM and probe itself.

    python deploy/check.py              # exit 1 and a line per problem when something is wrong
    python deploy/check.py --self-test  # also show that broken copies are caught
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from kubernetes import client as k8s

ROOT = Path(__file__).resolve().parent
K8S = ROOT / "k8s"

# (apiVersion, kind) -> the client model that describes it.
MODELS = {
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("v1", "Service"): "V1Service",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2HorizontalPodAutoscaler",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
}

# A URL with a password in it (`scheme://user:password@host`), unless the
# password is a $(VARIABLE) that Kubernetes expands from a secret.
URL_WITH_PASSWORD = re.compile(r"://[^@/\s]*:(?!\$\()[^@/\s]+@")

KUSTOMIZATION_KEYS = {
    "apiVersion", "kind", "resources", "patches", "images", "labels", "configMapGenerator",
    "secretGenerator", "namespace", "namePrefix", "nameSuffix", "components",
}


def check_type(value, typ: str, path: str, errors: list[str]) -> None:
    """`value` against a client model type name ('V1PodSpec', 'list[V1Container]', 'str', …)."""
    if value is None or typ == "object":
        return
    if typ == "str":
        if not isinstance(value, str):
            errors.append(f"{path}: must be a string, not {value!r}")
        return
    if typ == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: must be an integer, not {value!r}")
        return
    if typ == "bool":
        if not isinstance(value, bool):
            errors.append(f"{path}: must be true or false, not {value!r}")
        return
    if typ == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            errors.append(f"{path}: must be a number, not {value!r}")
        return
    if typ == "datetime":
        return
    if typ.startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: must be a list")
            return
        for i, item in enumerate(value):
            check_type(item, typ[5:-1], f"{path}[{i}]", errors)
        return
    if typ.startswith("dict("):
        if not isinstance(value, dict):
            errors.append(f"{path}: must be a mapping")
            return
        inner = typ[5:-1].split(", ", 1)[1]
        for key, item in value.items():
            check_type(item, inner, f"{path}.{key}", errors)
        return
    model = getattr(k8s, typ)
    if not isinstance(value, dict):
        errors.append(f"{path}: must be a mapping ({typ})")
        return
    fields = {json_name: model.openapi_types[attr] for attr, json_name in model.attribute_map.items()}
    for key, item in value.items():
        if key not in fields:
            errors.append(f"{path}.{key}: not a field of {typ}")
            continue
        check_type(item, fields[key], f"{path}.{key}", errors)


def check_object(doc: dict, where: str, errors: list[str], partial: bool = False) -> None:
    """One Kubernetes object; `partial` for patches (required fields may be absent)."""
    model = MODELS.get((doc.get("apiVersion"), doc.get("kind")))
    if model is None:
        errors.append(f"{where}: unexpected apiVersion/kind {doc.get('apiVersion')}/{doc.get('kind')}")
        return
    before = len(errors)
    check_type(doc, model, f"{where}:{doc['kind']}", errors)
    if partial or len(errors) > before:
        return
    try:
        # Builds the model objects; required fields that are missing raise.
        k8s.ApiClient()._ApiClient__deserialize(doc, model)
    except ValueError as e:
        errors.append(f"{where}:{doc['kind']}: {e}")


def check_kustomization(doc: dict, path: Path, errors: list[str]) -> None:
    for key in doc:
        if key not in KUSTOMIZATION_KEYS:
            errors.append(f"{path}: {key}: not a kustomization field this project uses")
    for res in doc.get("resources", []):
        if not (path.parent / res).exists():
            errors.append(f"{path}: resources: {res} does not exist")
    for patch in doc.get("patches", []):
        if "path" in patch and not (path.parent / patch["path"]).exists():
            errors.append(f"{path}: patches: {patch['path']} does not exist")
    for gen in doc.get("configMapGenerator", []):
        for f in gen.get("files", []):
            if not (path.parent / f).exists():
                errors.append(f"{path}: configMapGenerator: {f} does not exist")


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def check_files(errors: list[str]) -> None:
    """Every YAML file of deploy/k8s on its own."""
    for path in sorted(K8S.rglob("*.yaml")):
        rel = path.relative_to(ROOT.parent)
        try:
            docs = load_all(path)
        except yaml.YAMLError as e:
            errors.append(f"{rel}: not YAML: {e}")
            continue
        # A patch is listed under some kustomization's `patches`.
        patch_names = set()
        kustomization = path.parent / "kustomization.yaml"
        if kustomization.exists() and path != kustomization:
            for p in (load_all(kustomization)[0] or {}).get("patches", []):
                if "path" in p:
                    patch_names.add(p["path"])
        for doc in docs:
            if path.name == "kustomization.yaml":
                check_kustomization(doc, path, errors)
            else:
                check_object(doc, str(rel), errors, partial=path.name in patch_names)


def render(overlay: Path) -> list[dict] | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return render_base() if overlay == K8S / "base" else None
    out = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay}: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def render_base() -> list[dict]:
    """The base without kubectl: its resources plus the generated ConfigMap (no labels added)."""
    base = K8S / "base"
    kustomization = load_all(base / "kustomization.yaml")[0]
    docs = [d for res in kustomization["resources"] for d in load_all(base / res)]
    for gen in kustomization.get("configMapGenerator", []):
        data = {Path(f).name: (base / f).read_text() for f in gen["files"]}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    return docs


def gateway_config(docs: list[dict]) -> dict:
    for d in docs:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("agentgate-config"):
            return tomllib.loads(d["data"]["agentgate.toml"])
    return {}


def check_rules(docs: list[dict], where: str, errors: list[str]) -> None:
    """What docs/deploy.md promises about a rendered deployment."""
    def err(message: str) -> None:
        errors.append(f"{where}: {message}")

    by_kind: dict[str, list[dict]] = {}
    before = len(errors)
    for d in docs:
        check_object(d, where, errors)
        by_kind.setdefault(d["kind"], []).append(d)
    if len(errors) > before:
        return  # the rules below read fields the schema check found wrong
    deployments = [d for d in by_kind.get("Deployment", []) if d["metadata"]["name"] == "agentgate"]
    if len(deployments) != 1:
        err("exactly one Deployment named agentgate")
        return
    dep = deployments[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    if spec.get("replicas", 1) < 3:
        err("Deployment: at least 3 replicas")
    rolling = spec.get("strategy", {}).get("rollingUpdate", {})
    if rolling.get("maxUnavailable") != 0:
        err("Deployment: strategy.rollingUpdate.maxUnavailable must be 0")
    gw = next((c for c in pod["containers"] if c["name"] == "agentgate"), None)
    if gw is None:
        err("Deployment: no container named agentgate")
        return
    for probe, want in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        if gw.get(probe, {}).get("httpGet", {}).get("path") != want:
            err(f"container: {probe} must GET {want}")
    sleep = gw.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    if not sleep:
        err("container: lifecycle.preStop.sleep.seconds must be set")
    config = gateway_config(docs)
    grace = config.get("server", {}).get("shutdown_grace_seconds", 30)
    termination = pod.get("terminationGracePeriodSeconds", 30)
    if termination <= (sleep or 0) + grace:
        err(
            f"pod: terminationGracePeriodSeconds ({termination}) must exceed the preStop "
            f"sleep ({sleep}) plus shutdown_grace_seconds ({grace})"
        )
    sc = gw.get("securityContext", {})
    if sc.get("readOnlyRootFilesystem") is not True:
        err("container: securityContext.readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        err("container: securityContext.allowPrivilegeEscalation must be false")
    if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
        err("pod: securityContext.runAsNonRoot must be true")
    ports = {p.get("name") for p in gw.get("ports", [])}
    if "http" not in ports:
        err("container: a port named http")
    if config and not config.get("server", {}).get("listen", "").endswith(":8080"):
        err("the config must listen on port 8080, the container port")
    mounts = {m["name"] for m in gw.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in mounts:
        if m not in volumes:
            err(f"container: volumeMount {m} has no volume")
    config_maps = {d["metadata"]["name"] for d in by_kind.get("ConfigMap", [])}
    for v in volumes.values():
        name = v.get("configMap", {}).get("name")
        if name and name not in config_maps:
            err(f"volume {v['name']}: no ConfigMap {name}")
    args = gw.get("args", [])
    if "--config" in args:
        path = args[args.index("--config") + 1]
        mounted = [m["mountPath"] for m in gw.get("volumeMounts", [])]
        if not any(path.startswith(p.rstrip("/") + "/") for p in mounted):
            err(f"--config {path} is not under a mounted volume")
    env = {e["name"]: e for e in gw.get("env", [])}
    if "AGENTGATE_CURSOR_KEYS" not in env and "AGENTGATE_CURSOR_KEYS_FILE" not in env:
        err("container: cursor keys (AGENTGATE_CURSOR_KEYS from a Secret)")
    for d in by_kind.get("Deployment", []):
        for c in d["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env", []):
                name, value = e["name"], e.get("value")
                if value is None:
                    continue
                if re.search(r"KEY|TOKEN|PASSWORD|SECRET", name) and name != "AGENTGATE__STORE__KIND":
                    err(f"env {name}: a secret must come from a Secret, not a literal value")
                elif URL_WITH_PASSWORD.search(value):
                    err(f"env {name}: a password in a literal URL; take it from a Secret")
            args = " ".join(c.get("args", []))
            if URL_WITH_PASSWORD.search(args):
                err(f"container {c['name']}: a password in a literal URL in its args")
    redis = [d for d in by_kind.get("Deployment", []) if d["metadata"]["name"] == "agentgate-redis"]
    for d in redis:
        args = d["spec"]["template"]["spec"]["containers"][0].get("args", [])
        if "--requirepass" not in args:
            err("the in-cluster Redis must require a password (--requirepass from the Secret)")
        policies = by_kind.get("NetworkPolicy", [])
        pod_labels = d["spec"]["template"]["metadata"].get("labels", {})
        if not any(
            all(pod_labels.get(k) == v for k, v in p["spec"]["podSelector"].get("matchLabels", {}).items())
            for p in policies
        ):
            err("a NetworkPolicy must limit who reaches the in-cluster Redis")
    selects = lambda sel: all(labels.get(k) == v for k, v in sel.items())  # noqa: E731
    services = by_kind.get("Service", [])
    if not any(s["metadata"]["name"] == "agentgate" and selects(s["spec"]["selector"]) for s in services):
        err("a Service agentgate selecting the gateway pods")
    pdbs = by_kind.get("PodDisruptionBudget", [])
    if not any(selects(p["spec"]["selector"]["matchLabels"]) for p in pdbs):
        err("a PodDisruptionBudget selecting the gateway pods")
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    if not any(h["spec"]["scaleTargetRef"]["name"] == "agentgate" and h["spec"].get("minReplicas", 1) >= 3 for h in hpas):
        err("a HorizontalPodAutoscaler on the agentgate Deployment with minReplicas >= 3")
    store = env.get("AGENTGATE__STORE__KIND", {}).get("value")
    if store == "redis" and "AGENTGATE__STORE__URL" not in env:
        err("the redis store needs AGENTGATE__STORE__URL")


def check_overlays(errors: list[str]) -> list[str]:
    rendered = []
    for overlay in [K8S / "base", *sorted((K8S / "overlays").iterdir())]:
        try:
            docs = render(overlay)
        except RuntimeError as e:
            errors.append(str(e))
            continue
        if docs is None:
            continue
        check_rules(docs, str(overlay.relative_to(ROOT.parent)), errors)
        rendered.append(overlay.name)
    return rendered


def check_dockerfile(text: str, errors: list[str]) -> None:
    lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines() if l.strip() and not l.strip().startswith("#")]
    stages = [l for l in lines if l.upper().startswith("FROM ")]
    if len(stages) < 2:
        errors.append("Dockerfile: a multi-stage build (a builder and a runtime stage)")
        return
    final = lines[lines.index(stages[-1]):]
    user = [l.split(None, 1)[1] for l in final if l.upper().startswith("USER ")]
    if not user or user[-1].split(":")[0] in ("root", "0"):
        errors.append("Dockerfile: the runtime stage must set a non-root USER")
    if "STOPSIGNAL SIGTERM" not in final:
        errors.append("Dockerfile: STOPSIGNAL SIGTERM in the runtime stage")
    health = [l for l in final if l.upper().startswith("HEALTHCHECK ")]
    if not health or "probe" not in health[-1]:
        errors.append("Dockerfile: a HEALTHCHECK that runs `agentgate probe`")
    if not any("cargo chef cook" in l for l in lines):
        errors.append("Dockerfile: the dependency layer is built on its own (cargo chef cook)")
    for l in lines:
        m = re.match(r"COPY\s+(?!--from)(\S+)\s+(\S+)", l)
        if m and m.group(1) != "." and not (ROOT.parent / m.group(1)).exists():
            errors.append(f"Dockerfile: COPY {m.group(1)}: no such file in the repository")
    env = dict(re.findall(r"ENV\s+(\w+)=(\S+)", "\n".join(final)))
    copied = [re.match(r"COPY\s+\S+\s+(\S+)", l).group(1) for l in final if re.match(r"COPY\s+(?!--from)", l)]
    if env.get("AGENTGATE_CONFIG") not in copied:
        errors.append("Dockerfile: AGENTGATE_CONFIG must name the config the image copies")


def check_nginx(text: str, errors: list[str]) -> None:
    for want in (
        "proxy_buffering off",
        "proxy_read_timeout",
        "proxy_next_upstream error timeout non_idempotent",
        "proxy_next_upstream_tries",
        "proxy_http_version 1.1",
    ):
        if want not in text:
            errors.append(f"nginx: {want!r} missing from deploy/nginx/agentgate-proxy.conf")


def run_checks(root_files: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    check_files(errors)
    rendered = check_overlays(errors)
    files = root_files or {
        "Dockerfile": (ROOT / "Dockerfile").read_text(),
        "nginx": (ROOT / "nginx" / "agentgate-proxy.conf").read_text(),
    }
    check_dockerfile(files["Dockerfile"], errors)
    check_nginx(files["nginx"], errors)
    return errors, rendered


def self_test() -> list[str]:
    """Broken copies must be caught; returns the cases that were not."""
    missed = []
    docs = render(K8S / "base")
    if docs is not None:
        def broken(mutate, expect: str) -> None:
            copy_ = copy.deepcopy(docs)
            dep = next(d for d in copy_ if d["kind"] == "Deployment")
            mutate(dep)
            errors: list[str] = []
            check_rules(copy_, "self-test", errors)
            if not any(expect in e for e in errors):
                missed.append(f"{expect!r} not reported; got {errors}")

        broken(lambda d: d["spec"].__setitem__("replica", 3), "spec.replica: not a field of V1DeploymentSpec")
        broken(lambda d: d["spec"].__setitem__("replicas", "3"), "spec.replicas: must be an integer")
        broken(lambda d: d["spec"].__setitem__("replicas", 2), "at least 3 replicas")
        broken(lambda d: d["spec"]["strategy"]["rollingUpdate"].__setitem__("maxUnavailable", 1), "maxUnavailable must be 0")
        broken(lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe"), "readinessProbe must GET /readyz")
        broken(lambda d: d["spec"]["template"]["spec"].__setitem__("terminationGracePeriodSeconds", 30), "must exceed the preStop")
        broken(lambda d: d["spec"]["template"]["spec"]["containers"][0]["securityContext"].pop("readOnlyRootFilesystem"), "readOnlyRootFilesystem")
        broken(lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"), "`name`, must not be `None`")
        broken(lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "OPENAI_API_KEY", "value": "sk-x"}), "must come from a Secret")
        broken(lambda d: d["spec"].pop("selector"), "`selector`, must not be `None`")
        broken(
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"].append(
                {"name": "AGENTGATE__STORE__URL", "value": "redis://:hunter2@redis:6379"}),
            "a password in a literal URL",
        )
    good = (ROOT / "Dockerfile").read_text()
    for text, expect in (
        (good.replace("USER 65532:65532", "USER root"), "non-root USER"),
        (good.replace("STOPSIGNAL SIGTERM", ""), "STOPSIGNAL"),
        (good.replace("deploy/config/agentgate.toml", "deploy/config/missing.toml"), "no such file"),
    ):
        errors: list[str] = []
        check_dockerfile(text, errors)
        if not any(expect in e for e in errors):
            missed.append(f"Dockerfile: {expect!r} not reported; got {errors}")
    errors = []
    check_nginx("proxy_buffering on;", errors)
    if not any("proxy_buffering off" in e for e in errors):
        missed.append("nginx: proxy_buffering not reported")
    return missed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--self-test", action="store_true", help="also check that broken copies are caught")
    args = parser.parse_args()
    errors, rendered = run_checks()
    for e in errors:
        print(f"problem: {e}")
    if shutil.which("kubectl"):
        print(f"rendered with kubectl kustomize and checked: {', '.join(rendered)}")
    else:
        print("kubectl not found: each file checked alone, the base assembled here, overlays not rendered")
    if args.self_test:
        missed = self_test()
        for m in missed:
            print(f"self-test: {m}")
        if missed:
            return 1
        print("self-test: every broken copy was caught")
    if errors:
        return 1
    print("deploy/: no problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
