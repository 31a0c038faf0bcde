// rtcore-client: the JavaScript client of rtcore (protocol.md, version 1).
//
// Theory of operation (the same design as the Python client, rtcore/client/_client.py):
// one connection loop owns the WebSocket. It connects, sends `hello` (carrying the latest
// profile and a token, fresh from the token provider if there is one), waits for `welcome`,
// rejoins the remembered channels, and only then counts as connected: requests made while
// disconnected wait for that moment (at most `bufferLimit` of them; with `failFast` they are
// refused at once). Incoming frames are dispatched as they arrive: replies settle the
// request's promise, pushes go to the registered handlers. After an unexpected close the loop
// reconnects with jittered exponential backoff; close codes that reconnecting cannot fix end
// the client with a ConnectionClosedError. Codes this file does not know (newer servers may
// add error and close codes, protocol.md §8) are passed through unchanged: an `err` reply's
// code becomes RequestError.code, and an unknown close code is reported to onDisconnect and
// answered by reconnecting with backoff.
//
// History (protocol.md §4.4.1): for each joined channel with history the client keeps its
// position, the `{epoch, offset}` of the last message it received there (`positions`), and
// rejoins after a reconnect with `recover`: the server replays what was published meanwhile
// before anything new, and `onRecover` handlers hear how that went. A message at or before the
// position (already received) is dropped, so handlers see each message once, in order.

import { encode, decode } from "./msgpack.js";

/** The protocol version this client speaks (the hello's `v`). */
export const PROTOCOL_VERSION = 1;

/** Close codes after which reconnecting would fail again the same way (protocol.md §7). */
export const FATAL_CLOSE_CODES = Object.freeze([
  1002, 1003, 4000, 4002, 4003, 4004, 4005, 4006, 4010, 4011, 4012, 4013, 4014, 4015, 4016, 4017,
  4018, 4019, 4021, 4022,
]);

/** Of those, the codes a token provider can fix by handing out a fresh token. */
const TOKEN_CLOSE_CODES = [4014, 4015];
const SESSION_ENDED_CODES = [4016, 4017];

// -- errors -----------------------------------------------------------------------------------

/** Base of every error this client raises; `code` says what happened. */
export class RtcoreError extends Error {
  constructor(code, message) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}

/** Refusals for a passing reason that left no effect: the request may be sent again (§6). */
export const RETRY_SAFE = Object.freeze(["broker_unavailable", "hook_unavailable", "rate_limited"]);

/**
 * The server refused a request with an `err` reply; `code` is the protocol's (§6).
 * `retrySafe`: the refusal had no effect and its reason passes; sending again is safe.
 */
export class RequestError extends RtcoreError {
  constructor(code, message, limiter = null, retryAfter = null) {
    super(code, `${code}: ${message}`);
    this.serverMessage = message;
    this.limiter = limiter;
    this.retryAfter = retryAfter;
    this.retrySafe = RETRY_SAFE.includes(code);
  }
}

/** No reply within `requestTimeout` milliseconds. */
export class RequestTimeoutError extends RtcoreError {
  constructor(message) {
    super("timeout", message);
  }
}

/** Not connected and `failFast` is on, or the client is closed. */
export class NotConnectedError extends RtcoreError {
  constructor(message) {
    super("not_connected", message);
  }
}

/** Disconnected, and `bufferLimit` requests already wait for the connection. */
export class BufferFullError extends RtcoreError {
  constructor(message) {
    super("buffer_full", message);
  }
}

/** The connection dropped after the request was sent and before its reply arrived. */
export class ConnectionLostError extends RtcoreError {
  constructor(message) {
    super("connection_lost", message);
  }
}

/** A connection attempt failed (network, upgrade, handshake); `closeCode` as received. */
export class ConnectError extends RtcoreError {
  constructor(message, closeCode = 1006, reason = "") {
    super("connect_failed", message);
    this.closeCode = closeCode;
    this.reason = reason;
  }
}

/** The server sent something protocol.md does not allow; the client reconnects. */
export class ProtocolError extends RtcoreError {
  constructor(message) {
    super("protocol_error", message);
  }
}

/** The server closed the connection with a code reconnecting cannot fix; `code` is numeric. */
export class ConnectionClosedError extends RtcoreError {
  constructor(code, reason) {
    super(code, `closed by the server (${code}): ${reason}`);
    this.reason = reason;
  }
}

// -- frames (protocol.md §3, §4) --------------------------------------------------------------

const opt = (value) => value ?? undefined; // null and undefined both mean "absent"

/**
 * Builders of the frames a client sends, keys in protocol.md's order. Optional keys given as
 * null or undefined are left out of the encoded map (the server's default applies).
 */
export const frames = Object.freeze({
  hello: ({ app, key, token, profile, echo, features, data }) => ({
    t: "hello", v: PROTOCOL_VERSION, app: opt(app), key: opt(key), token: opt(token),
    profile: opt(profile), echo: opt(echo), features: opt(features), data: opt(data),
  }),
  // (`data`, of hello and join: for the app's connect and join hooks, docs/hooks.md)
  join: (id, ch, echo, recover, token, data) => ({
    t: "join", id, ch, echo: opt(echo), recover: opt(recover), token: opt(token), data: opt(data),
  }),
  leave: (id, ch, echo) => ({ t: "leave", id, ch, echo: opt(echo) }),
  members: (id, ch, limit, after) => ({ t: "members", id, ch, limit: opt(limit), after: opt(after) }),
  profile: (id, data, echo) => ({ t: "profile", id, data: data ?? null, echo: opt(echo) }),
  send: (id, ch, ev, data, echo) => ({ t: "send", id, ch, ev, data, echo: opt(echo) }),
  broadcast: (id, ev, data, echo) => ({ t: "broadcast", id, ev, data, echo: opt(echo) }),
  refresh: (id, token, ch) => ({ t: "refresh", id, token, ch: opt(ch) }),
  history: (id, ch, since, limit, reverse) => ({
    t: "history", id, ch, since: opt(since), limit: opt(limit), reverse: reverse ? true : undefined,
  }),
});

/** Encode a frame as one binary message; keys whose value is undefined are left out. */
export function encodeFrame(frame) {
  return encode(frame, { ignoreUndefined: true });
}

/**
 * Decode one binary message from the server into a frame (a plain object with a string `t`).
 * @throws {ProtocolError} when it is not msgpack, or not a map with a string `t`.
 */
export function decodeFrame(bytes) {
  let value;
  try {
    value = decode(bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : bytes);
  } catch (err) {
    throw new ProtocolError(`undecodable message from the server: ${err.message}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value) || value instanceof Uint8Array) {
    throw new ProtocolError("a server message is not a msgpack map");
  }
  if (typeof value.t !== "string") throw new ProtocolError("a server frame has no string `t`");
  return value;
}

/** The application event a `msg` frame carries, as handlers receive it (§5.1). */
export function messageEvent(frame) {
  return {
    channel: frame.ch ?? null,
    event: frame.ev,
    data: frame.data ?? null,
    sender: frame.from ?? null,
    ts: frame.ts,
    mid: frame.mid,
    // In a channel with history (§4.4.1): its place in the channel's stream.
    ...(frame.offset == null ? {} : { offset: frame.offset, epoch: frame.epoch }),
  };
}

/** A presence event as handlers receive it (§5.2): `type` is join, leave or update. */
export function memberEvent(frame) {
  const event = { type: frame.t.slice("member_".length), channel: frame.ch, member: frame.member };
  if (frame.t === "member_join") event.first = frame.first ?? true;
  if (frame.t === "member_leave") event.last = frame.last ?? true;
  return event;
}

/**
 * The presence events a batched `presence` frame (§5.2.1) stands for, one per member, in the
 * order to apply them: leaves, then joins, then updates — each as `memberEvent` gives it.
 */
export function presenceEvents(frame) {
  const events = [];
  for (const { last, ...member } of frame.leaves ?? []) {
    events.push({ type: "leave", channel: frame.ch, member, last: last ?? true });
  }
  for (const { first, ...member } of frame.joins ?? []) {
    events.push({ type: "join", channel: frame.ch, member, first: first ?? true });
  }
  for (const member of frame.updates ?? []) {
    events.push({ type: "update", channel: frame.ch, member });
  }
  return events;
}

/** A user event as handlers receive it (§5.4). */
export function userEvent(frame) {
  return { event: frame.ev, session: frame.session ?? null, user: frame.user ?? null, ts: frame.ts };
}

/**
 * The delay before reconnection attempt `attempt` (1, 2, ...): drawn uniformly below a bound
 * that starts at `initial` ms and doubles per attempt up to `max` ms (full jitter).
 */
export function backoffDelay(attempt, initial, max, random = Math.random) {
  return random() * Math.min(max, initial * 2 ** (attempt - 1));
}

/** The `exp` claim of a JWT in milliseconds, or null (read only to schedule a refresh). */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    return typeof claims.exp === "number" ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

// -- the client -------------------------------------------------------------------------------

const DEFAULTS = Object.freeze({
  app: null,
  key: null,
  token: null,
  profile: null,
  echo: true,
  presenceDiffs: true,
  reconnect: true,
  backoffInitial: 500,
  backoffMax: 30000,
  requestTimeout: 10000,
  connectTimeout: 10000,
  bufferLimit: 100,
  failFast: false,
  refreshBefore: 30000,
  getChannelToken: null,
  connectData: undefined,
});

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc || !/^https?:$/.test(loc.protocol)) return null;
  return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/`;
}

/**
 * A connection to an rtcore server, kept open across network failures.
 * See README.md for every option, method and event.
 */
export class RealtimeClient {
  constructor(options = {}) {
    const opts = { ...DEFAULTS, ...options };
    this.url = opts.url ?? defaultUrl();
    if (!this.url) throw new TypeError("rtcore: the `url` option is required outside a web page");
    this.WebSocket = opts.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== "function") {
      throw new TypeError(
        "rtcore: no WebSocket implementation; pass one as the `WebSocket` option (e.g. from the ws package)",
      );
    }
    this.app = opts.app;
    this.key = opts.key;
    this.token = opts.token;
    this.profile = opts.profile;
    this.echo = opts.echo;
    this.presenceDiffs = opts.presenceDiffs;
    this.reconnect = opts.reconnect;
    this.backoffInitial = opts.backoffInitial;
    this.backoffMax = opts.backoffMax;
    this.requestTimeout = opts.requestTimeout;
    this.connectTimeout = opts.connectTimeout;
    this.bufferLimit = opts.bufferLimit;
    this.failFast = opts.failFast;
    this.refreshBefore = opts.refreshBefore;
    /**
     * `getChannelToken(channel)`: a channel token for `channel` from the app's backend
     * (protocol.md §4.4.2), or null to join without one; may return a promise. Asked on every
     * join and rejoin, and before a held token expires (sent with a per-channel refresh).
     */
    this.getChannelToken = opts.getChannelToken;
    /** For the app's connect hook (docs/hooks.md): the hello's `data`, on every connection. */
    this.connectData = opts.connectData;
    /** Channels whose rejoin is being retried (sends to them wait): channel -> {done, release}. */
    this._rejoining = new Map();
    /** Channels to rejoin after a reconnect, with their join echo option. */
    this.channels = new Map();
    /** Per channel joined with `data` (for the app's join hook): sent again on rejoins. */
    this.joinData = new Map();
    /**
     * Per joined channel with history: `{epoch, offset}` of the last message received there
     * (or the channel's top at the join). Rejoins recover from it (protocol.md §4.4.1).
     */
    this.positions = new Map();
    /** The server's welcome frame of the current connection (limits, time, user). */
    this.welcome = null;
    this._id = null;
    this._ws = null;
    this._ready = false;
    this._running = null;
    this._closed = true;
    this._fatal = null;
    this._nextId = 1;
    this._replies = new Map();
    this._waiters = [];
    this._handlers = new Map();
    this._timers = new Set();
    this._wake = null;
    this._refreshTimer = null;
    this._channelTimers = new Map();
    this._connections = 0;
  }

  // -- lifecycle --------------------------------------------------------------------------------

  /**
   * Connect (if not running yet); resolves once connected. With `reconnect` on, a server that
   * is not up yet is retried with backoff until it is.
   * @returns {Promise<void>}
   */
  open() {
    if (this._running && this._closed) return this._running.then(() => this.open()); // closing
    if (this._ready) return Promise.resolve();
    const ready = new Promise((resolve, reject) => this._waiters.push({ resolve, reject, counted: false }));
    if (!this._running) {
      this._closed = false;
      this._fatal = null;
      this._running = this._run().finally(() => {
        this._running = null;
      });
    }
    return ready;
  }

  /**
   * Close the connection (code 1000) and stop reconnecting. Requests waiting for the
   * connection are rejected with NotConnectedError; resolves once the socket has closed.
   */
  async close() {
    const running = this._running; // not a run that an open() after this call starts
    this._closed = true;
    this._ready = false;
    this._rejectWaiters(new NotConnectedError("the client is closed"));
    this._wake?.();
    const ws = this._ws;
    if (ws && ws.readyState <= 1) {
      const closed = new Promise((resolve) => ws.addEventListener("close", resolve, { once: true }));
      ws.close(1000, "client closed");
      await this._bounded(closed, this.connectTimeout);
    }
    await this._bounded(running ?? Promise.resolve(), this.connectTimeout);
  }

  /** True while connected (welcome received and channels rejoined). */
  isConnected() {
    return this._ready;
  }

  /** This connection's member id, as other members see it (changes on reconnect); null if none. */
  getSocketId() {
    return this._id;
  }

  // -- requests ---------------------------------------------------------------------------------

  /**
   * Join a channel; resolves false if already a member. Rejoined after reconnects, recovering
   * what was missed if the channel keeps history. `recover` (`{epoch, offset}`, say a position
   * saved by an earlier page load) asks the server to replay what followed it; `onRecover`
   * handlers hear whether that was everything. `data`: for the app's join hook
   * (docs/hooks.md), sent as the join's `data`, and again on the rejoins after reconnects.
   */
  async join(channel, echo, recover, { data } = {}) {
    if (recover != null) this.positions.set(channel, { epoch: recover.epoch, offset: recover.offset });
    else this.positions.delete(channel);
    const reply = await this._join(channel, echo, recover ?? undefined, true, data);
    this.channels.set(channel, echo);
    if (data == null) this.joinData.delete(channel);
    else this.joinData.set(channel, data);
    return Boolean(reply.joined);
  }

  /**
   * A page of a channel's history (protocol.md §4.11): oldest first after `since`, or newest
   * first before it with `reverse`. Resolves with the reply's shape, `{messages, epoch, offset,
   * next}` (`epoch` and `offset`: the stream's top), plus `top` (the same `{epoch, offset}`, as
   * the Python client's `HistoryPage.top`): pass `next` as `since` for the next page (null:
   * that was the last).
   */
  async history(channel, { since = null, limit = 100, reverse = false } = {}) {
    const data = await this._request((id) => frames.history(id, channel, since ?? undefined, limit, reverse));
    return {
      messages: data.messages.map(messageEvent),
      epoch: data.epoch,
      offset: data.offset,
      next: data.next ?? null,
      top: { epoch: data.epoch, offset: data.offset },
    };
  }

  /** A join (`data` for the join hook), with a channel token from `getChannelToken` when there is one. */
  async _join(channel, echo, recover, buffered, data) {
    if (buffered) await this._waitConnected();
    const token = this.getChannelToken ? await this.getChannelToken(channel) : null;
    const reply = await this._request((id) => frames.join(id, channel, echo, recover, token ?? undefined, data), {
      buffered,
      onOk: (ok) => this._track(channel, ok),
    });
    if (typeof token === "string") this._scheduleChannelRefresh(channel, token);
    return reply;
  }

  /** A join's ok: the channel's position, and after a recovering join, how it went. */
  _track(channel, data) {
    const top = typeof data?.epoch === "string" ? { epoch: data.epoch, offset: data.offset } : null;
    if (data && "recovered" in data) {
      if (!data.recovered || top === null) {
        if (top === null) this.positions.delete(channel);
        else this.positions.set(channel, top);
      }
      this._emit("recover", { channel, recovered: Boolean(data.recovered), reason: data.reason ?? null, position: top });
    } else if (top !== null && !this.positions.has(channel)) {
      this.positions.set(channel, top);
    }
  }

  /** Whether a message of a channel with history was received already; else it is the position. */
  _seen(msg) {
    const was = this.positions.get(msg.channel);
    if (was && was.epoch === msg.epoch && msg.offset <= was.offset) return true;
    const now = { epoch: msg.epoch, offset: msg.offset };
    this.positions.set(msg.channel, now);
    if (was && was.epoch !== msg.epoch) {
      this._emit("recover", { channel: msg.channel, recovered: false, reason: "epoch_changed", position: now });
    }
    return false;
  }

  /** Leave a channel; resolves false if not a member. */
  async leave(channel, echo) {
    this.channels.delete(channel);
    this.joinData.delete(channel);
    this._cancelChannelRefresh(channel);
    this.positions.delete(channel);
    const data = await this._request((id) => frames.leave(id, channel, echo));
    return Boolean(data.left);
  }

  /**
   * Every member of a channel as `{id, user, data}`, fetched page by page (by default pages
   * of the server's `max_members_page`).
   */
  async getMembers(channel, { pageSize } = {}) {
    const members = [];
    let after = null;
    for (;;) {
      const limit = pageSize ?? this.welcome?.limits?.max_members_page ?? 100;
      const data = await this._request((id) => frames.members(id, channel, limit, after));
      members.push(...data.members);
      after = data.next ?? null;
      if (after === null) return members;
    }
  }

  /** Replace the profile; resolves with the number of channels told. Kept across reconnects. */
  async updateProfile(data, echo) {
    this.profile = data;
    const result = await this._request((id) => frames.profile(id, data, echo));
    return result.channels;
  }

  /** Send an event to a joined channel; resolves with `{mid, ts, recipients}`. */
  async send(channel, event, data, echo) {
    const rejoin = this._rejoining.get(channel); // a rejoin being retried: after it
    if (rejoin) {
      if (this.failFast) throw new NotConnectedError(`${channel} is being rejoined (failFast is on)`);
      await rejoin.done;
    }
    return this._request((id) => frames.send(id, channel, event, data, echo));
  }

  /** Send an event to every connection of the app; resolves with `{mid, ts, recipients}`. */
  broadcast(event, data, echo) {
    return this._request((id) => frames.broadcast(id, event, data, echo));
  }

  /**
   * Hand the server a fresh session token for the same user; resolves with its expiry
   * (ms since the epoch) or null. Later reconnects use it (unless a token provider is set).
   */
  async refresh(token) {
    const result = await this._request((id) => frames.refresh(id, token));
    if (typeof this.token !== "function") this.token = token;
    return result.expires ?? null;
  }

  async _request(make, { buffered = true, onOk = null } = {}) {
    if (buffered) await this._waitConnected();
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) throw new NotConnectedError("not connected");
    const id = this._nextId++;
    const reply = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._replies.delete(id);
        reject(new RequestTimeoutError(`no reply within ${this.requestTimeout} ms`));
      }, this.requestTimeout);
      this._replies.set(id, { resolve, reject, timer, onOk });
    });
    try {
      ws.send(encodeFrame(make(id)));
    } catch (err) {
      clearTimeout(this._replies.get(id)?.timer);
      this._replies.delete(id);
      throw err;
    }
    const frame = await reply;
    if (frame.t === "err") {
      throw new RequestError(frame.code, frame.msg ?? "", frame.limiter ?? null, frame.retry_after ?? null);
    }
    return frame.data;
  }

  _waitConnected() {
    if (this._ready) return Promise.resolve();
    if (this._fatal) return Promise.reject(this._fatal);
    if (this._closed) return Promise.reject(new NotConnectedError("the client is closed"));
    if (this.failFast) return Promise.reject(new NotConnectedError("not connected (failFast is on)"));
    if (this._waiters.filter((w) => w.counted).length >= this.bufferLimit) {
      return Promise.reject(new BufferFullError(`${this.bufferLimit} requests already wait for the connection`));
    }
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject, counted: true }));
  }

  _releaseWaiters() {
    const waiters = this._waiters;
    this._waiters = [];
    for (const w of waiters) w.resolve();
  }

  _rejectWaiters(error) {
    const waiters = this._waiters;
    this._waiters = [];
    for (const w of waiters) w.reject(error);
  }

  // -- handlers ---------------------------------------------------------------------------------

  /** Call `fn(message)` for every app event named `event` ("*": all of them). Returns `off`. */
  on(event, fn) {
    return this._add("msg:" + event, fn);
  }

  /** Like `on`, for the next such event only. */
  once(event, fn) {
    const oneShot = (msg) => {
      this.off(event, oneShot);
      fn(msg);
    };
    oneShot.original = fn;
    return this.on(event, oneShot);
  }

  /** Remove one handler, every handler of an event, or (no arguments) all app-event handlers. */
  off(event, fn) {
    if (event === undefined) {
      for (const key of [...this._handlers.keys()]) if (key.startsWith("msg:")) this._handlers.delete(key);
    } else if (fn === undefined) {
      this._handlers.delete("msg:" + event);
    } else {
      this._remove("msg:" + event, fn);
    }
  }

  /** `fn(event)` when a member joins one of our channels. */
  onJoin(fn) {
    return this._add("member_join", fn);
  }

  /** `fn(event)` when a member leaves one of our channels. */
  onLeave(fn) {
    return this._add("member_leave", fn);
  }

  /** `fn(event)` when a member of one of our channels updates its profile. */
  onUpdate(fn) {
    return this._add("member_update", fn);
  }

  /** `fn(eventName, session, user, ts)` for events about this connection's own user. */
  onUserEvent(fn) {
    return this._add("user_event", fn);
  }

  /**
   * `fn({channel, reason, msg})` when the server takes this connection out of a channel
   * (protocol.md §5.6); the channel is forgotten, not rejoined after a reconnect.
   */
  onLeft(fn) {
    return this._add("left", fn);
  }

  /**
   * `fn({channel, reason, position?})` when the server puts this connection into a channel
   * (protocol.md §5.7; reason `added` or `subscribe`). The server puts it back after a
   * reconnect (then `fn` hears it again): the client does not rejoin it itself.
   */
  onJoined(fn) {
    return this._add("joined", fn);
  }

  /** `fn(socketId, {reconnected})` after every successful (re)connection. */
  onConnect(fn) {
    return this._add("connect", fn);
  }

  /** `fn(code, reason)` when a connection ends (1006 if no close frame was received). */
  onDisconnect(fn) {
    return this._add("disconnect", fn);
  }

  /** `fn(attempt)` before each reconnection attempt (1, 2, ...). */
  onReconnectAttempt(fn) {
    return this._add("reconnect_attempt", fn);
  }

  /** `fn(error)` when a connection attempt fails, a rejoin is refused, or the client stops. */
  onError(fn) {
    return this._add("error", fn);
  }

  /**
   * `fn({channel, recovered, reason, position})` after each rejoin of a channel this client
   * had a position in (protocol.md §4.4.1): `recovered` true means every message published
   * meanwhile was replayed (before this call, in order, each once); otherwise `reason` says why
   * not and the app should reload the channel's state.
   */
  onRecover(fn) {
    return this._add("recover", fn);
  }

  /**
   * `fn({channel, reason})` when messages of `channel` (null: broadcasts) may have been missed:
   * a node could not reach the broker (protocol.md §5.5). A notice, not a replay.
   */
  onGap(fn) {
    return this._add("gap", fn);
  }

  /**
   * `fn({channel, reason, attempt})` when a channel's rejoin was refused for a passing reason
   * (`broker_unavailable`, `rate_limited`, or `request_timeout`): the client keeps the channel
   * and tries again with backoff (`attempt` is the next try's number).
   */
  onRejoining(fn) {
    return this._add("rejoining", fn);
  }

  /** `fn(error)` when the backend ends the session (4016) or disconnects the client (4017). */
  onSessionEnded(fn) {
    return this._add("session_ended", fn);
  }

  _add(key, fn) {
    if (typeof fn !== "function") throw new TypeError("rtcore: a handler must be a function");
    if (!this._handlers.has(key)) this._handlers.set(key, []);
    this._handlers.get(key).push(fn);
    return () => this._remove(key, fn);
  }

  _remove(key, fn) {
    const list = this._handlers.get(key);
    if (!list) return;
    const i = list.findIndex((h) => h === fn || h.original === fn);
    if (i >= 0) list.splice(i, 1);
  }

  _emit(key, ...args) {
    for (const fn of [...(this._handlers.get(key) ?? [])]) {
      try {
        fn(...args);
      } catch (err) {
        if (key === "error") console.error("rtcore: an onError handler threw", err);
        else this._emit("error", err);
      }
    }
  }

  // -- the connection loop ----------------------------------------------------------------------

  async _run() {
    let attempt = 0;
    while (!this._closed) {
      const { code, reason, wasReady } = await this._connectOnce();
      if (this._closed) break;
      if (this._isFatal(code)) {
        this._fatal = new ConnectionClosedError(code, reason);
        if (SESSION_ENDED_CODES.includes(code)) this._emit("session_ended", this._fatal);
        this._emit("error", this._fatal);
        break;
      }
      if (!this.reconnect) break;
      attempt = wasReady ? 1 : attempt + 1;
      await this._sleep(backoffDelay(attempt, this.backoffInitial, this.backoffMax));
      if (this._closed) break;
      this._emit("reconnect_attempt", attempt);
    }
    this._closed = true;
    this._rejectWaiters(this._fatal ?? new NotConnectedError("the client is closed"));
  }

  _isFatal(code) {
    if (TOKEN_CLOSE_CODES.includes(code) && typeof this.token === "function") return false;
    return FATAL_CLOSE_CODES.includes(code);
  }

  /** One connection's life; resolves with its close code and reason. */
  async _connectOnce() {
    let token;
    try {
      token = typeof this.token === "function" ? await this.token() : this.token;
    } catch (err) {
      const error = new ConnectError(`the token provider failed: ${err?.message ?? err}`);
      this._emit("error", error);
      this._failFirstOpen(error);
      return { code: 1006, reason: error.message, wasReady: false };
    }
    if (this._closed) return { code: 1000, reason: "client closed", wasReady: false };
    let ws;
    try {
      ws = new this.WebSocket(this.url);
    } catch (err) {
      // A malformed URL: no retry can fix it.
      this._fatal = new ConnectError(`cannot open ${this.url}: ${err.message}`);
      this._closed = true;
      this._emit("error", this._fatal);
      return { code: 1006, reason: err.message, wasReady: false };
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    const result = await new Promise((resolve) => this._watch(ws, token, resolve));
    this._connectionEnded(ws, result);
    return result;
  }

  /** Drive one socket through hello, welcome, rejoin and reading; `done` gets its close. */
  _watch(ws, token, done) {
    let welcomed = false;
    let localReason = null; // set when this side gave up on the connection
    const abandon = (why) => {
      localReason = why;
      if (ws.readyState <= 1) ws.close(1000, "client gave up");
    };
    const connectTimer = this._setTimer(
      () => abandon(`no welcome within ${this.connectTimeout} ms`),
      this.connectTimeout,
    );
    const fail = (error) => {
      this._emit("error", error);
      abandon(error.message);
    };
    // Without a listener, the ws package would throw its error events; the close event
    // that always follows carries what there is to know.
    ws.addEventListener("error", () => {});
    // The WebSocket API sends nothing before "open" (the 101 has arrived), so the hello
    // cannot go with the upgrade request as the Python client's does (protocol.md §3.1).
    ws.addEventListener("open", () => {
      if (this._closed) return ws.close(1000, "client closed");
      const { app, key, profile, echo, connectData: data } = this;
      const features = this.presenceDiffs ? ["presence_diffs", "history"] : ["history"];
      ws.send(encodeFrame(frames.hello({ app, key, token, profile, echo, features, data })));
    });
    ws.addEventListener("message", (event) => {
      if (localReason !== null) return;
      if (typeof event.data === "string") return fail(new ProtocolError("the server sent a text message"));
      let frame;
      try {
        frame = decodeFrame(event.data);
      } catch (err) {
        return fail(err);
      }
      if (welcomed) return this._dispatch(frame);
      if (frame.t !== "welcome") return fail(new ProtocolError(`expected welcome, got ${frame.t}`));
      welcomed = true;
      this._clearTimer(connectTimer);
      this.welcome = frame;
      this._id = frame.conn;
      this._scheduleRefresh(token);
      this._rejoin(ws, this._connections++ > 0);
    });
    ws.addEventListener("close", (event) => {
      this._clearTimer(connectTimer);
      // A connection this side abandoned counts as lost (1006), whatever code it closed with.
      const code = localReason !== null ? 1006 : event.code || 1006;
      const reason = localReason ?? (event.reason || "connection closed");
      done({ code, reason, welcomed, wasReady: this._ready });
    });
  }

  /**
   * Rejoin remembered channels, then release the requests that waited for the connection.
   * A rejoin refused for a passing reason (`broker_unavailable`, `rate_limited`) or left
   * unanswered (`requestTimeout`) keeps its channel: it is retried with backoff while the
   * connection lasts, each failure told to onError and onRejoining. The client is ready after
   * the first round, whatever it brought: never connected and stuck before ready.
   */
  async _rejoin(ws, reconnected) {
    let pending = [];
    for (const channel of [...this.channels.keys()]) {
      const outcome = await this._rejoinOne(ws, channel, 0);
      if (outcome === "lost") return this._rejoined(pending); // the loop reconnects
      if (outcome === "retry") pending.push(channel);
    }
    if (this._ws !== ws || ws.readyState !== 1) return this._rejoined(pending);
    this._ready = true;
    this._emit("connect", this._id, { reconnected });
    this._releaseWaiters();
    for (let attempt = 1; pending.length > 0; attempt++) {
      await this._sleep(backoffDelay(attempt, this.backoffInitial, this.backoffMax));
      if (this._ws !== ws || ws.readyState !== 1) return this._rejoined(pending);
      const again = [];
      for (const channel of pending) {
        const outcome = await this._rejoinOne(ws, channel, attempt);
        if (outcome === "lost") return this._rejoined(pending);
        if (outcome === "retry") again.push(channel);
        else this._rejoined([channel]);
      }
      pending = again;
    }
  }

  /** These channels' rejoins are over (joined, refused for good, or the connection ended). */
  _rejoined(channels) {
    for (const channel of channels) {
      this._rejoining.get(channel)?.release();
      this._rejoining.delete(channel);
    }
  }

  /** One rejoin: "joined", "dropped" (refused for good), "retry", or "lost" (connection). */
  async _rejoinOne(ws, channel, attempt) {
    if (!this.channels.has(channel) || this._ws !== ws) return this._ws === ws ? "joined" : "lost";
    const echo = this.channels.get(channel);
    try {
      await this._join(channel, echo, this.positions.get(channel), false, this.joinData.get(channel));
      return "joined";
    } catch (err) {
      const timedOut = err instanceof RequestTimeoutError;
      const refused = err instanceof RequestError;
      // Anything else is the connection ending, or the getChannelToken provider failing
      // while the connection lasts: then the channel is kept and tried again.
      if (!refused && !timedOut && (this._ws !== ws || ws.readyState !== 1)) return "lost";
      this._emit("error", err);
      if (refused && !err.retrySafe) {
        this.channels.delete(channel);
        this.joinData.delete(channel);
        this._rejoined([channel]);
        return "dropped";
      }
      if (!this._rejoining.has(channel)) {
        let release;
        const done = new Promise((resolve) => (release = resolve));
        this._rejoining.set(channel, { done, release }); // sends to it wait (send)
      }
      const reason = refused ? err.code : timedOut ? "request_timeout" : "channel_token_unavailable";
      this._emit("rejoining", { channel, reason, attempt: attempt + 1 });
      return "retry";
    }
  }

  _connectionEnded(ws, { code, reason, welcomed }) {
    if (this._ws === ws) this._ws = null;
    this._rejoined([...this._rejoining.keys()]); // their sends now wait for the connection
    this._ready = false;
    this._clearTimer(this._refreshTimer);
    for (const channel of [...this._channelTimers.keys()]) this._cancelChannelRefresh(channel);
    for (const [id, reply] of this._replies) {
      clearTimeout(reply.timer);
      reply.reject(new ConnectionLostError(`connection lost (${code}): ${reason}`));
      this._replies.delete(id);
    }
    if (!welcomed && !this._closed) {
      const error = new ConnectError(`cannot connect to ${this.url} (${code}): ${reason}`, code, reason);
      if (!this._isFatal(code)) this._emit("error", error);
      this._failFirstOpen(error);
    }
    this._emit("disconnect", code, reason);
  }

  /** Without reconnect, the first failed attempt is what open() rejects with. */
  _failFirstOpen(error) {
    if (!this.reconnect && !this._closed) this._fatal = this._fatal ?? error;
  }

  _dispatch(frame) {
    switch (frame.t) {
      case "ok":
      case "err": {
        const reply = frame.id == null ? undefined : this._replies.get(frame.id);
        if (reply) {
          clearTimeout(reply.timer);
          this._replies.delete(frame.id);
          // In frame order, before any later frame is dispatched (the promise settles later).
          if (frame.t === "ok" && reply.onOk) reply.onOk(frame.data);
          reply.resolve(frame);
        } else if (frame.t === "err") {
          this._emit("error", new RequestError(frame.code, frame.msg ?? "", frame.limiter ?? null, frame.retry_after ?? null));
        }
        return;
      }
      case "msg": {
        const msg = messageEvent(frame);
        if (msg.offset != null && msg.channel !== null && this._seen(msg)) return;
        this._emit("msg:" + msg.event, msg);
        this._emit("msg:*", msg);
        return;
      }
      case "member_join":
      case "member_leave":
      case "member_update":
        this._emit(frame.t, memberEvent(frame));
        return;
      case "presence":
        // Diffs include this connection's own changes whatever echo says (§5.2.1): its
        // handlers hear them only with echo on, as with member_* frames.
        for (const event of presenceEvents(frame)) {
          if (this.echo || event.member.id !== this._id) this._emit(`member_${event.type}`, event);
        }
        return;
      case "user": {
        const ev = userEvent(frame);
        this._emit("user_event", ev.event, ev.session, ev.user, ev.ts);
        return;
      }
      case "left":
        this.channels.delete(frame.ch);
        this.joinData.delete(frame.ch);
        this._cancelChannelRefresh(frame.ch);
        this.positions.delete(frame.ch);
        this._emit("left", { channel: frame.ch, reason: frame.reason, msg: frame.msg ?? "" });
        return;
      case "joined": {
        // The server put this connection into a channel (§5.7) and puts it back after a
        // reconnect: not added to `channels` (the rejoin set); its position is tracked.
        const event = { channel: frame.ch, reason: frame.reason };
        if (typeof frame.epoch === "string" && Number.isInteger(frame.offset)) {
          event.position = { epoch: frame.epoch, offset: frame.offset };
          this.positions.set(frame.ch, event.position);
        }
        this._emit("joined", event);
        return;
      }
      case "gap": // messages of the channel (null: broadcasts) may have been missed (§5.5)
        this._emit("gap", { channel: frame.ch ?? null, reason: frame.reason ?? "" });
        return;
      default:
        return; // a push type newer than this client: ignored (protocol.md §8)
    }
  }

  // -- token refresh ----------------------------------------------------------------------------

  /** With a token provider, refresh `refreshBefore` ms before the token expires. */
  _scheduleRefresh(token) {
    if (typeof this.token !== "function" || typeof token !== "string") return;
    const expires = tokenExpiry(token);
    if (expires === null) return;
    this._clearTimer(this._refreshTimer);
    const delay = Math.max(0, expires - Date.now() - this.refreshBefore);
    this._refreshTimer = this._setTimer(() => this._refreshNow(), delay);
  }

  async _refreshNow() {
    try {
      const token = await this.token();
      await this.refresh(token);
      this._scheduleRefresh(token);
    } catch (err) {
      this._emit("error", err);
    }
  }

  /** Refresh a channel's token when four fifths of what is left of it have passed (at most
   * `refreshBefore` ms before its exp); the rejoin after a reconnect asks for a new one. */
  _scheduleChannelRefresh(channel, token) {
    this._cancelChannelRefresh(channel);
    const expires = tokenExpiry(token);
    if (expires === null) return;
    const left = expires - Date.now();
    const delay = Math.max(0, left - Math.min(this.refreshBefore, left / 5));
    this._channelTimers.set(channel, this._setTimer(() => this._refreshChannel(channel), delay));
  }

  _cancelChannelRefresh(channel) {
    this._clearTimer(this._channelTimers.get(channel));
    this._channelTimers.delete(channel);
  }

  async _refreshChannel(channel) {
    this._channelTimers.delete(channel);
    try {
      const token = await this.getChannelToken(channel);
      if (typeof token !== "string" || !this.channels.has(channel)) return;
      await this._request((id) => frames.refresh(id, token, channel), { buffered: false });
      this._scheduleChannelRefresh(channel, token);
    } catch (err) {
      if (err instanceof RequestError) this._emit("error", err);
      // otherwise the connection is failing: the rejoin asks for a token again
    }
  }

  // -- timers -----------------------------------------------------------------------------------

  _setTimer(fn, ms) {
    const timer = setTimeout(() => {
      this._timers.delete(timer);
      fn();
    }, ms);
    this._timers.add(timer);
    return timer;
  }

  _clearTimer(timer) {
    if (timer == null) return;
    clearTimeout(timer);
    this._timers.delete(timer);
  }

  /** Sleep `ms`, or less if close() is called meanwhile. */
  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = this._setTimer(() => {
        this._wake = null;
        resolve();
      }, ms);
      this._wake = () => {
        this._clearTimer(timer);
        this._wake = null;
        resolve();
      };
    });
  }

  _bounded(promise, ms) {
    let timer;
    const limit = new Promise((resolve) => (timer = setTimeout(resolve, ms)));
    return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
  }
}

export default RealtimeClient;
