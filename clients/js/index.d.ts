// TypeScript declarations of rtcore-client (rtcore-client.js). See README.md for the semantics.

/** The protocol version this client speaks. */
export const PROTOCOL_VERSION: 1;

/** Close codes after which the client stops instead of reconnecting (protocol.md §7). */
export const FATAL_CLOSE_CODES: readonly number[];

/** A member of a channel: its connection id, signed-in user (or null) and profile. */
export interface Member<P = unknown> {
  id: string;
  user: string | null;
  data: P | null;
  /** The `info` of the channel token that admitted the member to this channel (§4.4.2). */
  info?: unknown;
}

/** An application event (a `msg` frame), as `on`/`once` handlers receive it. */
export interface Message<D = unknown> {
  /** The channel; null for a broadcast. */
  channel: string | null;
  /** The event name. */
  event: string;
  data: D | null;
  /** The sender's member id; null when the backend (server API) sent it. */
  sender: string | null;
  /** Server time of the send, ms since the Unix epoch. */
  ts: number;
  /** The message id. */
  mid: string;
  /** In a channel with history (protocol.md §4.4.1): its offset in the channel's stream. */
  offset?: number;
  /** In a channel with history: the stream's epoch. */
  epoch?: string;
}

/** A place in a channel's stream: the last message received there (protocol.md §4.4.1). */
export interface Position {
  epoch: string;
  offset: number;
}

/** How a channel's rejoin went, as `onRecover` handlers receive it. */
export interface Recovery {
  channel: string;
  /** Every message published while away was replayed (before this, in order, each once). */
  recovered: boolean;
  /** Why not: gap_too_old, epoch_changed, history_off, too_many, forbidden, already_joined. */
  reason: string | null;
  /** Where the client now is in the channel's stream. */
  position: Position | null;
}

/** A page of a channel's history. */
export interface HistoryPage<D = unknown> {
  messages: Message<D>[];
  /** The stream's epoch when the page was read (protocol.md §4.11). */
  epoch: string;
  /** The stream's top: the offset of its latest message (0: none yet). */
  offset: number;
  /** The same `{epoch, offset}` (as the Python client's `HistoryPage.top`). */
  top: Position;
  /** The `since` of the next page; null after the last. */
  next: Position | null;
}

/** A presence event, as `onJoin`, `onLeave` and `onUpdate` handlers receive it. */
export interface MemberEvent<P = unknown> {
  type: "join" | "leave" | "update";
  channel: string;
  member: Member<P>;
  /** join only: the user's first connection in the channel. */
  first?: boolean;
  /** leave only: the user's last connection in the channel. */
  last?: boolean;
}

/** The reply to `send` and `broadcast`. */
export interface SendResult {
  mid: string;
  ts: number;
  /** The number of connections the message was queued for. */
  recipients: number;
}

/** The server's welcome frame (protocol.md §3.1). */
export interface Welcome {
  t: "welcome";
  v: number;
  conn: string;
  time: number;
  hb: number;
  limits: {
    max_message_bytes: number;
    max_profile_bytes: number;
    max_channels: number;
    max_members_page: number;
    outbound_buffer_bytes: number;
    [limit: string]: number;
  };
  user?: string;
}

/** A session token, or a function giving one (called before each connection and refresh). */
export type TokenProvider = () => string | null | undefined | Promise<string | null | undefined>;

/** A WebSocket constructor with the browser API (the ws package's is one). */
export interface WebSocketConstructor {
  new (url: string): WebSocketLike;
}

export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: string, listener: (event: any) => void, options?: { once?: boolean }): void;
}

export interface ClientOptions<P = unknown> {
  /** ws:// or wss:// URL; in a web page, defaults to the page's own host. */
  url?: string;
  /** The app to connect to; the server's default app when absent. */
  app?: string | null;
  /** The app's client API key, if it requires one. */
  key?: string | null;
  /** A session token (JWT), or a provider called before each connection and before expiry. */
  token?: string | TokenProvider | null;
  /** The initial member profile, shown to other members. */
  profile?: P | null;
  /** Default for receiving one's own sends and presence events (default true). */
  echo?: boolean;
  /**
   * Ask the server for batched presence diffs (protocol.md §5.2.1; default true): one
   * `presence` frame per window instead of one `member_*` frame per event. Handlers are
   * called once per member either way.
   */
  presenceDiffs?: boolean;
  /** Reconnect after unexpected disconnects (default true). */
  reconnect?: boolean;
  /** First reconnect delay bound, ms (default 500); doubles per attempt... */
  backoffInitial?: number;
  /** ...up to this bound, ms (default 30000). Each delay is drawn uniformly below the bound. */
  backoffMax?: number;
  /** ms to wait for a reply once a request is sent (default 10000). */
  requestTimeout?: number;
  /** ms for one connection attempt: open, hello, welcome (default 10000). */
  connectTimeout?: number;
  /** Requests that may wait for the connection while disconnected (default 100). */
  bufferLimit?: number;
  /** Reject requests at once with NotConnectedError while disconnected (default false). */
  failFast?: boolean;
  /** With a token provider: refresh this many ms before the token's `exp` (default 30000). */
  refreshBefore?: number;
  /**
   * A channel token (protocol.md §4.4.2) for `channel` from the app's backend, or null to
   * join without one. Asked on every join and rejoin, and before a held token expires.
   */
  getChannelToken?: ((channel: string) => string | null | Promise<string | null>) | null;
  /** For the app's connect hook (docs/hooks.md): sent as the hello's `data` on every connection. */
  connectData?: unknown;
  /** The WebSocket implementation (default: globalThis.WebSocket). */
  WebSocket?: WebSocketConstructor;
}

/** Removes the handler it was returned for. */
export type Unsubscribe = () => void;

export class RealtimeClient<P = unknown> {
  constructor(options?: ClientOptions<P>);

  readonly url: string;
  /** The current profile (kept across reconnects). */
  profile: P | null;
  /** Channels rejoined after a reconnect, with their join echo option. */
  readonly channels: Map<string, boolean | undefined>;
  /** Per channel joined with `data` (for the app's join hook): sent again on rejoins. */
  readonly joinData: Map<string, unknown>;
  /** The welcome frame of the current (or last) connection. */
  readonly welcome: Welcome | null;
  /** Per joined channel with history: the last message received there. */
  readonly positions: Map<string, Position>;

  /** Connect; resolves once connected (welcome received, channels rejoined). */
  open(): Promise<void>;
  /** Close (code 1000) and stop reconnecting. */
  close(): Promise<void>;
  isConnected(): boolean;
  /** This connection's member id (changes on reconnect), or null. */
  getSocketId(): string | null;

  /** Join a channel; false if already a member. `recover`: replay what followed this position. */
  /** `data`: for the app's join hook (docs/hooks.md); sent again on the rejoins after reconnects. */
  join(channel: string, echo?: boolean, recover?: Position, options?: { data?: unknown }): Promise<boolean>;
  /** A page of a channel's history: oldest first after `since`, or newest first with `reverse`. */
  history<D = any>(
    channel: string,
    options?: { since?: Position | null; limit?: number; reverse?: boolean },
  ): Promise<HistoryPage<D>>;
  /** Leave a channel; false if not a member. */
  leave(channel: string, echo?: boolean): Promise<boolean>;
  /** Every member of a channel, fetched page by page. */
  getMembers<MP = P>(channel: string, options?: { pageSize?: number }): Promise<Member<MP>[]>;
  /** Replace the profile; resolves with the number of channels told. */
  updateProfile(data: P, echo?: boolean): Promise<number>;
  /** Send an event to a joined channel. */
  send(channel: string, event: string, data?: unknown, echo?: boolean): Promise<SendResult>;
  /** Send an event to every connection of the app. */
  broadcast(event: string, data?: unknown, echo?: boolean): Promise<SendResult>;
  /** A fresh token for the same user; resolves with its expiry (ms since the epoch) or null. */
  refresh(token: string): Promise<number | null>;

  /** Handle app events named `event` ("*": every app event). */
  on<D = any>(event: string, handler: (message: Message<D>) => void): Unsubscribe;
  once<D = any>(event: string, handler: (message: Message<D>) => void): Unsubscribe;
  /** Remove one handler, all handlers of an event, or (no arguments) every app-event handler. */
  off(event?: string, handler?: (message: Message<any>) => void): void;
  onJoin<MP = P>(handler: (event: MemberEvent<MP>) => void): Unsubscribe;
  onLeave<MP = P>(handler: (event: MemberEvent<MP>) => void): Unsubscribe;
  onUpdate<MP = P>(handler: (event: MemberEvent<MP>) => void): Unsubscribe;
  /** Events about this connection's own user (signin, signout, profile_update, ...). */
  onUserEvent(
    handler: (event: string, session: Record<string, unknown> | null, user: Record<string, unknown> | null, ts: number) => void,
  ): Unsubscribe;
  /** The server took this connection out of a channel (protocol.md §5.6); it is not rejoined. */
  onLeft(
    handler: (event: { channel: string; reason: "token_expired" | "grant_revoked" | "removed" | string; msg: string }) => void,
  ): Unsubscribe;
  /** The server put this connection into a channel (protocol.md §5.7); it puts it back after a reconnect. */
  onJoined(
    handler: (event: { channel: string; reason: "added" | "subscribe" | string; position?: { epoch: string; offset: number } }) => void,
  ): Unsubscribe;
  onConnect(handler: (socketId: string, info: { reconnected: boolean }) => void): Unsubscribe;
  /** `code` is the close code (1006 when no close frame arrived). */
  onDisconnect(handler: (code: number, reason: string) => void): Unsubscribe;
  onReconnectAttempt(handler: (attempt: number) => void): Unsubscribe;
  /** How each rejoin of a channel with a position went (after reconnects). */
  onRecover(handler: (recovery: Recovery) => void): Unsubscribe;
  onError(handler: (error: Error) => void): Unsubscribe;
  /** Messages of `channel` (null: broadcasts) may have been missed (protocol.md §5.5). */
  onGap(handler: (gap: { channel: string | null; reason: string }) => void): Unsubscribe;
  /** A rejoin was refused for a passing reason; the client keeps the channel and retries. */
  onRejoining(handler: (info: { channel: string; reason: string; attempt: number }) => void): Unsubscribe;
  /** The backend ended the session (4016) or disconnected the client (4017); it stops. */
  onSessionEnded(handler: (error: ConnectionClosedError) => void): Unsubscribe;
}

export default RealtimeClient;

/** Base of the client's errors. */
export class RtcoreError extends Error {
  readonly code: string | number;
}

/** An `err` reply; `code` is the protocol's (protocol.md §6), passed through as received. */
export class RequestError extends RtcoreError {
  readonly code: string;
  /** The server's explanation. */
  readonly serverMessage: string;
  /** rate_limited: the limiter that refused. */
  readonly limiter: string | null;
  /** rate_limited: ms until the request would be admitted. */
  readonly retryAfter: number | null;
  /** The refusal had no effect and its reason passes (broker_unavailable, rate_limited). */
  readonly retrySafe: boolean;
}

/** The codes of refusals that left no effect and may be retried (protocol.md §6). */
export const RETRY_SAFE: readonly string[];

export class RequestTimeoutError extends RtcoreError {
  readonly code: "timeout";
}

export class NotConnectedError extends RtcoreError {
  readonly code: "not_connected";
}

export class BufferFullError extends RtcoreError {
  readonly code: "buffer_full";
}

/** The connection dropped while the request awaited its reply (it may have taken effect). */
export class ConnectionLostError extends RtcoreError {
  readonly code: "connection_lost";
}

/** A connection attempt failed. */
export class ConnectError extends RtcoreError {
  readonly code: "connect_failed";
  readonly closeCode: number;
  readonly reason: string;
}

export class ProtocolError extends RtcoreError {
  readonly code: "protocol_error";
}

/** The server closed with a code reconnecting cannot fix; `code` is the close code. */
export class ConnectionClosedError extends RtcoreError {
  readonly code: number;
  readonly reason: string;
}

// -- the protocol layer, for tests and other clients ---------------------------------------

export interface Frame {
  t: string;
  [key: string]: unknown;
}

export const frames: {
  hello(fields: { app?: string | null; key?: string | null; token?: string | null; profile?: unknown; echo?: boolean; features?: string[]; data?: unknown }): Frame;
  /** `data`: for the app's join hook (docs/hooks.md). */
  join(id: number, ch: string, echo?: boolean, recover?: Position, token?: string, data?: unknown): Frame;
  leave(id: number, ch: string, echo?: boolean): Frame;
  members(id: number, ch: string, limit?: number, after?: number | null): Frame;
  profile(id: number, data: unknown, echo?: boolean): Frame;
  send(id: number, ch: string, ev: string, data?: unknown, echo?: boolean): Frame;
  broadcast(id: number, ev: string, data?: unknown, echo?: boolean): Frame;
  refresh(id: number, token: string, ch?: string): Frame;
  history(id: number, ch: string, since?: Position, limit?: number, reverse?: boolean): Frame;
};

export function encodeFrame(frame: Frame): Uint8Array;
/** @throws ProtocolError */
export function decodeFrame(bytes: ArrayBuffer | Uint8Array): Frame;
export function messageEvent(frame: Frame): Message;
export function memberEvent(frame: Frame): MemberEvent;
/** The per-member events a batched `presence` frame stands for: leaves, joins, updates. */
export function presenceEvents(frame: Frame): MemberEvent[];
export function userEvent(frame: Frame): {
  event: string;
  session: Record<string, unknown> | null;
  user: Record<string, unknown> | null;
  ts: number;
};
/** The reconnect delay for attempt n: uniform below min(max, initial * 2^(n-1)). */
export function backoffDelay(attempt: number, initial: number, max: number, random?: () => number): number;
/** A JWT's `exp` in ms, or null. */
export function tokenExpiry(token: string): number | null;
