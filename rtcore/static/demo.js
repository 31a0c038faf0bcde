// The rtcore demo chat: plain JavaScript on rtcore-client.js, served by `rtcore serve` at /.
// Query parameters: ?app=NAME&key=KEY for servers whose app needs them; ?room=NAME to start in.

import { RealtimeClient, RequestError, ConnectionClosedError } from "/rtcore-client.js";

const COLORS = ["#5b5bd6", "#e5484d", "#f76b15", "#2b9a66", "#0090ff", "#d6409f", "#8e4ec6", "#12a594"];
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const state = {
  profile: loadProfile(),
  rooms: new Map(), // name -> { members: Map(id -> member), messages: [], unread: 0 }
  current: null,
  retryUntil: 0,
};

const client = new RealtimeClient({
  app: params.get("app") || undefined,
  key: params.get("key") || undefined,
  profile: state.profile,
});
window.rtcoreDemo = { client, state }; // for the browser tests and the curious

// -- profile ----------------------------------------------------------------------------------

function loadProfile() {
  try {
    const saved = JSON.parse(localStorage.getItem("rtcore-demo-profile"));
    if (saved && typeof saved.name === "string") return saved;
  } catch {}
  return null;
}

/** Profiles come from other people: only a plain #rrggbb colour reaches the style. */
function safeColor(color) {
  return typeof color === "string" && /^#[0-9a-fA-F]{6}$/.test(color) ? color : COLORS[0];
}

function initials(name) {
  const parts = String(name || "?").trim().split(/\s+/);
  return ((parts[0]?.[0] ?? "?") + (parts[1]?.[0] ?? "")).toUpperCase();
}

function avatar(profile) {
  const el = document.createElement("span");
  el.className = "avatar";
  el.textContent = initials(profile?.name);
  el.style.backgroundColor = safeColor(profile?.color);
  return el;
}

function showMe() {
  const p = state.profile;
  $("me").hidden = !p;
  if (!p) return;
  $("me-avatar").replaceWith(Object.assign(avatar(p), { id: "me-avatar" }));
  $("me-name").textContent = p.name;
}

function openProfileDialog(first) {
  const p = state.profile ?? { name: "", color: COLORS[Math.floor(Math.random() * COLORS.length)] };
  $("profile-title").textContent = first ? "Welcome to rtcore chat" : "Your profile";
  $("profile-save").textContent = first ? "Start chatting" : "Save";
  $("profile-name").value = p.name;
  $("profile-status").value = p.status ?? "";
  const swatches = $("swatches");
  swatches.querySelectorAll(".swatch").forEach((s) => s.remove());
  for (const color of COLORS) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "swatch";
    b.style.backgroundColor = color;
    b.dataset.color = color;
    b.setAttribute("aria-label", `colour ${color}`);
    b.setAttribute("aria-pressed", String(color === p.color));
    b.addEventListener("click", () => {
      swatches.querySelectorAll(".swatch").forEach((s) => s.setAttribute("aria-pressed", String(s === b)));
    });
    swatches.append(b);
  }
  $("profile-dialog").showModal();
}

$("profile-form").addEventListener("submit", async () => {
  const color = $("swatches").querySelector('[aria-pressed="true"]')?.dataset.color ?? COLORS[0];
  const status = $("profile-status").value.trim();
  const profile = { name: $("profile-name").value.trim() || "anonymous", color, ...(status ? { status } : {}) };
  const first = state.profile === null;
  state.profile = profile;
  localStorage.setItem("rtcore-demo-profile", JSON.stringify(profile));
  showMe();
  if (first) return start();
  try {
    await client.updateProfile(profile);
  } catch (err) {
    showNotice(err);
  }
});
$("me").addEventListener("click", () => openProfileDialog(false));

// -- connection indicator ---------------------------------------------------------------------

function setStatus(stateName, text) {
  $("status").dataset.state = stateName;
  $("status-text").textContent = text;
}

client.onConnect((id, { reconnected }) => {
  setStatus("connected", "Connected");
  if (reconnected) {
    // New connection, new member id: the rooms were rejoined; fetch their member lists again.
    for (const name of state.rooms.keys()) refreshMembers(name);
    systemLine(state.current, "reconnected");
  }
});
client.onDisconnect((code) => {
  if (code !== 1000) setStatus("reconnecting", "Reconnecting…");
  // Offline, the member lists are not known: show none rather than a stale one (the
  // reconnect fetches them again).
  for (const r of state.rooms.values()) r.members.clear();
  renderMembers();
});
client.onReconnectAttempt((n) => setStatus("reconnecting", `Reconnecting… (attempt ${n})`));
client.onError((err) => {
  if (err instanceof ConnectionClosedError) {
    setStatus("closed", `Disconnected: ${err.reason || err.code}`);
    showNotice(err);
  }
});

// -- rooms and members ------------------------------------------------------------------------

function room(name) {
  if (!state.rooms.has(name)) state.rooms.set(name, { members: new Map(), messages: [], unread: 0 });
  return state.rooms.get(name);
}

async function joinRoom(name) {
  room(name);
  selectRoom(name);
  try {
    await client.join(name);
    await refreshMembers(name);
  } catch (err) {
    state.rooms.delete(name);
    selectRoom(state.rooms.keys().next().value ?? null);
    showNotice(err);
  }
}

async function leaveRoom(name) {
  if (!name) return;
  state.rooms.delete(name);
  selectRoom(state.rooms.keys().next().value ?? null);
  try {
    await client.leave(name);
  } catch (err) {
    showNotice(err);
  }
}

async function refreshMembers(name) {
  const members = await client.getMembers(name);
  const r = state.rooms.get(name);
  if (!r) return;
  r.members = new Map(members.map((m) => [m.id, m]));
  if (name === state.current) renderMembers();
}

function onPresence(ev) {
  const r = state.rooms.get(ev.channel);
  if (!r) return;
  const name = ev.member.data?.name ?? "someone";
  if (ev.type === "leave") {
    r.members.delete(ev.member.id);
    if (ev.member.id !== client.getSocketId()) systemLine(ev.channel, `${name} left`);
  } else {
    const known = r.members.has(ev.member.id);
    r.members.set(ev.member.id, ev.member);
    if (ev.type === "join" && !known && ev.member.id !== client.getSocketId()) systemLine(ev.channel, `${name} joined`);
  }
  if (ev.channel === state.current) renderMembers();
}
client.onJoin(onPresence);
client.onLeave(onPresence);
client.onUpdate(onPresence);

function selectRoom(name) {
  state.current = name;
  if (name) room(name).unread = 0;
  $("room-title").textContent = name ? `# ${name}` : "No room";
  $("text").placeholder = name ? `Message #${name}` : "Join a room to chat";
  $("leave").hidden = !name;
  renderRooms();
  renderMembers();
  renderMessages();
}

function renderRooms() {
  const list = $("room-list");
  list.replaceChildren();
  for (const [name, r] of state.rooms) {
    const li = document.createElement("li");
    li.textContent = `# ${name}`;
    li.dataset.room = name;
    li.setAttribute("aria-current", String(name === state.current));
    if (r.unread) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = String(r.unread);
      li.append(badge);
    }
    li.addEventListener("click", () => selectRoom(name));
    list.append(li);
  }
}

function renderMembers() {
  const list = $("member-list");
  list.replaceChildren();
  const members = state.current ? [...room(state.current).members.values()] : [];
  $("member-count").textContent = String(members.length);
  for (const m of members) {
    const li = document.createElement("li");
    li.dataset.member = m.id;
    const info = document.createElement("div");
    info.className = "info";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = m.data?.name ?? "anonymous";
    if (m.id === client.getSocketId()) {
      const you = document.createElement("span");
      you.className = "you";
      you.textContent = "you";
      name.append(you);
    }
    const sub = document.createElement("span");
    sub.className = "sub";
    sub.textContent = m.data?.status ?? (m.user ? `user ${m.user}` : "online");
    info.append(name, sub);
    li.append(avatar(m.data), info);
    list.append(li);
  }
}

// -- messages ---------------------------------------------------------------------------------

function time(ts) {
  return new Date(ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function systemLine(channel, text) {
  if (!channel || !state.rooms.has(channel)) return;
  room(channel).messages.push({ system: text });
  if (channel === state.current) renderMessages();
}

client.on("chat", (msg) => {
  const r = state.rooms.get(msg.channel);
  if (!r) return;
  r.messages.push(msg);
  if (r.messages.length > 500) r.messages.splice(0, r.messages.length - 500);
  if (msg.channel === state.current) renderMessages();
  else {
    r.unread += 1;
    renderRooms();
  }
});

function renderMessages() {
  const list = $("messages");
  list.replaceChildren();
  const messages = state.current ? room(state.current).messages : [];
  if (messages.length === 0) {
    const empty = document.createElement("li");
    empty.className = "empty";
    empty.textContent = state.current ? "No messages yet. Say hi!" : "Join a room to start chatting.";
    list.append(empty);
  }
  for (const m of messages) {
    const li = document.createElement("li");
    if (m.system) {
      li.className = "system";
      li.textContent = m.system;
      list.append(li);
      continue;
    }
    li.className = "message" + (m.sender === client.getSocketId() ? " mine" : "");
    const body = document.createElement("div");
    body.className = "body";
    const meta = document.createElement("div");
    meta.className = "meta";
    const who = document.createElement("span");
    who.className = "who";
    const profile = senderProfile(m);
    who.textContent = profile.name;
    who.style.color = safeColor(profile.color);
    const when = document.createElement("time");
    when.dateTime = new Date(m.ts).toISOString();
    when.textContent = time(m.ts);
    meta.append(who, when);
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = m.data?.text ?? "";
    body.append(meta, text);
    li.append(avatar(profile), body);
    list.append(li);
  }
  list.scrollTop = list.scrollHeight;
}

/** Who sent a message: the name the demo puts in its messages, else the sender's member
 * profile in the room (clients such as the README's snippet send only `{ text }`), else
 * the app's backend (no sender) or a short form of the member id. */
function senderProfile(m) {
  if (typeof m.data?.name === "string") return { name: m.data.name, color: m.data.color };
  const member = m.channel ? state.rooms.get(m.channel)?.members.get(m.sender) : null;
  const data = member?.data;
  if (data && typeof data === "object" && typeof data.name === "string") return { name: data.name, color: data.color };
  if (typeof data === "string") return { name: data };
  return { name: m.sender ? `guest ${m.sender.slice(0, 4)}` : "the app's backend" };
}

// -- broadcasts -------------------------------------------------------------------------------

client.on("announce", (msg) => {
  $("banner-from").textContent = `${msg.data?.name ?? "someone"}:`;
  $("banner-text").textContent = msg.data?.text ?? "";
  $("banner-time").textContent = time(msg.ts);
  $("banner").hidden = false;
});
$("banner-close").addEventListener("click", () => ($("banner").hidden = true));

// -- sending, and refusals --------------------------------------------------------------------

let noticeTimer = null;

function showNotice(err) {
  const notice = $("notice");
  clearInterval(noticeTimer);
  notice.classList.toggle("error", !(err instanceof RequestError && err.code === "rate_limited"));
  if (err instanceof RequestError && err.code === "rate_limited") {
    state.retryUntil = Date.now() + (err.retryAfter ?? 0);
    const tick = () => {
      const left = Math.max(0, state.retryUntil - Date.now());
      notice.textContent = `${err.serverMessage || "Rate limited."} Try again in ${(left / 1000).toFixed(1)} s.`;
      notice.dataset.retryAfter = String(err.retryAfter);
      $("send").disabled = $("broadcast").disabled = left > 0;
      if (left <= 0) {
        clearInterval(noticeTimer);
        notice.hidden = true;
      }
    };
    tick();
    noticeTimer = setInterval(tick, 100);
  } else {
    notice.textContent = err.message;
    delete notice.dataset.retryAfter;
    noticeTimer = setTimeout(() => (notice.hidden = true), 6000);
  }
  notice.hidden = false;
}

async function submit(kind) {
  const input = $("text");
  const text = input.value.trim();
  if (!text || (kind === "send" && !state.current)) return;
  const { name, color } = state.profile;
  try {
    if (kind === "send") await client.send(state.current, "chat", { text, name, color });
    else await client.broadcast("announce", { text, name, color });
    input.value = "";
  } catch (err) {
    showNotice(err);
  }
  input.focus();
}

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  submit("send");
});
$("broadcast").addEventListener("click", () => submit("broadcast"));
$("join-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("join-name").value.trim();
  if (!name) return;
  $("join-name").value = "";
  if (state.rooms.has(name)) selectRoom(name);
  else joinRoom(name);
});
$("leave").addEventListener("click", () => leaveRoom(state.current));

// -- start ------------------------------------------------------------------------------------

async function start() {
  client.profile = state.profile;
  showMe();
  selectRoom(null);
  try {
    await client.open();
  } catch (err) {
    setStatus("closed", `Cannot connect: ${err.reason || err.message}`);
    return;
  }
  await joinRoom(params.get("room") || "lobby");
}

if (state.profile) start();
else {
  setStatus("idle", "Not connected"); // until a name is chosen: nothing is connecting yet
  selectRoom(null);
  openProfileDialog(true);
}
