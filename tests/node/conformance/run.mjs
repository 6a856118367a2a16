#!/usr/bin/env node
// Runs every server scenario of the installed MCP conformance suite against one URL, one
// scenario at a time, and writes what passed.
//
//   node run.mjs --url http://127.0.0.1:PORT/mcp [--out results.json] [--timeout 60]
//                [--only name,name]
//
// The scenario list comes from the suite (`conformance list --server`), so a new suite version
// brings its new scenarios along. Each scenario runs as `conformance server --scenario NAME`
// in a scratch directory; the suite writes its checks to results/<dir>/checks.json there,
// which is read instead of the console text.
//
// Exit status: 0 when the suite ran (whatever the scenarios' outcome: the caller compares
// the sets), 2 when it could not (suite not installed, no scenarios, bad arguments, or not
// one scenario produced a result).

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

function die(msg) {
  console.error(`run.mjs: ${msg}`);
  process.exit(2);
}

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      url: { type: 'string' },
      out: { type: 'string' },
      timeout: { type: 'string', default: '60' },
      only: { type: 'string' },
    },
  }));
} catch (e) {
  die(e.message);
}
if (!opts.url) die('--url is required');
try {
  new URL(opts.url);
} catch {
  die(`not a URL: ${opts.url}`);
}
const timeoutMs = Number(opts.timeout) * 1000;
if (!(timeoutMs > 0)) die(`bad --timeout: ${opts.timeout}`);

// The suite is a CLI only (its entry point runs the CLI on import), so it is driven through
// its bin with this same node.
let suite;
try {
  const pkgPath = createRequire(import.meta.url).resolve('@modelcontextprotocol/conformance/package.json');
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8'));
  const bin = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin?.conformance;
  suite = { version: pkg.version, bin: path.resolve(path.dirname(pkgPath), bin) };
  if (!existsSync(suite.bin)) throw new Error(`missing ${suite.bin}`);
} catch (e) {
  die(`the conformance suite is not installed (run npm ci --ignore-scripts in tests/node): ${e.message}`);
}

function listScenarios() {
  const r = spawnSync(process.execPath, [suite.bin, 'list', '--server'], { encoding: 'utf8' });
  if (r.status !== 0) die(`conformance list failed: ${r.error?.message ?? r.stderr}`);
  const names = [];
  let inServer = false;
  for (const line of r.stdout.split('\n')) {
    if (/^Server scenarios/.test(line)) inServer = true;
    else if (/^\S/.test(line)) inServer = false;
    const m = inServer && line.match(/^\s+-\s+(\S+)\s*$/);
    if (m) names.push(m[1]);
  }
  if (names.length === 0) die(`conformance list --server listed no scenarios:\n${r.stdout}`);
  return names;
}

function readChecks(dir) {
  const results = path.join(dir, 'results');
  if (!existsSync(results)) return undefined;
  for (const d of readdirSync(results)) {
    const f = path.join(results, d, 'checks.json');
    if (existsSync(f)) return JSON.parse(readFileSync(f, 'utf8'));
  }
  return undefined;
}

const clip = (s, n = 300) => (s.length > n ? `${s.slice(0, n - 3)}...` : s);
const lastLine = (s) => s.trim().split('\n').filter(Boolean).pop() ?? '';

function runScenario(name) {
  const dir = mkdtempSync(path.join(tmpdir(), 'mcp-conformance-'));
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [suite.bin, 'server', '--url', opts.url, '--scenario', name], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, NO_COLOR: '1' },
    });
    let stderr = '';
    child.stdout.resume();
    child.stderr.on('data', (c) => { stderr = (stderr + c).slice(-4000); });
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
    child.on('error', (e) => { stderr += `\n${e.message}`; });
    child.on('close', (code) => {
      clearTimeout(timer);
      const seconds = (Date.now() - started) / 1000;
      let result;
      if (timedOut) {
        result = { pass: false, detail: `timed out after ${timeoutMs / 1000} s`, ran: true };
      } else {
        let checks;
        try {
          checks = readChecks(dir);
        } catch (e) {
          stderr += `\nunreadable checks.json: ${e.message}`;
        }
        if (!Array.isArray(checks)) {
          result = { pass: false, detail: clip(`no result from the suite (exit ${code}): ${lastLine(stderr)}`), ran: false };
        } else {
          const failed = checks.filter((c) => c.status === 'FAILURE');
          const detail = failed.map((c) => `${c.id}: ${c.errorMessage ?? c.description}`).join('; ');
          const pass = code === 0 && checks.length > 0 && failed.length === 0;
          result = { pass, detail: pass ? '' : clip(detail || `exit ${code} with ${checks.length} checks`), ran: true };
        }
      }
      rmSync(dir, { recursive: true, force: true });
      resolve({ ...result, seconds });
    });
  });
}

let names = listScenarios();
if (opts.only) {
  const wanted = opts.only.split(',').map((s) => s.trim()).filter(Boolean);
  const unknown = wanted.filter((w) => !names.includes(w));
  if (unknown.length) die(`not scenarios of this suite: ${unknown.join(', ')}`);
  names = names.filter((n) => wanted.includes(n));
}

const started = Date.now();
const scenarios = {};
let anyRan = false;
const width = Math.max(...names.map((n) => n.length));
for (const name of names) {
  const r = await runScenario(name);
  anyRan ||= r.ran;
  scenarios[name] = { pass: r.pass, detail: r.detail };
  const line = `${name.padEnd(width)}  ${r.pass ? 'PASS' : 'FAIL'}  ${r.seconds.toFixed(1).padStart(5)} s`;
  console.log(r.pass ? line : `${line}  ${r.detail}`);
}
const passed = Object.values(scenarios).filter((s) => s.pass).length;
console.log(`${passed}/${names.length} passed in ${((Date.now() - started) / 1000).toFixed(1)} s (suite ${suite.version}, ${opts.url})`);

if (opts.out) {
  writeFileSync(opts.out, `${JSON.stringify({ suite: suite.version, url: opts.url, scenarios }, null, 2)}\n`);
}
if (!anyRan) die('the suite produced no result for any scenario');
