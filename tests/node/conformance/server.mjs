#!/usr/bin/env node
// Reference MCP server for the conformance suite's server scenarios, on the official TypeScript
// SDK: Streamable HTTP at /mcp with stateful sessions (POST, GET stream, DELETE) and
// Last-Event-ID resumption.
//
//   node server.mjs [--port N] [--host H]
//
// Port 0 (the default) lets the system pick; once listening it prints exactly one line,
// `listening <port>`, on stdout (diagnostics go to stderr).

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { SessionEventStore } from './event-store.mjs';
import { createHub, createSessionServer } from './features.mjs';

const MAX_BODY = 4 * 1024 * 1024;
// A session with no request in flight for this long is closed, as a deployed server would.
const IDLE_MS = 30 * 60 * 1000;

const { values: opts } = parseArgs({
  options: { port: { type: 'string', default: '0' }, host: { type: 'string', default: '127.0.0.1' } },
});
const port = Number(opts.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`bad --port: ${opts.port}`);
  process.exit(2);
}

const hub = createHub();
const sessions = new Map(); // mcp-session-id -> { transport, session, open, lastSeen }

function jsonError(res, status, code, message) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }));
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error('body too large'), { status: 413 }));
        req.destroy();
      } else {
        chunks.push(c);
      }
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function newSession() {
  const session = createSessionServer(hub);
  const transport = new StreamableHTTPServerTransport({
    sessionIdGenerator: () => randomUUID(),
    eventStore: new SessionEventStore(),
    onsessioninitialized: (id) => {
      sessions.set(id, { transport, session, open: 0, lastSeen: Date.now() });
      hub.sessions.add(session);
    },
  });
  transport.onclose = () => {
    const id = transport.sessionId;
    if (id !== undefined) sessions.delete(id);
    hub.sessions.delete(session);
  };
  await session.mcp.connect(transport);
  return transport;
}

// Counts requests in flight so that a session holding an open stream is never idle.
function track(entry, res) {
  entry.open += 1;
  entry.lastSeen = Date.now();
  res.on('close', () => {
    entry.open -= 1;
    entry.lastSeen = Date.now();
  });
}

async function handle(req, res) {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (url.pathname !== '/mcp') return jsonError(res, 404, -32601, 'Not found: the endpoint is /mcp');
  if (!['POST', 'GET', 'DELETE'].includes(req.method ?? '')) {
    res.setHeader('allow', 'GET, POST, DELETE');
    return jsonError(res, 405, -32000, 'Method not allowed');
  }
  const sid = req.headers['mcp-session-id'];
  const entry = typeof sid === 'string' ? sessions.get(sid) : undefined;

  if (req.method !== 'POST') {
    if (sid === undefined) return jsonError(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
    if (!entry) return jsonError(res, 404, -32001, 'Session not found');
    track(entry, res);
    return entry.transport.handleRequest(req, res);
  }

  let body;
  try {
    body = JSON.parse(await readBody(req));
  } catch (e) {
    if (e.status === 413) return jsonError(res, 413, -32000, 'Request body too large');
    return jsonError(res, 400, -32700, 'Parse error');
  }
  if (entry) {
    track(entry, res);
    return entry.transport.handleRequest(req, res, body);
  }
  if (sid !== undefined) return jsonError(res, 404, -32001, 'Session not found');
  if (!isInitializeRequest(body)) {
    return jsonError(res, 400, -32000, 'Bad Request: no session; the first request must be initialize');
  }
  const transport = await newSession();
  return transport.handleRequest(req, res, body);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((e) => {
    console.error('request failed:', e);
    if (!res.headersSent) jsonError(res, 500, -32603, 'Internal error');
    else res.end();
  });
});

const sweep = setInterval(() => {
  const now = Date.now();
  for (const entry of sessions.values()) {
    if (entry.open === 0 && now - entry.lastSeen > IDLE_MS) entry.transport.close().catch(() => {});
  }
}, 60 * 1000);
sweep.unref();

async function shutdown() {
  clearInterval(sweep);
  await Promise.allSettled([...sessions.values()].map((e) => e.transport.close()));
  server.close(() => process.exit(0));
  // Idle keep-alive connections would otherwise hold the server open.
  server.closeIdleConnections();
  // Streams still draining must not keep the process alive for long.
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);

server.listen(port, opts.host, () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
