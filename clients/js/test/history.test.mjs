// History: positions, recovery over a dropped connection, epoch_changed after a restart,
// duplicates dropped, history pages (protocol.md §4.4.1, §4.11).

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { RequestError } from "../rtcore-client.js";
import { startServer, client, next, until, cleanupAll, SERVER_SECRET } from "./helpers.mjs";

after(cleanupAll);

const T = { timeout: 30000 };

const CONFIG = `
[[apps]]
name = "default"
server_secret = "${SERVER_SECRET}"

[[apps.channels]]
pattern = "feed*"
history_size = 1000
history_ttl = 300

[[apps.channels]]
pattern = "closed*"
history_size = 10
history = "nobody"
`;

async function publish(server, first, count) {
  for (let i = first; i < first + count; i++) {
    const { status } = await server.api("default", "/send", { channel: "feed", event: "e", data: i });
    assert.equal(status, 200);
  }
}

test("a dropped connection recovers every message once, in order; a restart says epoch_changed", T, async () => {
  let server = await startServer({ config: CONFIG });
  const port = server.port;
  const ann = client(server.url);
  const got = [];
  const recoveries = [];
  ann.on("*", (m) => got.push(m.data));
  ann.onRecover((r) => recoveries.push(r));
  await ann.open();
  await ann.join("feed");
  assert.deepEqual(ann.positions.get("feed").offset, 0);
  await publish(server, 0, 20);
  await until(() => got.length === 20, { what: "the first 20" });

  const reconnected = next((fn) => ann.onConnect(fn));
  ann._ws.terminate(); // abrupt: no close frame
  await publish(server, 20, 200); // while it is away
  await reconnected;
  await until(() => recoveries.length === 1, { what: "the recovery" });
  await publish(server, 220, 5);
  await until(() => got.length >= 225, { what: "every message" });
  assert.deepEqual(got, Array.from({ length: 225 }, (_, i) => i));
  assert.deepEqual(
    { recovered: recoveries[0].recovered, reason: recoveries[0].reason, channel: recoveries[0].channel },
    { recovered: true, reason: null, channel: "feed" },
  );
  assert.equal(ann.positions.get("feed").offset, 225);

  // A restarted memory node has lost the stream: told plainly, then live again.
  await server.stop();
  server = await startServer({ config: CONFIG, port });
  await until(() => recoveries.length === 2, { what: "the second rejoin", timeout: 20000 });
  assert.equal(recoveries[1].recovered, false);
  assert.equal(recoveries[1].reason, "epoch_changed");
  await publish(server, 1000, 1);
  await until(() => got.length === 226, { what: "the live message" });
  assert.equal(got[225], 1000);
});

test("duplicates at or before the position are dropped; history pages; permissions", T, async () => {
  const server = await startServer({ config: CONFIG });
  const bob = client(server.url);
  const got = [];
  bob.on("*", (m) => got.push(m.offset));
  await bob.open();
  await publish(server, 0, 7);
  const first = await bob.history("feed", { limit: 3 });
  assert.deepEqual(first.messages.map((m) => m.data), [0, 1, 2]);
  assert.equal(first.top.offset, 7);
  // protocol.md §4.11's reply shape: messages, epoch, offset, next
  assert.deepEqual(Object.keys(first).slice(0, 4), ["messages", "epoch", "offset", "next"]);
  assert.equal(first.offset, 7);
  assert.deepEqual(first.top, { epoch: first.epoch, offset: 7 });
  assert.equal(typeof first.epoch, "string");
  const rest = await bob.history("feed", { since: first.next, limit: 10 });
  assert.deepEqual(rest.messages.map((m) => m.offset), [4, 5, 6, 7]);
  assert.equal(rest.next, null);
  const newest = await bob.history("feed", { limit: 2, reverse: true });
  assert.deepEqual(newest.messages.map((m) => m.offset), [7, 6]);
  await assert.rejects(bob.history("closed"), (e) => e instanceof RequestError && e.code === "forbidden");
  await assert.rejects(bob.history("plain"), (e) => e.code === "history_unavailable");

  // Joining from a saved position replays what followed it; a frame repeating it is dropped.
  await bob.join("feed", undefined, { epoch: first.top.epoch, offset: 5 });
  await until(() => got.length === 2, { what: "the replay" });
  assert.deepEqual(got, [6, 7]);
  bob._dispatch({ t: "msg", ch: "feed", ev: "e", data: 0, from: null, ts: 0, mid: "x", offset: 7, epoch: first.top.epoch });
  assert.deepEqual(got, [6, 7]);
});
