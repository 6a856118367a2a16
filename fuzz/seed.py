#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/seeds/<target>/) from the repository's test
vectors: the plan-hash vectors, the policy cases, the JSON literals of the Rust tests, the
example catalog and the user-token test data. Run it again after they change; it replaces the
seeds. Each corpus keeps at most MAX files. Needs PyYAML (in .venv: .venv/bin/python fuzz/seed.py).
"""

import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"
MAX = 40

# The decide target's peers and users, in its selector order (fuzz_targets/decide.rs).
PEERS = ["reader", "operator", "intruder", "console"]
USER_BY_GROUP = {"sre": 0, "approvers": 1, "dev": 2}
NO_USER, NO_VERSION, NO_METHOD, NO_NAME, NO_SESSION = 6, 6, 5, 5, 3


def rust_json_literals(paths):
    """JSON objects written in Rust test sources: r#"..."# strings and json!(...) macros."""
    found = []
    for path in paths:
        text = path.read_text()
        for raw in re.findall(r'r#"(.*?)"#', text, re.S):
            found.append(raw)
        for start in (m.end() for m in re.finditer(r"json!\(", text)):
            depth = 0
            for i, c in enumerate(text[start:], start):
                depth += c in "[{"
                depth -= c in "]}"
                if depth == 0:
                    found.append(text[start : i + 1])
                    break
    out = []
    for candidate in found:
        try:
            out.append(json.loads(candidate))
        except ValueError:
            continue
    return out


def rust_tests():
    paths = list((ROOT / "core" / "src").rglob("*.rs")) + list((ROOT / "tests" / "tests" / "cases").glob("*.rs"))
    return rust_json_literals(sorted(paths))


def plan_vectors():
    return json.loads((ROOT / "core/tests/data/plan_hash.json").read_text())


def policy_cases():
    for path in sorted((ROOT / "policies" / "cases").glob("*.json")):
        yield from json.loads(path.read_text())


def catalog():
    return yaml.safe_load((ROOT / "catalog" / "example.yaml").read_text())


def dense(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def write(target, seeds):
    """Writes up to MAX distinct seeds, named by content."""
    directory = SEEDS / target
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    unique = list(dict.fromkeys(seeds))
    step = max(1, len(unique) / MAX)
    chosen = [unique[int(i * step)] for i in range(min(MAX, len(unique)))]
    for seed in chosen:
        (directory / hashlib.sha1(seed).hexdigest()[:16]).write_bytes(seed)
    print(f"{target}: {len(chosen)} seeds (of {len(unique)})")


def decide_prefix(workload=None, groups=()):
    name = (workload or "").rsplit("/", 1)[-1]
    peer = PEERS.index(name) if name in PEERS else 7
    user = next((USER_BY_GROUP[g] for g in groups if isinstance(g, str) and g in USER_BY_GROUP), NO_USER)
    return bytes([peer, user, NO_VERSION, NO_METHOD, NO_NAME, NO_SESSION, 0, 0])


def decide_seeds(messages):
    seeds = []
    vectors = plan_vectors()
    for v in vectors["vectors"] + vectors["invalid"]:
        seeds.append(decide_prefix("/operator") + v["request"].encode())
    for n, case in enumerate(policy_cases()):
        i = case.get("input")
        if isinstance(i, dict) and i.get("method") == "tools/call" and isinstance(i.get("tool"), str):
            params = {"name": i["tool"], "arguments": i.get("arguments") or {}}
            body = {"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": params}
            workload, user = i.get("workload"), i.get("user")
            spiffe_id = workload.get("spiffe_id") if isinstance(workload, dict) else None
            groups = user.get("groups") if isinstance(user, dict) else None
            seeds.append(decide_prefix(spiffe_id if isinstance(spiffe_id, str) else None, groups if isinstance(groups, list) else ()) + dense(body))
    for m in messages:
        if isinstance(m, dict) and m.get("jsonrpc") == "2.0" and "method" in m:
            seeds.append(decide_prefix("/operator", ["sre"]) + dense(m))
    # A stateless (2026-07-28) call with the headers that restate it, and a client response.
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "word_count", "arguments": {"text": "a b"},
                       "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}}
    seeds.append(bytes([0, NO_USER, 2, 0, 0, NO_SESSION, 0, 0]) + dense(call))
    seeds.append(bytes([0, NO_USER, NO_VERSION, NO_METHOD, NO_NAME, 0, 0, 2]) + dense({"jsonrpc": "2.0", "id": 5, "result": {}}))
    return seeds


def plan_seeds(messages):
    seeds = []
    vectors = plan_vectors()
    for v in vectors["vectors"] + vectors["invalid"]:
        seeds.append(json.dumps(json.loads(v["request"])["params"].get("arguments", {})).encode())
    for case in policy_cases():
        args = case["input"].get("arguments") if isinstance(case.get("input"), dict) else None
        if isinstance(args, dict) and args:
            seeds.append(dense(args))
    for m in messages:
        args = m.get("params", {}).get("arguments") if isinstance(m, dict) and isinstance(m.get("params"), dict) else None
        if isinstance(args, dict) and args:
            seeds.append(dense(args))
    seeds += [b'{"n":[9007199254740991,-0,-0.0,1.0,1e400,5e-324,1e21,18446744073709551616]}', b'{"\\ud83d\\ude00":1,"\\ue000":2}']
    return seeds


def ticket_seeds():
    claims = {"iss": "portcullis-gateway", "aud": "portcullis-runner", "sub": "spiffe://portcullis.local/ns/agents/sa/operator",
              "tool": "word_count", "plan_hash": "sha256:00", "decision_id": "d", "require_approval": False,
              "policy_version": "v", "jti": "j", "iat": 1790000000, "exp": 1790000030}
    caller = {"iss": "portcullis-gateway", "aud": "portcullis-runner-caller", "sub": claims["sub"], "http": "POST",
              "method": "tools/list", "iat": 1790000000, "exp": 1790000030}
    return [
        b"\x00eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSJ9.e30.AAAA",
        b"\x00a.b.c",
        b"\x01\x00\x10\x01\x01\x00\x02",
        b"\x01\x00\x50\x20",
        b"\x02" + dense(claims),
        b"\x02" + dense({**claims, "exp": 1e300, "placement": {"backend": "kubernetes"}}),
        b"\x02" + dense(caller),
        b"\x03" + b'{"alg":"none"}',
        b"\x03" + b'{"typ":"JWT","alg":"EdDSA","crit":["x"]}',
        b"\x03" + b'{"alg":"HS256"}',
    ]


def user_jwt_seeds():
    claims = {"iss": "https://idp.portcullis.local", "aud": "portcullis", "sub": "alice", "groups": ["sre"],
              "iat": 1790000000, "exp": 1790003600}
    seeds = [b"\x00Bearer a.b.c", b"\x00bearer  x", b"\x01\x00\x20\x04", b"\x01\x00\x90\x01\x00\x91\x80"]
    for variant in (claims, {**claims, "aud": ["x", "portcullis"]}, {**claims, "groups": "sre"}, {**claims, "nbf": 1.7e9},
                    {**claims, "exp": "soon"}, {**claims, "sub": ""}):
        seeds.append(b"\x02" + dense(variant))
    jwks = json.loads((ROOT / "core/tests/data/userjwt/jwks-a.json").read_text())
    for key in jwks["keys"]:
        alg = {"OKP": "EdDSA", "EC": "ES256", "RSA": "RS256"}[key["kty"]]
        seeds.append(b"\x03" + dense({"alg": alg, "kid": key["kid"]}))
        seeds.append(b"\x04" + dense({"alg": alg}) + b"\x00" + dense(claims))
    return seeds


def listing_seeds(messages):
    seeds = []
    lists = [("tools", "name"), ("prompts", "name"), ("resources", "uri"), ("resourceTemplates", "uriTemplate")]
    tools = [{"name": t["name"], "inputSchema": t.get("input_schema", {})} for t in catalog()["tools"][:4]]
    for flags, (member, field) in enumerate(lists):
        entries = tools if member == "tools" else [{field: "file:///public/a"}, {field: "file:///secret"}]
        body = dense({"jsonrpc": "2.0", "id": 1, "result": {member: entries}})
        seeds.append(bytes([flags, 7]) + body)
        seeds.append(bytes([flags | 32, 5]) + b"id: 1\nevent: message\ndata: " + body + b"\n\n")
    request = dense({"jsonrpc": "2.0", "id": 2, "method": "sampling/createMessage", "params": {}})
    seeds.append(bytes([8 | 16 | 32, 3]) + b": c\r\n\r\ndata:\r\n\r\ndata: " + request + b"\r\n\r\n")
    seeds.append(bytes([8, 1]) + b"[" + request + b"," + dense({"jsonrpc": "2.0", "id": 3, "result": {"tools": []}}) + b"]")
    for m in messages:
        if isinstance(m, dict) and ("result" in m or "error" in m):
            seeds.append(bytes([0, 9]) + dense(m))
    return seeds


def config_seeds(messages):
    cat = catalog()
    seeds = [
        b"\x01" + dense(cat),
        b"\x02" + dense({"limits": {"max_body_bytes": 1024, "max_depth": 4}, "denial_status": 403}),
        b"\x02" + dense({"rate_limits": {"default": {"requests_per_second": 0.02, "burst": 3}}}),
        b"\x02" + dense({"ticket": {"signing_key_pem": "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"}}),
        b"\x02" + dense({"users": {"issuers": [{"issuer": "i", "audiences": ["a"], "jwks": {"keys": [{"kty": "oct", "k": "AA"}]}}]}}),
        b"\x02" + dense({"policy": {"modules": [{"name": "p.rego", "source": "package portcullis.authz\ndecision := {\"allow\": true}\n"}]}}),
        b"\x00" + dense({"policy": {"modules": []}, "catalog": {}, "ticket": {"signing_key_pem": ""}}),
    ]
    for tool in cat["tools"]:
        seeds.append(b"\x03" + dense({"tools": [tool]}))
    return seeds


def audit_seeds():
    records = [{"event": "gateway.decision", "time": "2026-09-21T10:13:20.000Z", "decision_id": f"d{i}", "n": i} for i in range(1, 6)]
    log = b"".join(dense(r) + b"\n" for r in records)
    return [
        b"\x03" + log + b"\x000\n2\n5\n",
        b"\x03" + log + b"\x004\n3\n",
        b"\x03" + log + b"\x006\n",
        b"\x03" + log + b"\x002 sha256:00\n",
        b"\x01" + log + b"{\"seq\":",
        b"\x00" + log,
        b"\x02\x001\n",
    ]


def main():
    messages = rust_tests()
    write("decide", decide_seeds(messages))
    write("plan_hash", plan_seeds(messages))
    write("ticket", ticket_seeds())
    write("user_jwt", user_jwt_seeds())
    write("listing", listing_seeds(messages))
    write("config", config_seeds(messages))
    write("audit_verify", audit_seeds())


if __name__ == "__main__":
    sys.exit(main())
