// Test support: a real rtcore server as a child process, tokens, the server API.

import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, writeFileSync, existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { RealtimeClient } from "../rtcore-client.js";

export const HERE = dirname(fileURLToPath(import.meta.url));
export const JS_ROOT = resolve(HERE, "..");
export const REPO = resolve(JS_ROOT, "..", "..");

/** The Python that runs rtcore: $RTCORE_PYTHON, else the repository's .venv, else python3. */
export function python() {
  if (process.env.RTCORE_PYTHON) return process.env.RTCORE_PYTHON;
  const venv = join(REPO, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

// Everything a test file starts, so that `cleanupAll` (each file's last `after` hook) can end
// it even when a test failed or timed out before its own cleanup ran.
const servers = new Set();
const clients = new Set();

/** Close every client and stop every server this process started. */
export async function cleanupAll() {
  await Promise.all([...clients].map((c) => c.close()));
  await Promise.all([...servers].map((s) => s.cleanup()));
}

process.on("exit", () => {
  for (const s of servers) if (s.proc.exitCode === null) s.proc.kill("SIGKILL");
});

export const SERVER_SECRET = "s".repeat(40);
export const JWT_SECRET = "j".repeat(40);

/** An HS256 JWT signed with JWT_SECRET. */
export function mintToken(claims) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const sig = createHmac("sha256", JWT_SECRET).update(body).digest("base64url");
  return `${body}.${sig}`;
}

export const nowSeconds = () => Math.floor(Date.now() / 1000);

/**
 * A running `rtcore serve` on 127.0.0.1 (a free port unless `port` is given), with `config`
 * (TOML text, or none for the embedded default); `env`: variables added to its environment.
 */
export async function startServer({ config = null, port = 0, timeout = 20000, env = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "rtcore-js-"));
  const args = ["-m", "rtcore.cli", "serve", "--port", String(port), "--api-port", "0"];
  if (config !== null) {
    const path = join(dir, "rtcore.toml");
    writeFileSync(path, config);
    args.push("--config", path);
  }
  const proc = spawn(python(), args, { cwd: REPO, env: { ...process.env, ...env }, stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  const started = await new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`rtcore did not start in time:\n${log}`)), timeout);
    proc.stderr.on("data", (chunk) => {
      log += chunk;
      const ws = /serving on 127\.0\.0\.1:(\d+)/.exec(log);
      const api = /server API on http:\/\/127\.0\.0\.1:(\d+)/.exec(log);
      if (ws && api) {
        clearTimeout(timer);
        resolvePromise({ port: Number(ws[1]), apiPort: Number(api[1]) });
      }
    });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`rtcore exited with ${code}:\n${log}`));
    });
  });
  const server = {
    ...started,
    proc,
    configDir: dir,
    url: `ws://127.0.0.1:${started.port}/`,
    http: `http://127.0.0.1:${started.port}`,
    log: () => log,
    async stop() {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.once("exit", r));
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 10000);
      await exited;
      clearTimeout(timer);
    },
    async cleanup() {
      await server.stop();
      servers.delete(server);
      rmSync(dir, { recursive: true, force: true });
    },
    /** POST to the server API of `app` (needs the app's server_secret = SERVER_SECRET). */
    async api(app, path, body) {
      const res = await fetch(`http://127.0.0.1:${started.apiPort}/v1/apps/${app}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${SERVER_SECRET}`, "content-type": "application/json" },
        body: JSON.stringify(body ?? {}),
      });
      return { status: res.status, body: await res.json() };
    },
  };
  servers.add(server);
  return server;
}

/** A client on the ws package's WebSocket, with fast reconnects for tests. */
export function client(url, options = {}) {
  const c = new RealtimeClient({ url, WebSocket, backoffInitial: 50, backoffMax: 200, ...options });
  clients.add(c);
  return c;
}

/** Resolve with the arguments of the next call of a handler registered by `register(fn)`. */
export function next(register, { timeout = 5000, where = () => true } = {}) {
  return new Promise((resolvePromise, reject) => {
    let off = null;
    const timer = setTimeout(() => {
      off?.();
      reject(new Error("timed out waiting for an event"));
    }, timeout);
    off = register((...args) => {
      if (!where(...args)) return;
      clearTimeout(timer);
      off();
      resolvePromise(args.length === 1 ? args[0] : args);
    });
  });
}

/** Collect the first argument of every call of a handler. */
export function collect(register) {
  const seen = [];
  register((first) => seen.push(first));
  return seen;
}

/** Wait until `check()` is truthy (polling every 20 ms), at most `timeout` ms. */
export async function until(check, { timeout = 5000, what = "a condition" } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
