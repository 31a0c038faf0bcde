// The Node `ws` peer of `python -m bench` (server `node-ws`; bench/README.md, issue 22).
//
// What a competent Node developer writes with the `ws` package: one WebSocketServer, a Map
// channel -> Set of sockets, each fanned-out message encoded once and the same buffer passed to
// `ws.send` for every member. It speaks the subset of protocol.md the bench's load clients use:
// hello -> welcome, join -> ok, leave -> ok, send -> a `msg` to the channel's members (not back
// to the sender when its echo is off, as rtcore does) and an ok with the recipients. No
// presence, no limits beyond ws's own (maxPayload), like the "no presence" peers.
//
// Packages: `ws` and `@msgpack/msgpack` from clients/js/node_modules (`npm ci` in clients/js;
// the versions its package.json pins). Usage: node ws_server.mjs [--host H] [--port P]; prints
// `PORT <n>` once listening and runs until killed.

import { createRequire } from "node:module";
import { parseArgs } from "node:util";

const require = createRequire(new URL("../../clients/js/package.json", import.meta.url));
const { WebSocketServer } = require("ws");
const { encode, decode } = require("@msgpack/msgpack");

const { values: opts } = parseArgs({
  options: { host: { type: "string", default: "127.0.0.1" }, port: { type: "string", default: "0" } },
});

const HEARTBEAT_MS = 25000;
const channels = new Map(); // channel -> Set of sockets
let nextConn = 0;
let nextMid = 0;

function reply(ws, frame) {
  ws.send(encode(frame));
}

function err(ws, id, code, message) {
  reply(ws, { t: "err", id: id ?? null, code, message });
}

function hello(ws, state, frame) {
  if (frame.t !== "hello") return ws.close(4002, "hello_expected: the first frame must be a hello");
  if (frame.v !== 1) return ws.close(4003, "unsupported_version: this server speaks v1");
  state.echo = frame.echo !== false;
  state.conn = `n${(nextConn++).toString(36).padStart(11, "0")}`;
  reply(ws, { t: "welcome", v: 1, conn: state.conn, time: Date.now(), hb: HEARTBEAT_MS, limits: {} });
}

function join(ws, state, frame) {
  let members = channels.get(frame.ch);
  if (members === undefined) channels.set(frame.ch, (members = new Set()));
  members.add(ws);
  state.joined.add(frame.ch);
  reply(ws, { t: "ok", id: frame.id, data: { joined: true } });
}

function leave(ws, state, frame) {
  const left = state.joined.delete(frame.ch);
  if (left) drop(ws, frame.ch);
  reply(ws, { t: "ok", id: frame.id, data: { left } });
}

function send(ws, state, frame) {
  if (!state.joined.has(frame.ch)) return err(ws, frame.id, "not_member", `send: not a member of ${frame.ch}`);
  const echo = frame.echo ?? state.echo;
  const ts = Date.now();
  const mid = `n-${(nextMid++).toString(16)}`;
  const data = encode({ t: "msg", ch: frame.ch, ev: frame.ev, data: frame.data, from: state.conn, ts, mid });
  let recipients = 0;
  for (const member of channels.get(frame.ch)) {
    if (member !== ws || echo) {
      member.send(data);
      recipients++;
    }
  }
  reply(ws, { t: "ok", id: frame.id, data: { mid, ts, recipients } });
}

function drop(ws, ch) {
  const members = channels.get(ch);
  members.delete(ws);
  if (members.size === 0) channels.delete(ch);
}

const REQUESTS = { join, leave, send };

function onMessage(ws, state, raw, isBinary) {
  if (!isBinary) return ws.close(1003, "unsupported_data: text messages are not spoken");
  let frame;
  try {
    frame = decode(raw);
  } catch {
    frame = undefined;
  }
  if (frame === null || typeof frame !== "object" || typeof frame.t !== "string") {
    return ws.close(4000, "protocol_error: not a msgpack map with a string t");
  }
  if (state.conn === null) return hello(ws, state, frame);
  if (frame.t === "hello") return ws.close(4004, "duplicate_hello");
  const handler = REQUESTS[frame.t];
  if (handler === undefined) return err(ws, frame.id, "unknown_type", `${frame.t}: not spoken by this peer`);
  if (typeof frame.ch !== "string" || !Number.isInteger(frame.id)) {
    return err(ws, frame.id, "bad_request", `${frame.t}: id and ch are required`);
  }
  handler(ws, state, frame);
}

const wss = new WebSocketServer({
  host: opts.host,
  port: Number(opts.port),
  perMessageDeflate: false, // ws's default, said out loud
  maxPayload: 1 << 20,
});
wss.on("connection", (ws) => {
  const state = { conn: null, echo: true, joined: new Set() };
  ws.on("message", (raw, isBinary) => onMessage(ws, state, raw, isBinary));
  ws.on("close", () => {
    for (const ch of state.joined) drop(ws, ch);
  });
  ws.on("error", () => {}); // a bad frame: ws closes the socket with its RFC 6455 code
});
wss.on("listening", () => console.log(`PORT ${wss.address().port}`));
