// Conformance with protocol.md: every hex example, parsed out of protocol.md at test time.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { decode } from "@msgpack/msgpack";
import {
  decodeFrame, encodeFrame, frames, messageEvent, memberEvent, presenceEvents, userEvent, ProtocolError,
} from "../rtcore-client.js";
import { REPO, client, next, cleanupAll } from "./helpers.mjs";

after(cleanupAll);

const DOC = readFileSync(join(REPO, "protocol.md"), "utf8");
const EXAMPLES = [...DOC.matchAll(/```(frame|wsframe)\n(.*?)\n\n(.*?)\n```/gs)].map(([, kind, hex, json]) => ({
  kind,
  bytes: Uint8Array.from(Buffer.from(hex.replace(/\s+/g, ""), "hex")),
  value: JSON.parse(json),
}));
const FRAMES = EXAMPLES.filter((e) => e.kind === "frame");
const CLIENT_TYPES = ["hello", "join", "leave", "members", "profile", "send", "broadcast", "refresh", "history"];
// (presence_paused and presence_resumed go only to clients without presence diffs, §5.2.2:
// this client always asks for them, but parses every documented frame)
const SERVER_TYPES = [
  "welcome", "ok", "err", "msg", "member_join", "member_leave", "member_update", "presence",
  "presence_paused", "presence_resumed", "user", "left", "joined", "gap",
];

/** The client's frame builder called with the fields of a documented client frame. */
function build(v) {
  switch (v.t) {
    case "hello": return frames.hello(v);
    case "join": return frames.join(v.id, v.ch, v.echo, v.recover, v.token, v.data);
    case "leave": return frames.leave(v.id, v.ch, v.echo);
    case "members": return frames.members(v.id, v.ch, v.limit, v.after);
    case "profile": return frames.profile(v.id, v.data, v.echo);
    case "send": return frames.send(v.id, v.ch, v.ev, v.data, v.echo);
    case "broadcast": return frames.broadcast(v.id, v.ev, v.data, v.echo);
    case "refresh": return frames.refresh(v.id, v.token, v.ch);
    case "history": return frames.history(v.id, v.ch, v.since, v.limit, v.reverse);
    default: throw new Error(`not a client frame: ${v.t}`);
  }
}

test("protocol.md has an example of every frame type, and the parser found them", () => {
  assert.ok(EXAMPLES.length >= 20, `only ${EXAMPLES.length} examples parsed`);
  const shown = new Set(FRAMES.map((e) => e.value.t));
  assert.deepEqual([...shown].sort(), [...CLIENT_TYPES, ...SERVER_TYPES].sort());
});

for (const { kind, bytes, value } of FRAMES) {
  test(`${kind} ${JSON.stringify(value).slice(0, 60)}: decodes and encodes byte for byte`, () => {
    assert.deepEqual(decodeFrame(bytes), value);
    assert.deepEqual(encodeFrame(value), bytes);
    if (CLIENT_TYPES.includes(value.t)) {
      // What the client itself sends for these arguments is exactly the documented bytes.
      assert.deepEqual(encodeFrame(build(value)), bytes);
    }
  });
}

test("server pushes become the documented handler arguments", () => {
  // (the first example of each type: the later member_join is a channel token's, with info)
  const byType = Object.fromEntries([...FRAMES].reverse().map((e) => [e.value.t, decodeFrame(e.bytes)]));
  const msg = FRAMES.find((e) => e.value.t === "msg" && e.value.ch === "lobby").value;
  assert.deepEqual(messageEvent(msg), {
    channel: "lobby", event: "chat", data: { text: "hi" }, sender: "q3Jx0aZ1bC9d", ts: 1764400000123, mid: "9f2c01ab-1a",
  });
  const feed = FRAMES.find((e) => e.value.t === "msg" && e.value.ch === "feed").value;
  assert.deepEqual([messageEvent(feed).offset, messageEvent(feed).epoch], [42, "a1b2c3d4"]);
  const bcast = FRAMES.find((e) => e.value.t === "msg" && e.value.ch === null).value;
  assert.equal(messageEvent(bcast).channel, null);
  assert.equal(messageEvent(bcast).sender, null);
  assert.deepEqual(memberEvent(byType.member_join), {
    type: "join", channel: "lobby", member: { id: "Zk81mPq0Lr2s", user: "u42", data: { name: "bob" } }, first: true,
  });
  assert.deepEqual(memberEvent(byType.member_leave).last, false);
  const withInfo = FRAMES.filter((e) => e.value.t === "member_join").map((e) => decodeFrame(e.bytes))[1];
  assert.deepEqual(memberEvent(withInfo).member.info, { role: "host" });
  assert.deepEqual(memberEvent(byType.member_update).member.data, { name: "ann", status: "away" });
  assert.deepEqual(userEvent(byType.user), {
    event: "signout", session: { id: "s-1", device: "phone" }, user: { id: "u42", name: "Ann" }, ts: 1764400000900,
  });
  // a batched presence frame is one handler call per member: leaves, then joins, then updates
  const [diff, update] = FRAMES.filter((e) => e.value.t === "presence").map((e) => decodeFrame(e.bytes));
  assert.deepEqual(presenceEvents(diff), [
    { type: "leave", channel: "lobby", member: { id: "q3Jx0aZ1bC9d", user: null, data: { name: "ann" } }, last: true },
    { type: "join", channel: "lobby", member: { id: "Zk81mPq0Lr2s", user: "u42", data: { name: "bob" } }, first: true },
    { type: "join", channel: "lobby", member: { id: "Hq7fW2nB5xYe", user: null, data: null }, first: true },
  ]);
  assert.deepEqual(presenceEvents(update), [
    { type: "update", channel: "lobby", member: { id: "Zk81mPq0Lr2s", user: "u42", data: { name: "bob", status: "away" } } },
  ]);
});

test("a left frame: the channel is forgotten (not rejoined) and onLeft hears why", () => {
  const c = client("ws://127.0.0.1:1/");
  c.channels.set("room:42", undefined);
  c.channels.set("lobby", undefined);
  const heard = [];
  c.onLeft((event) => heard.push(event));
  const left = FRAMES.find((e) => e.value.t === "left");
  c._dispatch(decodeFrame(left.bytes));
  assert.deepEqual(heard, [{ channel: "room:42", reason: "token_expired", msg: "the channel token for 'room:42' expired" }]);
  assert.deepEqual([...c.channels.keys()], ["lobby"]);
});

test("a joined frame: onJoined hears it, the position is tracked, the channel is not rejoined", () => {
  const c = client("ws://127.0.0.1:1/");
  const heard = [];
  c.onJoined((event) => heard.push(event));
  for (const joined of FRAMES.filter((e) => e.value.t === "joined")) c._dispatch(decodeFrame(joined.bytes));
  assert.deepEqual(heard, [
    { channel: "room:42", reason: "added", position: { epoch: "a1b2c3d4", offset: 17 } },
    { channel: "user:u42", reason: "subscribe" },
  ]);
  assert.deepEqual(c.positions.get("room:42"), { epoch: "a1b2c3d4", offset: 17 });
  assert.deepEqual([...c.channels.keys()], []);
});

test("a message that is not a map with a string t is a ProtocolError", () => {
  for (const bad of [Uint8Array.of(0x01), Uint8Array.of(0x90), Uint8Array.of(0x81, 0xa1, 0x74, 0x01), Uint8Array.of(0xc1)]) {
    assert.throws(() => decodeFrame(bad), ProtocolError);
  }
});

// -- the wsframe examples, sent byte for byte by a hand-written WebSocket server ----------------

const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** Frame a server message (unmasked, final, binary). */
function wsBinary(payload) {
  const n = payload.length;
  const head = n < 126 ? [0x82, n] : [0x82, 126, n >> 8, n & 0xff];
  return Buffer.concat([Buffer.from(head), Buffer.from(payload)]);
}

/** Parse one masked client frame from `buf`; null if incomplete. */
function readClientFrame(buf) {
  if (buf.length < 2) return null;
  let len = buf[1] & 0x7f;
  let at = 2;
  if (len === 126) { len = buf.readUInt16BE(2); at = 4; }
  if (buf.length < at + 4 + len) return null;
  const mask = buf.subarray(at, at + 4);
  const payload = Buffer.from(buf.subarray(at + 4, at + 4 + len)).map((b, i) => b ^ mask[i % 4]);
  return { opcode: buf[0] & 0x0f, payload, rest: buf.subarray(at + 4 + len) };
}

test("the wsframe examples, as raw bytes on a socket, reach the client's handlers", async () => {
  const welcome = FRAMES.find((e) => e.value.t === "welcome").bytes;
  const wsframes = EXAMPLES.filter((e) => e.kind === "wsframe");
  const msgFrame = wsframes.find((e) => e.value.t === "msg");
  const closeFrame = wsframes.find((e) => "close" in e.value);
  assert.ok(msgFrame && closeFrame);
  const hellos = [];
  const server = createServer((sock) => {
    let buf = Buffer.alloc(0);
    let upgraded = false;
    sock.on("data", (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (!upgraded) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const key = /sec-websocket-key: *(\S+)/i.exec(buf.subarray(0, end).toString())[1];
        const accept = createHash("sha1").update(key + WS_GUID).digest("base64");
        sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
        buf = buf.subarray(end + 4);
        upgraded = true;
      }
      const frame = readClientFrame(buf);
      if (frame === null || hellos.length > 0) return;
      buf = frame.rest;
      hellos.push(decode(frame.payload));
      sock.write(wsBinary(welcome));
      sock.write(msgFrame.bytes);
      sock.write(closeFrame.bytes);
      sock.end();
    });
    sock.on("error", () => {});
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const c = client(`ws://127.0.0.1:${server.address().port}/`, { reconnect: false, profile: { name: "ann" } });
  const chat = next((fn) => c.on("chat", fn));
  const disconnected = next((fn) => c.onDisconnect(fn));
  try {
    await c.open();
    assert.equal(c.getSocketId(), "q3Jx0aZ1bC9d");
    assert.deepEqual(await chat, messageEvent(msgFrame.value));
    assert.deepEqual(await disconnected, [closeFrame.value.close, closeFrame.value.reason]);
    assert.deepEqual(hellos, [{ t: "hello", v: 1, profile: { name: "ann" }, echo: true, features: ["presence_diffs", "history"] }]);
  } finally {
    await c.close();
    server.close();
  }
});
