"""Shared pieces of the chart tests: the repository's tools, values that render, the rendered
objects, and a stand-in for the kubelet that lays out one container's mounts on disk.

Every tool these tests need is looked up here and its absence is an error, never a skip:
the Helm SDK (helm-python-sdk), the Kubernetes schemas (kubernetes-validate), Envoy
(.venv/bin/envoy), the release runner (target/release/portcullis) and the built filter.
"""

from __future__ import annotations

import atexit
import base64
import copy
import functools
import os
import pathlib
import shutil
import subprocess
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "portcullis"
ENVOY = ROOT / ".venv" / "bin" / "envoy"
PORTCULLIS = ROOT / "target" / "release" / "portcullis"
WASM = ROOT / "target" / "wasm32-wasip1" / "wasm" / "portcullis_filter.wasm"
RELEASE = "pc"
NAMESPACE = "portcullis"
TRUST_DOMAIN = "portcullis.local"

try:
    import helm_python as helm
except ImportError as e:  # a missing tool fails, it never skips
    raise SystemExit(f"chart tests: helm-python-sdk is missing ({e}); run scripts/setup.sh") from e


_TEMP: list[pathlib.Path] = []
atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _TEMP])


def tempdir(prefix: str) -> pathlib.Path:
    d = pathlib.Path(tempfile.mkdtemp(prefix=prefix))
    _TEMP.append(d)
    return d


def need(path: pathlib.Path, how: str) -> pathlib.Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {how}")
    return path


def sha256_file(path: pathlib.Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.cache
def pki() -> pathlib.Path:
    """A throwaway dev PKI (CA, gateway and runner SVIDs, agents, ticket key pair), made by the
    runner's own `portcullis certs`."""
    need(PORTCULLIS, "build it with `make runner`")
    out = tempdir("portcullis-chart-pki-")
    subprocess.run([str(PORTCULLIS), "certs", "--dir", str(out), "--trust-domain", TRUST_DOMAIN],
                   check=True, capture_output=True)
    return out


def policy_files() -> dict[str, str]:
    files = {}
    for p in sorted((ROOT / "policies").iterdir()):
        if (p.suffix == ".rego" and not p.name.endswith("_test.rego")) or p.name == "data.json":
            files[p.name] = p.read_text()
    return files


def values(proxy: str = "istio", **overrides) -> dict:
    """Values an operator would give, with the repository's bundle and catalog and the dev PKI's
    keys; `overrides` are deep-merged (dotted keys: {"istio.version": "1.26.0"})."""
    certs = pki()
    v = {
        "proxy": proxy,
        "istio": {"version": "1.29.0", "agentPrincipals": [f"{TRUST_DOMAIN}/ns/agents/sa/reader",
                                                           f"{TRUST_DOMAIN}/ns/agents/sa/operator"]},
        "envoy": {"trustDomains": [{"name": TRUST_DOMAIN, "bundlePem": (certs / "ca.pem").read_text()}]},
        "gateway": {"tlsSecret": "portcullis-gateway-tls",
                    "spiffeId": f"spiffe://{TRUST_DOMAIN}/ns/portcullis/sa/gateway",
                    "runnerSpiffeId": f"spiffe://{TRUST_DOMAIN}/ns/portcullis/sa/runner"},
        "filter": {"sha256": sha256_file(need(WASM, "build it with `make wasm`"))},
        "ticketKey": {"privateKeyPem": (certs / "ticket-signing-key.pem").read_text(),
                      "publicKeyPem": (certs / "ticket-signing-pub.pem").read_text()},
        "runner": {"tlsSecret": "portcullis-runner-tls",
                   "signingKey": {"privateKeyPem": (certs / "runner-signing-key.pem").read_text()}},
        "policy": {"files": policy_files()},
        "catalog": {"content": (ROOT / "catalog" / "example.yaml").read_text()},
        "networkPolicy": {"agents": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "agents"}}}],
                          "apiServer": {"cidrs": ["10.0.0.1/32"]}},
    }
    for key, value in overrides.items():
        node = v
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return v


def render(v: dict) -> list[dict]:
    """The chart's objects for values `v`, in template order."""
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(v)
        manifests = chart.render(v, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for name in sorted(manifests):
        if not name.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(manifests[name]):
            if doc:
                doc.setdefault("metadata", {})
                objects.append(doc)
    return objects


def render_text(v: dict) -> dict[str, str]:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(v, name=RELEASE, namespace=NAMESPACE, is_install=True)


def find(objects: list[dict], kind: str, name_suffix: str = "") -> dict:
    hits = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    if len(hits) != 1:
        raise AssertionError(f"expected one {kind} named *{name_suffix}, found {[o['metadata']['name'] for o in hits]}")
    return hits[0]


def pod_spec(objects: list[dict]) -> dict:
    return find(objects, "Deployment")["spec"]["template"]["spec"]


def container(objects: list[dict], name: str) -> dict:
    spec = pod_spec(objects)
    hits = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    if len(hits) != 1:
        raise AssertionError(f"expected one container {name}")
    return hits[0]


class Pod:
    """Lays out the volumes of the rendered Deployment under a temporary directory, as a kubelet
    would mount them: each container gets its own root, in which each of its volumeMounts is a
    directory (ConfigMap and Secret contents from the rendered objects, or from `secrets` for
    Secrets the operator brings) and each emptyDir is one directory shared by every container
    that mounts it. Paths in a container's configuration are then rooted with `path()`."""

    def __init__(self, objects: list[dict], secrets: dict[str, dict[str, str]], files: dict[str, pathlib.Path]):
        self.objects = objects
        self.dir = tempdir("pc-pod-")
        self.secrets = secrets
        self.files = files  # image contents: absolute path in the image -> file on this machine
        self.volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}

    def root(self, name: str) -> pathlib.Path:
        return self.dir / name

    def path(self, name: str, inside: str) -> str:
        return str(self.root(name)) + inside

    def mount(self, name: str) -> pathlib.Path:
        c = container(self.objects, name)
        root = self.root(name)
        for image_path, source in self.files.items():
            dest = pathlib.Path(str(root) + image_path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, dest)
        for m in c.get("volumeMounts", []):
            dest = pathlib.Path(str(root) + m["mountPath"])
            dest.parent.mkdir(parents=True, exist_ok=True)
            volume = self.volumes[m["name"]]
            if "emptyDir" in volume:
                shared = self.dir / "volumes" / m["name"]
                shared.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(shared)
            elif "configMap" in volume or "secret" in volume:
                dest.mkdir(parents=True, exist_ok=True)
                for key, content in self._contents(volume).items():
                    (dest / key).write_bytes(content)
            else:
                raise AssertionError(f"volume {m['name']}: no stand-in for {sorted(volume)}")
        return root

    def _contents(self, volume: dict) -> dict[str, bytes]:
        if "configMap" in volume:
            ref = volume["configMap"]
            obj = find(self.objects, "ConfigMap", ref["name"])
            data = {k: v.encode() for k, v in obj.get("data", {}).items()}
        else:
            ref = volume["secret"]
            name = ref["secretName"]
            if name in self.secrets:
                data = {k: v.encode() for k, v in self.secrets[name].items()}
            else:
                obj = find(self.objects, "Secret", name)
                data = {k: base64.b64decode(v) for k, v in obj.get("data", {}).items()}
        if "items" in ref:
            data = {item["path"]: data[item["key"]] for item in ref["items"]}
        return data


def run_init(pod: Pod) -> pathlib.Path:
    """Runs the Deployment's filter-config init container's command with its environment, inside
    its mounts, with this machine's runner binary; returns the filter volume's directory."""
    c = container(pod.objects, "filter-config")
    root = pod.mount("filter-config")
    env = dict(os.environ)
    for e in c["env"]:
        value = e["value"]
        env[e["name"]] = str(PORTCULLIS) if e["name"] == "PORTCULLIS" else (str(root) + value if value.startswith("/") else value)
    command = [part if not part.startswith("/") else str(root) + part for part in c["command"]]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"the init container failed ({result.returncode}): {result.stderr}")
    return pod.dir / "volumes" / "filter"


def rooted(text: str, root: pathlib.Path) -> str:
    """A container's configuration with its absolute in-pod paths under `root`."""
    for prefix in ("/etc/portcullis/", "/var/run/portcullis/", "/var/lib/portcullis"):
        text = text.replace(prefix, str(root) + prefix)
    return text


def deep_merge(base: dict, patch: dict) -> dict:
    """Protobuf-style MERGE of `patch` into a copy of `base`: messages merge, lists append,
    scalars replace (what Istio does with an EnvoyFilter MERGE)."""
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        elif isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = out[k] + copy.deepcopy(v)
        else:
            out[k] = copy.deepcopy(v)
    return out
