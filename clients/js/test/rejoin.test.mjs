// A rejoin refused for a passing reason, or unanswered, keeps its channel (issue 24): the client
// retries with backoff, tells onError and onRejoining, and is never connected but not ready.
// Against a scripted server (ws + msgpack) on 127.0.0.1.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket, { WebSocketServer } from "ws";
import { decode, encode } from "@msgpack/msgpack";
import { RealtimeClient } from "../rtcore-client.js";

const servers = [];
after(() => Promise.all(servers.map((s) => new Promise((r) => s.close(r)))));

/** Connection 1: the join is answered ok, then 1011. Connection 2: its first join `second`
 * (an err code, or "silence"), the next ones ok; every other request ok. */
function scripted(second) {
  const joins = [];
  let connections = 0;
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  servers.push(wss);
  wss.on("connection", (ws) => {
    const number = ++connections;
    let hello = false;
    ws.on("message", (data) => {
      const frame = decode(data);
      const send = (f) => ws.send(encode(f));
      if (!hello) {
        hello = true;
        return send({ t: "welcome", v: 1, conn: `c${number}`, time: Date.now(), hb: 25000, limits: {} });
      }
      if (frame.t === "send") joins.push([number, `send ${frame.ch}`]);
      if (frame.t !== "join") return send({ t: "ok", id: frame.id, data: { mid: "m", ts: 0, recipients: 1 } });
      joins.push([number, frame.ch]);
      if (number === 1) {
        send({ t: "ok", id: frame.id, data: { joined: true } });
        return ws.close(1011, "going");
      }
      if (joins.length > 2) return send({ t: "ok", id: frame.id, data: { joined: true } });
      if (second !== "silence") send({ t: "err", id: frame.id, code: second, msg: "Redis is unreachable" });
    });
  });
  return new Promise((resolve) => wss.on("listening", () => resolve({ url: `ws://127.0.0.1:${wss.address().port}/`, joins })));
}

async function until(check, what) {
  for (let i = 0; i < 400; i++) {
    if (check()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

for (const second of ["broker_unavailable", "silence"]) {
  test(`a rejoin answered ${second} keeps the channel and the client gets ready`, async () => {
    const { url, joins } = await scripted(second);
    const client = new RealtimeClient({ url, WebSocket, requestTimeout: 300, backoffInitial: 50, backoffMax: 200 });
    const errors = [];
    const rejoining = [];
    client.onError((e) => errors.push(e));
    const sent = [];
    client.onRejoining((info) => {
      rejoining.push(info);
      client.send("feed", "e").then((r) => sent.push(r)); // waits for the rejoin
    });
    try {
      await client.open();
      await client.join("feed");
      await until(() => joins.length >= 4, "the retried join and the send");
      assert.deepEqual(joins, [[1, "feed"], [2, "feed"], [2, "feed"], [2, "send feed"]]);
      await until(() => sent.length === 1, "the send's reply");
      assert.deepEqual(await client.broadcast("e"), { mid: "m", ts: 0, recipients: 1 });
      assert.equal(client.isConnected(), true);
      const reason = second === "silence" ? "request_timeout" : second;
      assert.deepEqual(rejoining, [{ channel: "feed", reason, attempt: 1 }]);
      assert.equal(errors.length, 1);
      if (second !== "silence") assert.equal(errors[0].retrySafe, true);
    } finally {
      await client.close();
    }
  });
}

test("a rejoin refused for good drops the channel", async () => {
  const { url, joins } = await scripted("forbidden");
  const client = new RealtimeClient({ url, WebSocket, backoffInitial: 50, backoffMax: 200 });
  const errors = [];
  client.onError((e) => errors.push(e));
  try {
    await client.open();
    await client.join("feed");
    await until(() => joins.length >= 2 && client.isConnected(), "the refused rejoin");
    assert.deepEqual(await client.broadcast("e"), { mid: "m", ts: 0, recipients: 1 });
    assert.deepEqual(joins, [[1, "feed"], [2, "feed"]]);
    assert.equal(errors[0].code, "forbidden");
    assert.equal(errors[0].retrySafe, false);
  } finally {
    await client.close();
  }
});

test("a getChannelToken that fails during a rejoin keeps the channel and is asked again", async () => {
  const joins = [];
  let connections = 0;
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  servers.push(wss);
  wss.on("connection", (ws) => {
    const number = ++connections;
    let hello = false;
    ws.on("message", (data) => {
      const frame = decode(data);
      const send = (f) => ws.send(encode(f));
      if (!hello) {
        hello = true;
        return send({ t: "welcome", v: 1, conn: `c${number}`, time: Date.now(), hb: 25000, limits: {} });
      }
      if (frame.t === "join") joins.push([number, frame.token ?? null]);
      send({ t: "ok", id: frame.id, data: { joined: true } });
      if (number === 1) ws.close(1011, "going");
    });
  });
  await new Promise((resolve) => wss.on("listening", resolve));
  let asked = 0;
  const getChannelToken = async () => {
    asked += 1;
    if (asked === 2) throw new Error("the backend is down");
    return `token-${asked}`;
  };
  const url = `ws://127.0.0.1:${wss.address().port}/`;
  const client = new RealtimeClient({ url, WebSocket, getChannelToken, backoffInitial: 50, backoffMax: 200 });
  const errors = [];
  const rejoining = [];
  client.onError((e) => errors.push(e));
  client.onRejoining((info) => rejoining.push(info));
  try {
    await client.open();
    await client.join("room:1");
    await until(() => joins.length >= 2, "the retried rejoin");
    assert.deepEqual(joins, [[1, "token-1"], [2, "token-3"]]);
    assert.deepEqual(rejoining, [{ channel: "room:1", reason: "channel_token_unavailable", attempt: 1 }]);
    assert.equal(errors.length, 1);
    assert.match(errors[0].message, /the backend is down/);
    assert.equal(client.isConnected(), true);
  } finally {
    await client.close();
  }
});
