"""The gateway as the chart deploys it, run for real on this machine: the init container's script
with the release runner builds the filter's configuration from the rendered ConfigMaps and
Secrets, `envoy --mode validate` checks the plain Envoy variant's bootstrap (with the real filter
and that configuration) and a bootstrap made of the Istio EnvoyFilter's patches, and a live
Envoy shows the filter refuses everything until its configuration arrives, then decides."""

from __future__ import annotations

import copy
import http.client
import json
import os
import pathlib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

import yaml

import harness as h

RUNNER_TLS = "portcullis-runner-tls"
GATEWAY_TLS = "portcullis-gateway-tls"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def operator_secrets() -> dict[str, dict[str, str]]:
    """The TLS Secrets an operator brings (cert-manager would make them), from the dev PKI."""
    certs = h.pki()
    ca = (certs / "ca.pem").read_text()
    return {
        GATEWAY_TLS: {"tls.crt": (certs / "gateway.pem").read_text(), "tls.key": (certs / "gateway-key.pem").read_text(), "ca.crt": ca},
        RUNNER_TLS: {"tls.crt": (certs / "runner.pem").read_text(), "tls.key": (certs / "runner-key.pem").read_text(), "ca.crt": ca},
    }


def envoy_validate(config_text: str) -> subprocess.CompletedProcess:
    h.need(h.ENVOY, "run scripts/setup.sh")
    path = h.tempdir("pc-validate-") / "envoy.yaml"
    path.write_text(config_text)
    return subprocess.run([str(h.ENVOY), "--mode", "validate", "--log-level", "warn", "-c", str(path)],
                          capture_output=True, text=True, timeout=120)


def inline_filter(bootstrap: dict, ecds: dict) -> dict:
    """The bootstrap with the portcullis filter's config taken from the ECDS file into the filter
    itself: validate mode then loads the module and runs its on_configure with that config
    (validate mode checks that an ECDS file exists, not what is in it)."""
    out = copy.deepcopy(bootstrap)
    (resource,) = ecds["resources"]
    hcm = out["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (f,) = [f for f in hcm["http_filters"] if f["name"] == "portcullis"]
    del f["config_discovery"]
    f["typed_config"] = resource["typed_config"]
    return out


class Gateway(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        h.need(h.ENVOY, "run scripts/setup.sh")
        h.need(h.PORTCULLIS, "build it with `make runner`")
        h.need(h.WASM, "build it with `make wasm`")
        cls.objects = h.render(h.values("envoy"))
        cls.pod = h.Pod(cls.objects, operator_secrets(), {"/usr/lib/portcullis/portcullis_filter.wasm": h.WASM})
        cls.filter_dir = h.run_init(cls.pod)
        cls.envoy_root = cls.pod.mount("envoy")
        cls.bootstrap_text = h.rooted(h.find(cls.objects, "ConfigMap", "-envoy")["data"]["envoy.yaml"], cls.envoy_root)
        cls.ecds_text = (cls.filter_dir / "portcullis.ecds.yaml").read_text()
        cls.ecds = yaml.safe_load(cls.ecds_text)

    def ecds_in(self, root: pathlib.Path) -> dict:
        """The ECDS file as a container with that root reads it (its module path rooted)."""
        return yaml.safe_load(h.rooted(self.ecds_text, root))

    def test_init_container_builds_the_filter_config(self):
        self.assertEqual(h.sha256_file(self.filter_dir / "portcullis_filter.wasm"), h.sha256_file(h.WASM))
        for f in self.filter_dir.iterdir():
            self.assertEqual(f.stat().st_mode & 0o077, 0, f"{f.name}: only the proxy's user may read it")
        (resource,) = self.ecds["resources"]
        self.assertEqual(resource["@type"], "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig")
        self.assertEqual(resource["name"], "portcullis")
        config = resource["typed_config"]["config"]
        self.assertIs(config["fail_open"], False)
        self.assertIs(config["allow_on_headers_stop_iteration"], True)
        plugin = json.loads(config["configuration"]["value"])
        self.assertEqual(sorted(plugin), ["catalog", "policy", "ticket", "users"])
        self.assertEqual(plugin["ticket"]["signing_key_pem"], h.values()["ticketKey"]["privateKeyPem"])
        self.assertEqual(sorted(m["name"] for m in plugin["policy"]["modules"]), sorted(n for n in h.policy_files() if n.endswith(".rego")))

    def test_init_container_refuses_another_module(self):
        objects = h.render(h.values("envoy", **{"filter.sha256": "0" * 64}))
        pod = h.Pod(objects, operator_secrets(), {"/usr/lib/portcullis/portcullis_filter.wasm": h.WASM})
        with self.assertRaisesRegex(AssertionError, "refusing the filter module"):
            h.run_init(pod)
        self.assertFalse((pod.dir / "volumes" / "filter" / "portcullis.ecds.yaml").exists())

    def test_envoy_validates_the_rendered_bootstrap(self):
        result = envoy_validate(self.bootstrap_text)
        self.assertEqual(result.returncode, 0, result.stderr + result.stdout)

    def test_envoy_validates_the_real_filter_with_its_config(self):
        inline = inline_filter(yaml.safe_load(self.bootstrap_text), self.ecds_in(self.envoy_root))
        result = envoy_validate(yaml.safe_dump(inline))
        self.assertEqual(result.returncode, 0, result.stderr + result.stdout)
        # The real filter's on_configure ran: a broken key makes the same bootstrap fail.
        broken = self.ecds_in(self.envoy_root)
        cfg = broken["resources"][0]["typed_config"]["config"]["configuration"]
        plugin = json.loads(cfg["value"])
        plugin["ticket"]["signing_key_pem"] = "not a key"
        cfg["value"] = json.dumps(plugin)
        result = envoy_validate(yaml.safe_dump(inline_filter(yaml.safe_load(self.bootstrap_text), broken)))
        self.assertNotEqual(result.returncode, 0, "a filter that refuses its configuration must fail validation")

    def test_envoy_validates_the_istio_patches(self):
        """Istio's types are not in any schema at hand, so the EnvoyFilter's Envoy content is checked
        by Envoy: a bootstrap whose listener, connection manager, filter, route and cluster are
        made by applying the patches to a minimal inbound chain, then validated."""
        objects = h.render(h.values("istio"))
        (ef,) = [o for o in objects if o["kind"] == "EnvoyFilter"]
        patches = {p["applyTo"]: p["patch"] for p in ef["spec"]["configPatches"]}
        root = h.tempdir("pc-istio-")
        gw = root / "etc/portcullis/gateway-tls"
        gw.mkdir(parents=True)
        for k, v in operator_secrets()[GATEWAY_TLS].items():
            (gw / k).write_text(v)
        (root / "var/run/portcullis/gateway").mkdir(parents=True)
        filter_dir = root / "var/run/portcullis/filter"
        filter_dir.symlink_to(self.filter_dir)
        hcm = {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "inbound_0.0.0.0_9443",
            "route_config": {"name": "inbound|9443||", "virtual_hosts": [{"name": "inbound|http|9443", "domains": ["*"],
                             "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "inbound|9443||"}}]}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
        }
        hcm = h.deep_merge(hcm, patches["NETWORK_FILTER"]["value"]["typed_config"])
        route = hcm["route_config"]["virtual_hosts"][0]["routes"][0]
        hcm["route_config"]["virtual_hosts"][0]["routes"][0] = h.deep_merge(route, patches["HTTP_ROUTE"]["value"])
        self.assertEqual(patches["HTTP_FILTER"]["operation"], "INSERT_BEFORE")
        hcm["http_filters"].insert(0, patches["HTTP_FILTER"]["value"])
        listener = h.deep_merge({"name": "virtualInbound", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 15006}},
                                 "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]},
                                patches["LISTENER"]["value"])
        cluster = h.deep_merge({"name": "inbound|9443||", "type": "STATIC", "connect_timeout": "10s", "load_assignment": {
            "cluster_name": "inbound|9443||", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": 9443}}}}]}]}}, patches["CLUSTER"]["value"])
        bootstrap = {"node": {"id": "sidecar~10.0.0.1~runner.portcullis~portcullis.svc.cluster.local", "cluster": "runner.portcullis"},
                     "static_resources": {"listeners": [listener], "clusters": [cluster]}}
        text = h.rooted(yaml.safe_dump(bootstrap), root)
        result = envoy_validate(text)
        self.assertEqual(result.returncode, 0, result.stderr + result.stdout)
        result = envoy_validate(yaml.safe_dump(inline_filter(yaml.safe_load(text), self.ecds_in(root))))
        self.assertEqual(result.returncode, 0, result.stderr + result.stdout)

    def test_bootstrap_mirrors_envoy_yaml(self):
        """The plain variant's bootstrap is envoy/envoy.yaml with only the pod's addresses, paths,
        trust domains and the ECDS form of the filter (what `portcullis up` runs) changed."""
        ours = yaml.safe_load(h.find(self.objects, "ConfigMap", "-envoy")["data"]["envoy.yaml"])
        theirs = yaml.safe_load((h.ROOT / "envoy" / "envoy.yaml").read_text())

        def scrub(b):
            b = copy.deepcopy(b)
            b.pop("admin")
            listener = b["static_resources"]["listeners"][0]
            listener.pop("address")
            chain = listener["filter_chains"][0]
            ctx = chain["transport_socket"]["typed_config"]["common_tls_context"]
            ctx.pop("tls_certificates")
            ctx["validation_context"]["custom_validator_config"]["typed_config"].pop("trust_domains")
            hcm = chain["filters"][0]["typed_config"]
            hcm["access_log"][0]["typed_config"].pop("path")
            hcm["http_filters"] = [f["name"] for f in hcm["http_filters"]]
            cluster = b["static_resources"]["clusters"][0]
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"].pop("port_value")
            tls = cluster["transport_socket"]["typed_config"]["common_tls_context"]
            tls.pop("tls_certificates")
            tls["validation_context"].pop("trusted_ca")
            tls["validation_context"].pop("match_typed_subject_alt_names")
            return b

        self.assertEqual(scrub(ours), scrub(theirs))

    def live(self, ecds_text: str):
        """Starts the plain variant's Envoy with `ecds_text` as the filter's file, the runner's port
        played by a socket that counts connections (and speaks no TLS); yields a POST function and
        the list of accepted connections."""
        certs = h.pki()
        pod = h.Pod(self.objects, operator_secrets(), {})
        root = pod.mount("envoy")
        filter_dir = pod.dir / "volumes" / "filter"
        (filter_dir / "portcullis_filter.wasm").write_bytes(h.WASM.read_bytes())
        (filter_dir / "portcullis.ecds.yaml").write_text(h.rooted(ecds_text, root))
        port, runner_port = free_port(), free_port()
        config = yaml.safe_load(h.rooted(h.find(self.objects, "ConfigMap", "-envoy")["data"]["envoy.yaml"], root))
        config["static_resources"]["listeners"][0]["address"]["socket_address"].update({"address": "127.0.0.1", "port_value": port})
        (cluster,) = config["static_resources"]["clusters"]
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = runner_port
        boot = root / "envoy-live.yaml"
        boot.write_text(yaml.safe_dump(config))
        upstream = socket.socket()
        upstream.bind(("127.0.0.1", runner_port))
        upstream.listen(16)
        accepted = []

        def accept():
            while True:
                try:
                    conn, _ = upstream.accept()
                except OSError:
                    return
                accepted.append(1)
                conn.close()

        threading.Thread(target=accept, daemon=True).start()
        log = open(root / "envoy.log", "w")
        proc = subprocess.Popen([str(h.ENVOY), "-c", str(boot), "--disable-hot-restart", "--log-level", "info"],
                                stdout=log, stderr=subprocess.STDOUT)
        tls = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        tls.check_hostname = False
        tls.load_cert_chain(certs / "agents" / "reader.pem", certs / "agents" / "reader-key.pem")

        def post(body: bytes) -> tuple[int, bytes]:
            deadline = time.monotonic() + 30
            while True:
                conn = http.client.HTTPSConnection("127.0.0.1", port, context=tls, timeout=10)
                try:
                    conn.request("POST", "/mcp", body=body, headers={
                        "content-type": "application/json", "accept": "application/json, text/event-stream"})
                    r = conn.getresponse()
                    return r.status, r.read()
                except (ConnectionError, ssl.SSLError, OSError):
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise AssertionError(f"Envoy does not answer; see {root / 'envoy.log'}")
                    time.sleep(0.2)
                finally:
                    conn.close()

        def stop():
            proc.terminate()
            proc.wait(timeout=20)
            upstream.shutdown(socket.SHUT_RDWR)
            upstream.close()
            log.close()

        return post, accepted, stop

    INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "chart-test", "version": "1"}}}).encode()

    def test_live_gateway_decides(self):
        """The rendered bootstrap with the init script's files, run for real: the filter refuses a
        malformed call itself (a JSON-RPC error, nothing forwarded) and forwards an initialize."""
        post, accepted, stop = self.live(self.ecds_text)
        try:
            status, body = post(b'{"jsonrpc": "2.0", "id": 7, "method": ')
            self.assertEqual(status, 400, body)
            self.assertEqual(json.loads(body)["jsonrpc"], "2.0", "the filter's own JSON-RPC error")
            self.assertEqual(accepted, [], "a refused request is not forwarded")
            status, body = post(self.INITIALIZE)
            self.assertTrue(accepted, f"an allowed initialize reaches the runner's port ({status} {body!r})")
        finally:
            stop()

    def test_live_gateway_fails_closed(self):
        """A configuration the filter refuses (here a broken signing key) leaves Envoy running with
        every request refused and nothing forwarded: fail_open is false."""
        broken = copy.deepcopy(self.ecds)
        cfg = broken["resources"][0]["typed_config"]["config"]["configuration"]
        plugin = json.loads(cfg["value"])
        plugin["ticket"]["signing_key_pem"] = "not a key"
        cfg["value"] = json.dumps(plugin)
        post, accepted, stop = self.live(yaml.safe_dump(broken))
        try:
            status, body = post(self.INITIALIZE)
            self.assertGreaterEqual(status, 500, body)
            self.assertEqual(accepted, [], "nothing may reach the runner through an unconfigured filter")
        finally:
            stop()


if __name__ == "__main__":
    unittest.main()
