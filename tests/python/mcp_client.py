"""Drive the Portcullis gateway with the official MCP Python SDK (PyPI `mcp`, 2.x).

Connects over Streamable HTTP through Envoy with an httpx2 client that presents an agent's
client certificate (mTLS, trusting only the stack's CA) and an `Authorization: Bearer` user
token, then: initialize, tools/list, one allowed tools/call (its text result is checked) and
one denied tools/call (the SDK must raise MCPError with the gateway's -32001, its reason, and
data with the policy's reasons and rule ids; the summary says which HTTP status carried it).

Prints one JSON summary on stdout. Exit status:
  0  every check passed
  1  a check failed (the summary says which, under "failures")
  3  no HTTP response at all: the connection failed (e.g. TLS without a client certificate);
     the summary's "connect_error" has the SDK's exception chain and "tls_probe" what a bare
     TLS handshake and read with the same settings got from the server (e.g. its alert)
Run by tests/tests/cases/python_sdk.rs with .venv/bin/python (scripts/setup.sh installs it).
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

POLICY_DENIED = -32001


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="gateway endpoint, https://HOST:PORT/mcp")
    p.add_argument("--ca", required=True, help="PEM CA certificate the gateway's certificate must chain to")
    p.add_argument("--cert", help="client certificate (PEM); omit to connect without one")
    p.add_argument("--key", help="client certificate's private key (PEM)")
    p.add_argument("--token", help="user JWT, sent as Authorization: Bearer on every request")
    p.add_argument("--allowed-tool", default="word_count")
    p.add_argument("--allowed-args", default='{"text": "the python sdk went through the gateway"}')
    p.add_argument("--expect-text", default="7", help="the allowed call's text result (stripped)")
    p.add_argument("--denied-tool", default="apply_config")
    p.add_argument("--denied-args", default='{"name": "app", "content": "replicas: 3"}')
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole run")
    args = p.parse_args()
    if (args.cert is None) != (args.key is None):
        p.error("--cert and --key go together")
    return args


def ssl_context(args: argparse.Namespace) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=args.ca)
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    return ctx


class Wire:
    """What went over HTTP, seen through httpx2 event hooks: which requests carried the
    bearer token, and for every answer to a POST the JSON-RPC id it answered, its status and
    (when it is plain JSON, never an event stream that may not end) its body."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.replies: list[dict[str, Any]] = []

    async def on_request(self, request: httpx2.Request) -> None:
        rpc = _json(request.content) if request.method == "POST" else None
        self.requests.append({
            "method": request.method,
            "rpc_method": rpc.get("method") if isinstance(rpc, dict) else None,
            "rpc_id": rpc.get("id") if isinstance(rpc, dict) else None,
            "bearer": request.headers.get("authorization", "").startswith("Bearer "),
        })

    async def on_response(self, response: httpx2.Response) -> None:
        self.statuses.append(response.status_code)
        if response.request.method != "POST":
            return
        rpc = _json(response.request.content)
        body = None
        if response.headers.get("content-type", "").lower().startswith("application/json"):
            # Read here, the SDK reads it again from httpx2's cache.
            body = _json(await response.aread())
        self.replies.append({
            "status": response.status_code,
            "rpc_id": rpc.get("id") if isinstance(rpc, dict) else None,
            "body": body,
        })


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def session_run(args: argparse.Namespace, wire: Wire, summary: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    http = httpx2.AsyncClient(
        verify=ssl_context(args),
        headers=headers,
        timeout=httpx2.Timeout(30.0, read=args.timeout),
        trust_env=False,  # never an HTTPS proxy from the environment: this is about our TLS
        event_hooks={"request": [wire.on_request], "response": [wire.on_response]},
    )
    async with http, streamable_http_client(args.url, http_client=http) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            summary["connected"] = True
            summary["protocol_version"] = init.protocol_version
            summary["server"] = init.server_info.name

            listed = await session.list_tools()
            summary["tools"] = sorted(t.name for t in listed.tools)

            result = await session.call_tool(args.allowed_tool, json.loads(args.allowed_args))
            texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
            summary["allowed"] = {"tool": args.allowed_tool, "is_error": result.is_error, "text": "".join(texts).strip()}

            sent_before = len(wire.requests)
            try:
                denied = await session.call_tool(args.denied_tool, json.loads(args.denied_args))
                summary["denied"] = {"tool": args.denied_tool, "raised": False, "result": denied.model_dump(mode="json")}
            except MCPError as e:
                calls = [r for r in wire.requests[sent_before:] if r["rpc_method"] == "tools/call"]
                request_id = calls[-1]["rpc_id"] if calls else None
                answers = [r for r in wire.replies if request_id is not None and r["rpc_id"] == request_id]
                reply = answers[-1] if answers else {}
                summary["denied"] = {
                    "tool": args.denied_tool,
                    "raised": True,
                    "code": e.code,
                    "message": e.message,
                    "data": e.data,
                    "request_id": request_id,
                    "http_status": reply.get("status"),
                    "reply_id": (reply.get("body") or {}).get("id"),
                }


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups; anyio task groups wrap transport errors."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in leaves(e)]
    return [exc]


def describe(exc: BaseException) -> list[str]:
    """An exception and its causes, each as 'Type: message', outermost first."""
    out: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(out) < 8:
        out.append(f"{type(seen).__module__}.{type(seen).__qualname__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return out


def tls_probe(args: argparse.Namespace) -> dict[str, Any]:
    """A bare TLS handshake and a one-byte read to the gateway with the client's settings. In
    TLS 1.3 the server checks the client certificate after the handshake, so its refusal (an
    alert such as certificate_required) arrives on the first read."""
    url = urlsplit(args.url)
    host, port = url.hostname or "", url.port or 443
    out: dict[str, Any] = {"handshake": None, "error": None}
    try:
        with socket.create_connection((host, port), timeout=10) as raw:
            with ssl_context(args).wrap_socket(raw, server_hostname=host) as tls:
                out["handshake"] = tls.version()
                tls.recv(1)
    except (OSError, ssl.SSLError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    return out


def check(args: argparse.Namespace, summary: dict[str, Any], wire: Wire) -> list[str]:
    failures: list[str] = []
    tools = summary.get("tools", [])
    if args.allowed_tool not in tools:
        failures.append(f"tools/list lacks {args.allowed_tool}: {tools}")
    allowed = summary.get("allowed", {})
    if allowed.get("is_error") or allowed.get("text") != args.expect_text:
        failures.append(f"allowed call: want text {args.expect_text!r}, got {allowed}")
    denied = summary.get("denied", {})
    if not denied.get("raised"):
        failures.append(f"denied call: the SDK raised no MCPError: {denied}")
    else:
        if denied.get("code") != POLICY_DENIED:
            failures.append(f"denied call: want code {POLICY_DENIED}, got {denied.get('code')}")
        if args.denied_tool not in (denied.get("message") or ""):
            failures.append(f"denied call: reason does not name {args.denied_tool}: {denied.get('message')!r}")
        data = denied.get("data") if isinstance(denied.get("data"), dict) else {}
        for member in ("reasons", "rule_ids"):
            if not (isinstance(data.get(member), list) and data[member]):
                failures.append(f"denied call: the error's data has no {member}: {denied.get('data')!r}")
        if denied.get("request_id") is None or denied.get("reply_id") != denied.get("request_id"):
            failures.append(f"denied call: the error reply's id is not the request's: {denied}")
    if args.token and not all(r["bearer"] for r in wire.requests):
        failures.append("a request went out without the bearer token")
    return failures


def main() -> int:
    args = parse_args()
    wire = Wire()
    summary: dict[str, Any] = {"sdk": _sdk_version(), "url": args.url, "client_cert": bool(args.cert), "connected": False}
    status = 0
    try:
        anyio.run(_bounded, args, wire, summary)
    except BaseException as exc:  # noqa: BLE001 - every failure goes into the summary
        if isinstance(exc, KeyboardInterrupt):
            raise
        errors = [describe(e) for e in leaves(exc)]
        if wire.statuses:
            summary["failures"] = [f"session failed: {errors}"]
            status = 1
        else:
            summary["connect_error"] = errors
            summary["tls_probe"] = tls_probe(args)
            status = 3
    if status == 0:
        summary["failures"] = check(args, summary, wire)
        status = 1 if summary["failures"] else 0
    summary["requests"] = [f"{r['method']} {r['rpc_method'] or ''}".strip() for r in wire.requests]
    summary["http_statuses"] = wire.statuses
    summary["bearer_on_every_request"] = bool(wire.requests) and all(r["bearer"] for r in wire.requests)
    json.dump(summary, sys.stdout, indent=2, default=str)
    print()
    return status


async def _bounded(args: argparse.Namespace, wire: Wire, summary: dict[str, Any]) -> None:
    with anyio.fail_after(args.timeout):
        await session_run(args, wire, summary)


def _sdk_version() -> str:
    from importlib.metadata import version

    return version("mcp")


if __name__ == "__main__":
    sys.exit(main())
