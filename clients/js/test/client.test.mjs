// The client against a real rtcore server: every method, every error path a client can reach.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  RequestError, ConnectionClosedError, ConnectError, ConnectionLostError, NotConnectedError,
} from "../rtcore-client.js";
import { startServer, client, next, collect, until, mintToken, nowSeconds, cleanupAll } from "./helpers.mjs";
import { TEST_CONFIG } from "./config.mjs";

let server;

before(async () => {
  server = await startServer({ config: TEST_CONFIG });
});

after(cleanupAll); // every client and server, also those of a failed test

/** A connected client, closed after the file's tests. */
async function connected(options = {}) {
  const c = client(server.url, options);
  await c.open();
  return c;
}

async function rejects(promise, Class, code) {
  const err = await promise.then(
    () => assert.fail(`expected ${Class.name} ${code}`),
    (e) => e,
  );
  assert.ok(err instanceof Class, `${err} is not a ${Class.name}`);
  assert.equal(err.code, code);
  return err;
}

const T = { timeout: 20000 };

test("open, join, presence with profiles, send both ways, leave, close", T, async () => {
  const ann = await connected({ profile: { name: "ann" } });
  const bob = await connected({ profile: { name: "bob" } });
  assert.equal(ann.isConnected(), true);
  assert.match(ann.getSocketId(), /^\S+$/);
  assert.notEqual(ann.getSocketId(), bob.getSocketId());
  assert.equal(ann.welcome.limits.max_channels, 3);

  assert.equal(await ann.join("room-1"), true);
  assert.equal(await ann.join("room-1"), false);
  const annSeesBob = next((fn) => ann.onJoin(fn));
  assert.equal(await bob.join("room-1"), true);
  const joined = await annSeesBob;
  assert.deepEqual(joined, {
    type: "join", channel: "room-1", member: { id: bob.getSocketId(), user: null, data: { name: "bob" } }, first: true,
  });
  const members = await ann.getMembers("room-1");
  assert.deepEqual(members.map((m) => m.data.name), ["ann", "bob"]);

  const bobGets = next((fn) => bob.on("chat", fn));
  const ack = await ann.send("room-1", "chat", { text: "hi bob" });
  assert.equal(ack.recipients, 2); // echo on: ann's own copy too
  assert.match(ack.mid, /\S/);
  const msg = await bobGets;
  assert.deepEqual(msg, {
    channel: "room-1", event: "chat", data: { text: "hi bob" }, sender: ann.getSocketId(), ts: ack.ts, mid: ack.mid,
  });
  const annGets = next((fn) => ann.on("chat", fn));
  await bob.send("room-1", "chat", { text: "hi ann" }, false);
  assert.equal((await annGets).data.text, "hi ann");

  const annSeesLeave = next((fn) => ann.onLeave(fn));
  assert.equal(await bob.leave("room-1"), true);
  assert.equal(await bob.leave("room-1"), false);
  const left = await annSeesLeave;
  assert.equal(left.member.id, bob.getSocketId());
  assert.equal(left.last, true);

  const disconnected = next((fn) => ann.onDisconnect(fn));
  await ann.close();
  assert.deepEqual(await disconnected, [1000, "client closed"]);
  assert.equal(ann.isConnected(), false);
  await rejects(ann.send("room-1", "chat", {}), NotConnectedError, "not_connected");
});

test("presence diffs and member_* frames give the same handler calls; own ones only with echo", T, async () => {
  const legacy = await connected({ presenceDiffs: false });
  const quiet = await connected({ echo: false }); // diffs, the default
  const loud = await connected(); // diffs, echo on
  const joinsSeen = (c) => collect((fn) => c.onJoin(fn));
  const [byLegacy, byQuiet, byLoud] = [legacy, quiet, loud].map(joinsSeen);
  for (const c of [legacy, quiet, loud]) await c.join("diffs");
  const ids = (seen) => seen.map((e) => e.member.id);
  await until(() => byLegacy.length === 3 && byQuiet.length === 1 && byLoud.length === 1, {
    what: "every join",
  });
  // legacy: its own join (echo) and the two later ones, as member_join frames
  assert.deepEqual(ids(byLegacy), [legacy, quiet, loud].map((c) => c.getSocketId()));
  // echo off: not its own join, only the later one; echo on: its own join
  assert.deepEqual(ids(byQuiet), [loud.getSocketId()]);
  assert.deepEqual(ids(byLoud), [loud.getSocketId()]);
  assert.ok(byQuiet.every((e) => e.type === "join" && e.channel === "diffs" && e.first === true));
  const leftSeen = next((fn) => legacy.onLeave(fn));
  const quietSeesLeave = next((fn) => quiet.onLeave(fn));
  await loud.leave("diffs");
  assert.equal((await leftSeen).member.id, loud.getSocketId());
  assert.equal((await quietSeesLeave).member.id, loud.getSocketId());
});

test("echo off: no own copy of sends; echo option per call", T, async () => {
  const quiet = await connected({ echo: false });
  const other = await connected();
  await quiet.join("echo-room");
  await other.join("echo-room");
  const seen = collect((fn) => quiet.on("*", fn));
  const ack = await quiet.send("echo-room", "note", 1);
  assert.equal(ack.recipients, 1);
  const ack2 = await quiet.send("echo-room", "note", 2, true);
  assert.equal(ack2.recipients, 2);
  await until(() => seen.length === 1, { what: "the echoed send" });
  assert.deepEqual(seen.map((m) => m.data), [2]);
});

test("getMembers pages through the whole channel", T, async () => {
  const clients = await Promise.all([1, 2, 3, 4, 5].map((n) => connected({ profile: { n } })));
  for (const c of clients) await c.join("paged");
  const members = await clients[0].getMembers("paged", { pageSize: 2 });
  assert.deepEqual(members.map((m) => m.data.n), [1, 2, 3, 4, 5]);
  assert.deepEqual(members.map((m) => m.id), clients.map((c) => c.getSocketId()));
  assert.deepEqual(await clients[0].getMembers("nobody-here"), []);
});

test("updateProfile reaches members; broadcast reaches everyone", T, async () => {
  const ann = await connected({ profile: { name: "ann" } });
  const bob = await connected();
  await ann.join("p-1");
  await bob.join("p-1");
  const update = next((fn) => bob.onUpdate(fn));
  assert.equal(await ann.updateProfile({ name: "ann", status: "away" }), 1);
  const ev = await update;
  assert.deepEqual(ev, { type: "update", channel: "p-1", member: { id: ann.getSocketId(), user: null, data: { name: "ann", status: "away" } } });
  assert.deepEqual(ann.profile, { name: "ann", status: "away" });

  const lonely = await connected(); // in no channel, still gets broadcasts
  const got = next((fn) => lonely.on("alert", fn));
  const ack = await ann.broadcast("alert", "restart soon", false);
  assert.ok(ack.recipients >= 2);
  const alert = await got;
  assert.equal(alert.channel, null);
  assert.equal(alert.data, "restart soon");
});

test("on, once, off", T, async () => {
  const c = await connected();
  await c.join("h-1");
  const all = collect((fn) => c.on("*", fn));
  const ones = collect((fn) => c.once("e", fn));
  const offMe = [];
  const handler = (m) => offMe.push(m);
  c.on("e", handler);
  const unsubscribe = c.on("e", () => offMe.push("second"));
  await c.send("h-1", "e", 1);
  c.off("e", handler);
  unsubscribe();
  await c.send("h-1", "e", 2);
  await until(() => all.length === 2, { what: "both events" });
  assert.equal(ones.length, 1);
  assert.deepEqual(offMe.map((m) => (typeof m === "string" ? m : m.data)), [1, "second"]);
  c.off();
  await c.send("h-1", "e", 3);
  await c.getMembers("h-1"); // a round trip: the msg (echoed before the ok) had its chance
  assert.equal(all.length, 2);
});

test("every refusal is a RequestError with the protocol's code", T, async () => {
  const c = await connected();
  await rejects(c.join("bad channel!"), RequestError, "invalid_channel");
  await c.join("e-1");
  await rejects(c.send("e-1", "", 1), RequestError, "invalid_event");
  await rejects(c.send("not-joined", "chat", 1), RequestError, "not_member");
  await c.join("e-2");
  await c.join("e-3");
  await rejects(c.join("e-4"), RequestError, "too_many_channels");
  await rejects(c.updateProfile({ bio: "x".repeat(300) }), RequestError, "profile_too_large");
  await rejects(c.getMembers("e-1", { pageSize: 11 }), RequestError, "bad_request");
  await c.leave("e-3");
  await c.join("readonly-news");
  await rejects(c.send("readonly-news", "chat", 1), RequestError, "forbidden");
  // A code this client has no name for still comes through as it is.
  await rejects(c._request((id) => ({ t: "nope", id })), RequestError, "unknown_type");
  await rejects(c.refresh("not-a-token"), RequestError, "invalid_token");
  assert.equal(c.isConnected(), true);
});

test("rate_limited carries the limiter and retryAfter; going on is closed with 4030, then reconnects", T, async () => {
  const c = await connected({ app: "limited" });
  await c.join("r-1");
  await c.send("r-1", "chat", 1);
  await c.send("r-1", "chat", 2);
  const err = await rejects(c.send("r-1", "chat", 3), RequestError, "rate_limited");
  assert.equal(err.limiter, "per-minute");
  assert.ok(err.retryAfter > 0 && err.retryAfter <= 60000, `retryAfter ${err.retryAfter}`);
  assert.equal(err.serverMessage, "At most 2 sends a minute.");
  await rejects(c.send("r-1", "chat", 4), RequestError, "rate_limited");
  await rejects(c.send("r-1", "chat", 5), RequestError, "rate_limited");
  const closed = next((fn) => c.onDisconnect(fn));
  const reconnected = next((fn) => c.onConnect(fn));
  // refusals_before_disconnect = 3: the fourth refusal in a row closes the connection.
  await rejects(c.send("r-1", "chat", 6), ConnectionLostError, "connection_lost");
  assert.equal((await closed)[0], 4030);
  const [id, info] = await reconnected;
  assert.equal(info.reconnected, true);
  assert.equal(id, c.getSocketId());
  assert.deepEqual([...c.channels.keys()], ["r-1"]); // rejoined
  assert.deepEqual((await c.getMembers("r-1")).map((m) => m.id), [id]);
});

test("a message over max_message_bytes closes with 1009; the client reconnects and rejoins", T, async () => {
  const c = await connected();
  await c.join("big");
  const closed = next((fn) => c.onDisconnect(fn));
  const reconnected = next((fn) => c.onConnect(fn));
  await rejects(c.send("big", "chat", "x".repeat(5000)), ConnectionLostError, "connection_lost");
  assert.equal((await closed)[0], 1009);
  await reconnected;
  assert.equal((await c.send("big", "chat", "small")).recipients, 1);
});

test("close codes reconnecting cannot fix end the client with ConnectionClosedError", T, async () => {
  const cases = [
    [{ app: "no-such-app" }, 4005],
    [{ app: "off" }, 4006],
    [{ app: "locked" }, 4010],
    [{ app: "locked", key: "wrong" }, 4011],
    [{ app: "locked", key: "pk_old" }, 4012],
    [{ app: "members-only" }, 4013],
    [{ app: "members-only", token: "not.a.jwt" }, 4014],
    [{ app: "members-only", token: mintToken({ sub: "u1", exp: nowSeconds() - 60 }) }, 4015],
  ];
  for (const [options, code] of cases) {
    const c = client(server.url, options);
    const errors = collect((fn) => c.onError(fn));
    const attempts = collect((fn) => c.onReconnectAttempt(fn));
    const err = await rejects(c.open(), ConnectionClosedError, code);
    assert.match(err.reason, /\S/);
    assert.deepEqual(errors, [err]);
    assert.deepEqual(attempts, []);
    await rejects(c.join("x"), ConnectionClosedError, code);
  }
  const ok = await connected({ app: "locked", key: "pk_test_1" });
  assert.equal(ok.isConnected(), true);
});

test("close() while the token provider is busy leaves no connection; open() again reconnects", T, async () => {
  let release;
  const c = client(server.url, { token: () => new Promise((r) => (release = r)) });
  const opening = c.open();
  await until(() => release, { what: "the provider to be asked" });
  const closing = c.close();
  release(null);
  await closing;
  await assert.rejects(opening, NotConnectedError);
  assert.equal(c._ws, null);
  assert.equal(c.isConnected(), false);
  c.token = null;
  const closeAgain = c.close();
  await c.open(); // called while nothing runs: a fresh start
  await closeAgain;
  assert.equal(c.isConnected(), true);
  const reopened = c.close().then(() => "closed");
  await c.open(); // called during close(): waits for it, then connects again
  assert.equal(await reopened, "closed");
  assert.equal(c.isConnected(), true);
});

test("without reconnect, a refused first attempt rejects open with ConnectError", T, async () => {
  const c = client("ws://127.0.0.1:1/", { reconnect: false });
  const err = await rejects(c.open(), ConnectError, "connect_failed");
  assert.equal(err.closeCode, 1006);
});

test("a full app (4020) is retried with backoff until there is room", T, async () => {
  const first = await connected({ app: "tiny" });
  const second = client(server.url, { app: "tiny" });
  const refused = next((fn) => second.onError(fn), { where: (e) => e.closeCode === 4020 });
  const attempts = collect((fn) => second.onReconnectAttempt(fn));
  const opened = second.open();
  await refused;
  await until(() => attempts.length >= 2, { what: "two reconnect attempts" });
  assert.equal(second.isConnected(), false);
  await first.close();
  await opened;
  assert.equal(second.isConnected(), true);
});

test("too many new connections from one address (4029) are retried with backoff", T, async () => {
  const limited = await startServer({ config: "[limits]\nconnect_burst_per_ip = 1\nconnect_rate_per_ip = 2.0\n" });
  const first = client(limited.url);
  await first.open();
  const second = client(limited.url);
  const refused = next((fn) => second.onError(fn), { where: (e) => e.closeCode === 4029 });
  const opened = second.open();
  const err = await refused;
  assert.ok(err instanceof ConnectError);
  await opened; // the bucket refills (2 a second) and a later attempt gets in
  assert.equal(second.isConnected(), true);
  assert.notEqual(second.getSocketId(), first.getSocketId());
  await limited.cleanup();
});

test("signed-in users: welcome.user, member.user, user events, refresh", T, async () => {
  const token = mintToken({ sub: "u1", sid: "s-1", exp: nowSeconds() + 600 });
  const c = await connected({ token });
  assert.equal(c.welcome.user, "u1");
  await c.join("signed");
  assert.equal((await c.getMembers("signed"))[0].user, "u1");
  const got = next((fn) => c.onUserEvent(fn));
  const res = await server.api("chat", "/user-events", { user: "u1", event: "profile_update", data: { id: "u1", name: "Ann" } });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const [name, sess, user, ts] = await got;
  assert.equal(name, "profile_update");
  assert.equal(sess, null);
  assert.deepEqual(user, { id: "u1", name: "Ann" });
  assert.equal(typeof ts, "number");
  const exp = nowSeconds() + 900;
  assert.equal(await c.refresh(mintToken({ sub: "u1", sid: "s-1", exp })), exp * 1000);
  await rejects(c.refresh(mintToken({ sub: "someone-else", exp })), RequestError, "forbidden");
});

test("a sign-out ends the session (4016): onSessionEnded, and no reconnect", T, async () => {
  const c = await connected({ token: mintToken({ sub: "u2", sid: "s-2", exp: nowSeconds() + 600 }) });
  const ended = next((fn) => c.onSessionEnded(fn));
  const attempts = collect((fn) => c.onReconnectAttempt(fn));
  await server.api("chat", "/user-events", { user: "u2", event: "signout", session: { id: "s-2" } });
  const err = await ended;
  assert.ok(err instanceof ConnectionClosedError);
  assert.equal(err.code, 4016);
  await rejects(c.send("x", "y"), ConnectionClosedError, 4016);
  assert.deepEqual(attempts, []);
});

test("a backend disconnect (4017) stops the client too", T, async () => {
  const c = await connected({ token: mintToken({ sub: "u3", exp: nowSeconds() + 600 }) });
  const ended = next((fn) => c.onSessionEnded(fn));
  await server.api("chat", "/users/u3/disconnect", {});
  assert.equal((await ended).code, 4017);
  assert.equal(c.isConnected(), false);
});

test("a token provider is asked again before expiry and the connection lives on", T, async () => {
  // The app closes connections whose token expired (checked every half heartbeat: 0.5 s).
  let calls = 0;
  const provider = async () => {
    calls += 1;
    return mintToken({ sub: "u4", exp: nowSeconds() + 3 });
  };
  const c = await connected({ app: "expiring", token: provider, refreshBefore: 2000 });
  const disconnects = collect((fn) => c.onDisconnect(fn));
  await until(() => calls >= 3, { timeout: 8000, what: "two refreshes" });
  assert.deepEqual(disconnects, []);
  assert.equal(c.isConnected(), true);
});

test("a static token that expires closes with 4015; a provider's next token reconnects", T, async () => {
  const stale = await connected({ app: "expiring", token: mintToken({ sub: "u5", exp: nowSeconds() + 2 }) });
  const closed = next((fn) => stale.onDisconnect(fn), { timeout: 8000 });
  assert.equal((await closed)[0], 4015);
  await until(() => !stale.isConnected() && stale._fatal, { what: "the client to stop" });
  assert.equal(stale._fatal.code, 4015);

  let calls = 0;
  const provider = () => {
    calls += 1;
    // The first token expires on its own; the client reconnects with the next.
    return mintToken({ sub: "u6", exp: nowSeconds() + (calls === 1 ? 2 : 600) });
  };
  const fresh = await connected({ app: "expiring", token: provider, refreshBefore: -5000 }); // too late to refresh
  const reconnected = next((fn) => fresh.onConnect(fn), { timeout: 8000 });
  assert.equal((await reconnected)[1].reconnected, true);
  assert.ok(calls >= 2);
});
