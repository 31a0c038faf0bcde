// Reconnecting: the server restarts on the same port; buffering, fail-fast, timeouts.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import {
  backoffDelay, BufferFullError, NotConnectedError, RequestTimeoutError,
} from "../rtcore-client.js";
import { startServer, client, next, collect, until, cleanupAll } from "./helpers.mjs";

after(cleanupAll); // also what a failed or timed-out test left running

const T = { timeout: 30000 };

test("after a server restart both clients reconnect, rejoin, resend profiles, keep chatting", T, async () => {
  let server = await startServer();
  const port = server.port;
  const ann = client(server.url, { profile: { name: "ann" } });
  const bob = client(server.url, { profile: { name: "bob" } });
  const quick = client(server.url, { failFast: true });
  const small = client(server.url, { bufferLimit: 1 });
  const all = [ann, bob, quick, small];
  try {
    await Promise.all(all.map((c) => c.open()));
    await ann.join("lobby");
    await bob.join("lobby");
    await ann.updateProfile({ name: "ann", status: "away" });
    const oldIds = [ann.getSocketId(), bob.getSocketId()];
    const disconnects = all.map((c) => next((fn) => c.onDisconnect(fn)));
    const attempts = collect((fn) => ann.onReconnectAttempt(fn));

    await server.stop(); // SIGTERM: every client gets 1001 going away
    for (const d of await Promise.all(disconnects)) assert.equal(d[0], 1001);
    assert.equal(ann.isConnected(), false);

    // While the server is down: requests wait (up to bufferLimit), or fail fast.
    await assert.rejects(quick.broadcast("x", 1), NotConnectedError);
    const waiting = small.broadcast("waited", 1);
    await assert.rejects(small.broadcast("x", 2), BufferFullError);
    const buffered = ann.send("lobby", "chat", { text: "sent while down" });
    await until(() => attempts.length >= 2, { what: "reconnect attempts" });

    const reconnected = all.map((c) => next((fn) => c.onConnect(fn), { timeout: 20000 }));
    server = await startServer({ port });
    for (const [, info] of await Promise.all(reconnected)) assert.equal(info.reconnected, true);
    assert.ok((await waiting).recipients >= 1);
    // Sent after ann's rejoin (else not_member): her own echo at least; bob may rejoin later.
    assert.ok((await buffered).recipients >= 1);

    assert.notDeepEqual([ann.getSocketId(), bob.getSocketId()], oldIds);
    const members = await bob.getMembers("lobby");
    assert.deepEqual(
      members.map((m) => [m.id, m.data]).sort(),
      [[ann.getSocketId(), { name: "ann", status: "away" }], [bob.getSocketId(), { name: "bob" }]].sort(),
    );
    const annGets = next((fn) => ann.on("chat", fn));
    await bob.send("lobby", "chat", { text: "back" });
    assert.equal((await annGets).data.text, "back");
  } finally {
    await Promise.all(all.map((c) => c.close()));
    await server.cleanup();
  }
});

test("a request the server does not answer in time rejects with RequestTimeoutError", T, async () => {
  const server = await startServer();
  const c = client(server.url, { requestTimeout: 300 });
  try {
    await c.open();
    server.proc.kill("SIGSTOP"); // the server hears nothing until SIGCONT
    try {
      const err = await c.broadcast("x", 1).catch((e) => e);
      assert.ok(err instanceof RequestTimeoutError, String(err));
      assert.equal(err.code, "timeout");
    } finally {
      server.proc.kill("SIGCONT");
    }
    assert.equal((await c.broadcast("x", 2)).recipients, 1); // the connection itself survived
  } finally {
    await c.close();
    await server.cleanup();
  }
});

test("the reconnect delay: jittered below a bound that doubles up to backoffMax", () => {
  const bounds = [1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, 500, 3000, () => 1));
  assert.deepEqual(bounds, [500, 1000, 2000, 3000, 3000, 3000]);
  assert.equal(backoffDelay(3, 500, 3000, () => 0.25), 500);
  assert.equal(backoffDelay(1, 500, 3000, () => 0), 0);
});
