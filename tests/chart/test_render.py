"""The chart as rendered by the Helm SDK: lint, the Kubernetes schema, and what the objects say."""

from __future__ import annotations

import json
import re
import subprocess
import unittest

import yaml

import harness as h

try:
    import kubernetes_validate
except ImportError as e:
    raise SystemExit(f"chart tests: kubernetes-validate is missing ({e}); run scripts/setup.sh") from e

# Istio's kinds are not in the Kubernetes schema: their shape is asserted below instead.
ISTIO_KINDS = {"PeerAuthentication", "AuthorizationPolicy", "EnvoyFilter"}
KINDS = {
    "istio": {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Secret", "Deployment",
              "Service", "PersistentVolumeClaim", "NetworkPolicy"} | ISTIO_KINDS,
    "envoy": {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Secret", "Deployment",
              "Service", "PersistentVolumeClaim", "NetworkPolicy"},
}
# The oldest Kubernetes this chart targets (native sidecars), and the newest schema at hand.
KUBE_VERSIONS = ["1.29.0", "1.37.0"]


def render_error(v: dict) -> str:
    try:
        h.render(v)
    except h.helm.HelmError as e:
        return str(e)
    raise AssertionError("rendering succeeded; expected a refusal")


class Render(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.objects = {proxy: h.render(h.values(proxy)) for proxy in ("istio", "envoy")}

    def test_lint(self):
        for proxy in ("istio", "envoy"):
            report = h.helm.lint(str(h.CHART), h.values(proxy), strict=True, namespace=h.NAMESPACE)
            problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
            self.assertEqual(problems, [], f"helm lint ({proxy})")

    def test_kinds(self):
        for proxy, objects in self.objects.items():
            self.assertEqual({o["kind"] for o in objects}, KINDS[proxy], proxy)

    def test_kubernetes_schema(self):
        variants = dict(self.objects)
        variants["ociArtifact"] = h.render(h.values("envoy", **{
            "filter.module": {"source": "ociArtifact", "artifact": "registry.example/portcullis-filter@sha256:" + "a" * 64}}))
        for variant, objects in variants.items():
            # Image volumes exist in the API from 1.31 on.
            versions = ["1.33.0", "1.37.0"] if variant == "ociArtifact" else KUBE_VERSIONS
            for obj in objects:
                if obj["kind"] in ISTIO_KINDS:
                    continue
                for version in versions:
                    with self.subTest(variant=variant, kind=obj["kind"], name=obj["metadata"]["name"], kube=version):
                        kubernetes_validate.validate(obj, version, strict=True)

    def test_security_contexts(self):
        for proxy, objects in self.objects.items():
            spec = h.pod_spec(objects)
            self.assertTrue(spec["securityContext"]["runAsNonRoot"])
            self.assertEqual(spec["securityContext"]["seccompProfile"], {"type": "RuntimeDefault"})
            for c in spec["initContainers"] + spec["containers"]:
                with self.subTest(proxy=proxy, container=c["name"]):
                    sc = c["securityContext"]
                    self.assertIs(sc["allowPrivilegeEscalation"], False)
                    self.assertIs(sc["readOnlyRootFilesystem"], True)
                    self.assertEqual(sc["capabilities"], {"drop": ["ALL"]})
                    self.assertGreater(sc["runAsUser"], 0)
                    self.assertTrue(c["resources"]["requests"] and c["resources"]["limits"])
                    self.assertNotIn("privileged", sc)

    def test_probes(self):
        for proxy, objects in self.objects.items():
            runner = h.container(objects, "runner")
            ports = {p["name"]: p["containerPort"] for p in runner["ports"]}
            self.assertEqual(ports, {"runner": 9443})
            for probe in ("livenessProbe", "readinessProbe"):
                # The runner serves no health endpoint: a TCP connect to its port.
                self.assertEqual(runner[probe]["tcpSocket"], {"port": "runner"}, probe)
            if proxy == "envoy":
                envoy = h.container(objects, "envoy")
                for probe in ("livenessProbe", "readinessProbe"):
                    self.assertEqual(envoy[probe]["tcpSocket"], {"port": "mcp"})

    def test_one_replica_recreated(self):
        for objects in self.objects.values():
            d = h.find(objects, "Deployment")
            self.assertEqual(d["spec"]["replicas"], 1)
            self.assertEqual(d["spec"]["strategy"], {"type": "Recreate"})

    def test_runner_cluster_role_is_runner_rbac_verbatim(self):
        source = (h.CHART / "files" / "runner-rbac.yaml").read_text()
        text = h.render_text(h.values())["portcullis/templates/rbac.yaml"]
        self.assertIn(source, text, "the file, comments included, appears unchanged")
        role = h.find(self.objects["istio"], "ClusterRole", "-runner")
        self.assertEqual(role["rules"], yaml.safe_load(source))
        binding = h.find(self.objects["istio"], "ClusterRoleBinding", "-runner")
        self.assertEqual(binding["roleRef"]["name"], role["metadata"]["name"])
        self.assertEqual(binding["subjects"], [{"kind": "ServiceAccount", "name": "pc-portcullis", "namespace": h.NAMESPACE}])

    def test_tool_grants_are_the_union_of_catalog_rules(self):
        catalog = (h.ROOT / "tests" / "chart" / "fixtures" / "catalog-kubernetes.yaml").read_text()
        objects = h.render(h.values(**{"catalog.content": catalog}))
        role = h.find(objects, "ClusterRole", "-tool-grants")
        self.assertEqual(role["rules"], [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"], "resourceNames": ["web"]},
        ])
        binding = h.find(objects, "ClusterRoleBinding", "-tool-grants")
        self.assertEqual(binding["roleRef"]["name"], role["metadata"]["name"])
        self.assertEqual(binding["subjects"][0]["name"], "pc-portcullis")
        for rule in h.find(objects, "ClusterRole", "-runner")["rules"] + role["rules"]:
            self.assertFalse({"escalate", "bind", "impersonate", "*"} & set(rule["verbs"]), rule)
        # The example catalog runs nothing on Kubernetes: no grants at all.
        self.assertFalse([o for o in self.objects["istio"] if o["metadata"]["name"].endswith("-tool-grants")])

    def test_tool_rules_that_escalate_are_refused(self):
        catalog = (h.ROOT / "tests" / "chart" / "fixtures" / "catalog-kubernetes.yaml").read_text()
        for bad, word in (("verbs: [get, patch]", "verbs: [get, bind]"), ("resources: [deployments]", "resources: ['*']")):
            message = render_error(h.values(**{"catalog.content": catalog.replace(bad, word)}))
            self.assertIn("refused", message)

    def test_secrets_reach_only_their_container(self):
        for proxy, objects in self.objects.items():
            spec = h.pod_spec(objects)
            mounts = {c["name"]: {m["name"] for m in c.get("volumeMounts", [])} for c in spec["initContainers"] + spec["containers"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            self.assertEqual(volumes["ticket-private"]["secret"]["items"], [{"key": "private.pem", "path": "private.pem"}])
            self.assertEqual(volumes["ticket-public"]["secret"]["items"], [{"key": "public.pem", "path": "public.pem"}])
            self.assertEqual(volumes["filter"]["emptyDir"]["medium"], "Memory")
            holders = {name for name, m in mounts.items() if "ticket-private" in m}
            self.assertEqual(holders, {"filter-config"}, proxy)
            filter_holders = {name for name, m in mounts.items() if "filter" in m}
            self.assertEqual(filter_holders, {"filter-config"} | ({"envoy"} if proxy == "envoy" else set()), proxy)
            init = h.container(objects, "filter-config")
            proxy_uid = 1337 if proxy == "istio" else 101
            self.assertEqual(init["securityContext"]["runAsUser"], proxy_uid, "only the proxy's user reads the file")

    def test_filter_module_pinned(self):
        for objects in self.objects.values():
            env = {e["name"]: e["value"] for e in h.container(objects, "filter-config")["env"]}
            self.assertEqual(env["MODULE_SHA256"], h.sha256_file(h.WASM))
        message = render_error(h.values(**{"filter.sha256": ""}))
        self.assertIn("filter.sha256 is required", message)
        message = render_error(h.values(**{"filter.module": {"source": "ociArtifact", "artifact": "registry.example/f:latest"}}))
        self.assertIn("pinned by digest", message)

    def test_wasm_config_fails_closed(self):
        for objects in self.objects.values():
            template = h.find(objects, "ConfigMap", "-filter")["data"]["wasm.yaml"]
            self.assertEqual(template.rstrip("\n").splitlines()[-1], "    value: |-", "the script appends under this line")
            config = yaml.safe_load(template + '      "{}"\n')
            self.assertEqual(config["@type"], "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm")
            c = config["config"]
            self.assertIs(c["fail_open"], False)
            self.assertIs(c["allow_on_headers_stop_iteration"], True)
            self.assertEqual(c["vm_config"]["runtime"], "envoy.wasm.runtime.v8")
            self.assertEqual(c["vm_config"]["code"], {"local": {"filename": "/var/run/portcullis/filter/portcullis_filter.wasm"}})
            self.assertEqual(c["configuration"]["@type"], "type.googleapis.com/google.protobuf.StringValue")

    def test_no_object_but_the_secret_holds_the_signing_key(self):
        key_body = "".join(h.values()["ticketKey"]["privateKeyPem"].splitlines()[1:-1])
        for proxy, objects in self.objects.items():
            for obj in objects:
                if obj["kind"] == "Secret":
                    continue
                with self.subTest(proxy=proxy, kind=obj["kind"], name=obj["metadata"]["name"]):
                    self.assertNotIn(key_body, json.dumps(obj).replace("\\n", ""))

    def test_istio_mtls_strict_and_principals(self):
        objects = self.objects["istio"]
        labels = h.find(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
        pa = h.find(objects, "PeerAuthentication")
        self.assertEqual(pa["apiVersion"], "security.istio.io/v1")
        self.assertEqual(pa["spec"]["mtls"], {"mode": "STRICT"})
        self.assertTrue(pa["spec"]["selector"]["matchLabels"].items() <= labels.items())
        ap = h.find(objects, "AuthorizationPolicy")
        self.assertEqual(ap["apiVersion"], "security.istio.io/v1")
        self.assertEqual(ap["spec"]["action"], "ALLOW")
        self.assertTrue(ap["spec"]["selector"]["matchLabels"].items() <= labels.items())
        self.assertEqual(ap["spec"]["rules"], [{
            "from": [{"source": {"principals": h.values()["istio"]["agentPrincipals"]}}],
            "to": [{"operation": {"ports": ["9443"]}}],
        }])
        self.assertEqual(labels["sidecar.istio.io/inject"], "true")
        self.assertIn("at least one", render_error(h.values(**{"istio.agentPrincipals": []})))

    def test_istio_envoy_filter(self):
        objects = self.objects["istio"]
        ef = h.find(objects, "EnvoyFilter")
        self.assertEqual(ef["apiVersion"], "networking.istio.io/v1alpha3")
        labels = h.find(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
        self.assertTrue(ef["spec"]["workloadSelector"]["labels"].items() <= labels.items())
        patches = {p["applyTo"]: p for p in ef["spec"]["configPatches"]}
        self.assertEqual(set(patches), {"HTTP_FILTER", "NETWORK_FILTER", "LISTENER", "CLUSTER", "HTTP_ROUTE"})
        for p in ef["spec"]["configPatches"]:
            self.assertEqual(p["match"]["context"], "SIDECAR_INBOUND")
        f = patches["HTTP_FILTER"]
        self.assertEqual(f["match"]["listener"]["portNumber"], 9443)
        self.assertEqual(f["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"], "envoy.filters.http.router")
        self.assertEqual(f["patch"]["operation"], "INSERT_BEFORE")
        discovery = f["patch"]["value"]["config_discovery"]
        self.assertEqual(f["patch"]["value"]["name"], "portcullis")
        self.assertEqual(discovery["config_source"]["path_config_source"]["path"], "/var/run/portcullis/filter/portcullis.ecds.yaml")
        self.assertEqual(discovery["type_urls"], ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"])
        self.assertNotIn("default_config", discovery, "no default: fail closed until the file is there")
        tls = patches["CLUSTER"]["patch"]["value"]["transport_socket"]["typed_config"]
        self.assertEqual(tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"],
                         [{"san_type": "URI", "matcher": {"exact": h.values()["gateway"]["runnerSpiffeId"]}}])
        hcm = patches["NETWORK_FILTER"]["patch"]["value"]["typed_config"]
        self.assertEqual(hcm["access_log"][0]["typed_config"]["path"], "/var/run/portcullis/gateway/access.log")
        self.assertEqual(hcm["forward_client_cert_details"], "SANITIZE")
        # The sidecar mounts exactly what the patches name.
        annotations = h.find(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        mounts = {m["name"]: m["mountPath"] for m in json.loads(annotations["sidecar.istio.io/userVolumeMount"])}
        self.assertEqual(mounts, {"filter": "/var/run/portcullis/filter", "gateway-tls": "/etc/portcullis/gateway-tls",
                                  "gateway-log": "/var/run/portcullis/gateway"})
        volumes = {v["name"] for v in h.pod_spec(objects)["volumes"]}
        self.assertTrue(set(mounts) <= volumes)

    def test_minimum_versions_refused(self):
        self.assertIn("too old", render_error(h.values(**{"istio.version": "1.26.9"})))
        self.assertIn("istio.version is required", render_error(h.values(**{"istio.version": ""})))
        h.render(h.values(**{"istio.version": "1.27.0"}))
        self.assertIn("too old", render_error(h.values("envoy", **{"envoy.version": "1.34.2"})))
        h.render(h.values("envoy", **{"envoy.version": "1.35.0"}))

    def test_schema_rejects_unknown_keys(self):
        with h.helm.Chart.load(str(h.CHART)) as chart:
            chart.validate_schema(h.values())
            for key in ("bogus", "runner.bogus", "istio.bogus", "runner.kubernetes.bogus", "filter.module.bogus"):
                with self.subTest(key=key), self.assertRaises(h.helm.HelmValuesError):
                    chart.validate_schema(h.values(**{key: 1}))
            with self.assertRaises(h.helm.HelmValuesError):
                chart.validate_schema(h.values(**{"proxy": "linkerd"}))

    def test_every_value_is_commented(self):
        """Every key of values.yaml has a comment line right above it (or above its block)."""
        lines = (h.CHART / "values.yaml").read_text().splitlines()
        for i, line in enumerate(lines):
            m = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line)
            if not m:
                continue
            j = i - 1
            # A key inside a flow-style or short block may follow its sibling's comment block.
            while j >= 0 and re.match(r"^\s*[A-Za-z][A-Za-z0-9]*:", lines[j]) and len(re.match(r"^(\s*)", lines[j]).group(1)) == len(m.group(1)) \
                    and not lines[j].rstrip().endswith(":"):
                j -= 1
            with self.subTest(key=m.group(2), line=i + 1):
                self.assertTrue(j >= 0 and (lines[j].strip().startswith("#") or lines[j].rstrip().endswith(":")), line)

    def test_network_policy(self):
        for proxy, objects in self.objects.items():
            np = h.find(objects, "NetworkPolicy")
            port = 9443 if proxy == "istio" else 8443
            self.assertEqual(np["spec"]["policyTypes"], ["Ingress", "Egress"])
            self.assertEqual(np["spec"]["ingress"][0]["ports"], [{"port": port, "protocol": "TCP"}])
            self.assertEqual(np["spec"]["ingress"][0]["from"], h.values()["networkPolicy"]["agents"])
            api = [r for r in np["spec"]["egress"] if any("ipBlock" in t for t in r.get("to", []))]
            self.assertEqual(api[0]["to"], [{"ipBlock": {"cidr": "10.0.0.1/32"}}])

    def test_runner_args_are_the_runner_cli(self):
        """Every flag the chart passes to `portcullis serve` is one the runner's CLI has."""
        helptext = subprocess.run([str(h.need(h.PORTCULLIS, "make runner")), "serve", "--help"],
                                  capture_output=True, text=True, check=True).stdout
        known = set(re.findall(r"(--[a-z0-9-]+)", helptext))
        for proxy, objects in self.objects.items():
            args = h.container(objects, "runner")["args"]
            self.assertEqual(args[0], "serve")
            flags = {a.split("=", 1)[0] for a in args[1:]}
            self.assertEqual(sorted(flags - known), [], f"flags `portcullis serve` does not know ({proxy})")


if __name__ == "__main__":
    unittest.main()
