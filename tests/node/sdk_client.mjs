#!/usr/bin/env node
// Drive the Portcullis gateway with the official MCP TypeScript SDK (@modelcontextprotocol/sdk,
// pinned in package.json): its `Client` over its `StreamableHTTPClientTransport`, whose fetch
// is undici's with an `Agent` that trusts only the stack's CA and presents an agent's client
// certificate (mTLS).
//
//   node sdk_client.mjs --url U --ca F --cert F --key F [--authorization "Bearer ..."]
//                       --script JSON [--timeout SECONDS]
//
// The script is a JSON array of steps, run in order on one session:
//   {"op":"list_tools"}                                   ok: {"tools": [names]}
//   {"op":"call","tool":NAME,"arguments":{...}}           ok: the CallToolResult
//   {"op":"ping"}                                         ok: {}
// Prints ONE JSON line: {"sdk", "protocol_version", "connect", "steps"}, where `connect` and
// every step are {"ok": ..., "http": [...]} or {"error": {"kind", "code", "message", "data"},
// "http": [...]}. kind is "mcp" (the SDK raised McpError: a JSON-RPC error answer, or one the
// SDK made itself such as its request timeout, whose code -32001 is also the gateway's denial
// code, so callers tell them apart by `data`), "transport" (StreamableHTTPError: code is the
// HTTP status) or "other" (e.g. TLS refused; message has the cause chain). `http` lists the
// POSTs the step made: JSON-RPC method, id and the HTTP status that answered.
// Exit status: 0 connected and every step ran (a step's error is data, not a failure);
// 1 no session (connect failed, or the run timed out); 2 bad usage.
//
// SDK 1.32.2 speaks protocol versions up to 2025-11-25 and always opens a session with
// initialize; it has no stateless (server/discover) mode, so this client has none either.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Agent, fetch as undiciFetch } from 'undici';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';

// The installed SDK's own version (its package exports do not include package.json).
const SDK_VERSION = JSON.parse(readFileSync(new URL('./node_modules/@modelcontextprotocol/sdk/package.json', import.meta.url))).version;

function usage(message) {
    process.stdout.write(JSON.stringify({ sdk: SDK_VERSION, usage_error: message }) + '\n');
    process.exit(2);
}

function options() {
    let values;
    try {
        ({ values } = parseArgs({
            options: {
                url: { type: 'string' },
                ca: { type: 'string' },
                cert: { type: 'string' },
                key: { type: 'string' },
                authorization: { type: 'string' },
                script: { type: 'string' },
                timeout: { type: 'string', default: '60' }
            }
        }));
    } catch (e) {
        usage(String(e.message));
    }
    for (const name of ['url', 'ca', 'script']) {
        if (values[name] === undefined) usage(`--${name} is required`);
    }
    if ((values.cert === undefined) !== (values.key === undefined)) usage('--cert and --key go together');
    let script;
    try {
        script = JSON.parse(values.script);
    } catch (e) {
        usage(`--script is not JSON: ${e.message}`);
    }
    if (!Array.isArray(script)) usage('--script must be a JSON array of steps');
    const timeoutMs = Number(values.timeout) * 1000;
    if (!(timeoutMs > 0)) usage('--timeout must be a positive number of seconds');
    return { ...values, script, timeoutMs };
}

// The JSON-RPC method and id inside a POST body, for the step's `http` record.
function rpcOf(body) {
    try {
        const m = JSON.parse(typeof body === 'string' ? body : '');
        return { method: m.method ?? null, id: m.id ?? null };
    } catch {
        return { method: null, id: null };
    }
}

// A fetch that goes through `agent` (the client certificate) and records each POST.
function recordingFetch(agent, log) {
    return async (url, init) => {
        const response = await undiciFetch(url, { ...init, dispatcher: agent });
        if ((init?.method ?? 'GET') === 'POST') log.push({ ...rpcOf(init.body), status: response.status });
        return response;
    };
}

// An error and its causes, outermost first: fetch failures hide the TLS reason in `cause`.
function causeChain(error) {
    const out = [];
    for (let e = error; e !== undefined && e !== null && out.length < 8; e = e.cause) {
        out.push(e instanceof Error ? `${e.name}${e.code ? ` [${e.code}]` : ''}: ${e.message}` : String(e));
    }
    return out.join(' <- ');
}

// The JSON-RPC body inside a StreamableHTTPError's message, if there is one.
function bodyOf(message) {
    const at = message.indexOf('{');
    if (at < 0) return null;
    try {
        return JSON.parse(message.slice(at));
    } catch {
        return null;
    }
}

function describe(error) {
    if (error instanceof McpError) {
        // McpError prefixes the server's message with "MCP error <code>: ".
        const prefix = `MCP error ${error.code}: `;
        const message = error.message.startsWith(prefix) ? error.message.slice(prefix.length) : error.message;
        return { kind: 'mcp', code: error.code, message, data: error.data ?? null };
    }
    if (error instanceof StreamableHTTPError) {
        return { kind: 'transport', code: error.code ?? null, message: error.message, data: bodyOf(error.message) };
    }
    return { kind: 'other', code: error?.code ?? null, message: causeChain(error), data: null };
}

async function runStep(client, step, requestOptions) {
    switch (step?.op) {
        case 'list_tools': {
            const listed = await client.listTools(undefined, requestOptions);
            return { tools: listed.tools.map(t => t.name) };
        }
        case 'call':
            return await client.callTool({ name: step.tool, arguments: step.arguments ?? {} }, undefined, requestOptions);
        case 'ping':
            return await client.ping(requestOptions);
        default:
            throw new Error(`unknown step ${JSON.stringify(step)}`);
    }
}

// Runs `fn`, recording the POSTs it made; returns {"ok"} or {"error"} with them.
async function recorded(log, fn) {
    const from = log.length;
    try {
        const ok = await fn();
        return { ok: ok ?? null, http: log.slice(from) };
    } catch (error) {
        return { error: describe(error), http: log.slice(from) };
    }
}

async function main() {
    const opts = options();
    const agent = new Agent({
        connect: {
            ca: readFileSync(opts.ca),
            ...(opts.cert ? { cert: readFileSync(opts.cert), key: readFileSync(opts.key) } : {})
        }
    });
    const log = [];
    const summary = { sdk: SDK_VERSION, protocol_version: null, connect: null, steps: [] };
    // Whatever happens, one JSON line comes out, and within the timeout.
    const deadline = setTimeout(() => {
        summary.timed_out = true;
        process.stdout.write(JSON.stringify(summary) + '\n');
        process.exit(1);
    }, opts.timeoutMs + 5000);

    const transport = new StreamableHTTPClientTransport(new URL(opts.url), {
        fetch: recordingFetch(agent, log),
        ...(opts.authorization ? { requestInit: { headers: { Authorization: opts.authorization } } } : {})
    });
    const client = new Client({ name: 'portcullis-ts-sdk-client', version: '1' });
    const requestOptions = { timeout: opts.timeoutMs };
    summary.connect = await recorded(log, async () => {
        await client.connect(transport, requestOptions);
        return { server: client.getServerVersion() ?? null, session: transport.sessionId ?? null };
    });
    summary.protocol_version = transport.protocolVersion ?? null;
    if (summary.connect.ok !== undefined) {
        for (const step of opts.script) {
            summary.steps.push(await recorded(log, () => runStep(client, step, requestOptions)));
        }
    }
    await client.close().catch(() => {});
    clearTimeout(deadline);
    process.stdout.write(JSON.stringify(summary) + '\n');
    await agent.destroy().catch(() => {});
    process.exit(summary.connect.ok !== undefined ? 0 : 1);
}

main().catch(error => {
    process.stdout.write(JSON.stringify({ sdk: SDK_VERSION, crashed: causeChain(error) }) + '\n');
    process.exit(1);
});
