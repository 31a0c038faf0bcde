// The Realtime settings page. Plain ES module, no framework, no third-party code.
// Every data request carries the admin secret as a bearer header (never a cookie), so another
// site cannot make this browser change settings; the secret lives in this tab's sessionStorage.

const $ = (sel, root = document) => root.querySelector(sel);
const OPERATIONS = ["join", "members", "profile", "send", "broadcast", "refresh", "history"];
const POLICIES = ["anyone", "signed_in", "nobody", "granted", "token"];
const HOOKED = POLICIES.concat(["hook"]); // join and send may be left to the app's hooks
const FLAGS = ["enabled", "api_key_required", "session_required",
  "allow_client_join", "allow_client_send", "allow_client_broadcast"];

let state = null;          // the last /admin/api/state
let selected = null;       // the selected app's name
let form = null;           // the edited settings of the selected app
let dirty = false;
let loaded = null;         // the settings the form was loaded from (JSON), to see them change
let refreshes = 0;         // state refreshes rendered (data-refreshes on <body>, for tests)
let stateRequests = 0;     // state requests made: only the latest one's answer is applied
let formVersion = null;    // the config file's version the form was loaded at (sent on save)

function secret() { return sessionStorage.getItem("rtcore-admin-secret"); }

async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${secret()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => ({ code: "bad_response", message: `HTTP ${res.status}` }));
  if (res.status === 401 || res.status === 403) { signOut(data.message); throw new Error(data.message); }
  return { status: res.status, data };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "checked" || k === "value" || k === "disabled" || k === "hidden") node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function markDirty() { dirty = true; $("#dirty").textContent = "unsaved changes"; }

// -- sign in ------------------------------------------------------------------------------

function signOut(message = "") {
  sessionStorage.removeItem("rtcore-admin-secret");
  $("#app").hidden = true; $("#stats").hidden = true; $("#login").hidden = false;
  $("#login-error").textContent = message;
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("rtcore-admin-secret", $("#secret").value);
  $("#secret").value = "";
  await refresh(true).catch(() => {});
});
$("#signout").addEventListener("click", () => signOut());

// -- state --------------------------------------------------------------------------------

async function refresh(resetForm = false) {
  const asked = ++stateRequests;
  const { status, data } = await call("GET", "/admin/api/state");
  // A state asked for before a later refresh (say, the 2 s poll overtaken by a save's) is
  // stale: applying it would put the form back to the settings before the save.
  if (asked !== stateRequests) return;
  if (status !== 200) throw new Error(data.message);
  state = data;
  $("#login").hidden = true; $("#app").hidden = false; $("#stats").hidden = false;
  $("#stat-connections").textContent = data.server.connections.toLocaleString();
  $("#stat-slow").textContent = data.server.slow_consumers.toLocaleString();
  $("#stat-file").textContent = data.config_file ? `config: ${data.config_file}` : "no config file";
  if (!selected || !data.apps.some((a) => a.name === selected)) { selected = data.apps[0]?.name; resetForm = true; }
  renderApps();
  renderChannels();
  renderIntegrations();
  // The 2 s refresh re-renders the form only when the file's settings changed under it, and
  // never clears the result of the last save: a generated key stays on screen to be copied.
  if (resetForm) loadForm(true);
  else if (!dirty && JSON.stringify(app().settings) !== loaded) loadForm(false);
  else if (!dirty) formVersion = state.version; // the file changed elsewhere, not this app's form
  document.body.dataset.refreshes = String(++refreshes);
}

function app() { return state.apps.find((a) => a.name === selected); }

function renderApps() {
  $("#app-list").replaceChildren(...state.apps.map((a) => el("li", {
    class: a.name === selected ? "active" : "", "data-app": a.name,
    onclick: () => { if (dirty && !confirm("Discard unsaved changes?")) return; selected = a.name; dirty = false; refresh(true); },
  }, el("span", {}, a.name), el("span", { class: "count" }, `${a.connections} conn`))));
}

function renderChannels() {
  const a = app();
  $("#channel-count").textContent = `(${a.channels} in all; the ${a.top_channels.length} largest)`;
  $("#channels tbody").replaceChildren(...a.top_channels.map((ch) => el("tr", { onclick: () => showMembers(ch.name) },
    el("td", {}, ch.name), el("td", {}, String(ch.members)))));
}

async function showMembers(channel) {
  const { data } = await call("GET", `/admin/api/apps/${encodeURIComponent(selected)}/channels/${encodeURIComponent(channel)}/members`);
  $("#members").replaceChildren(el("h2", {}, `Members of ${channel}`), el("pre", {}, JSON.stringify(data.members, null, 2)));
}

// -- hooks and webhooks (read-only health) ------------------------------------------------------

function renderIntegrations() {
  const { hooks, webhooks } = app().integrations;
  const row = (k, v) => el("tr", {}, el("th", {}, k), el("td", {}, v == null ? "—" : String(v)));
  $("#hooks-health").replaceChildren(hooks
    ? el("table", { class: "grid", id: "hooks-table" },
        ...Object.entries(hooks.urls).map(([k, url]) => row(`${k}_url`, url)),
        row("breaker", hooks.breaker), row("in flight", hooks.in_flight),
        row("outcomes", Object.entries(hooks.outcomes).map(([k, n]) => `${k} ${n}`).join(", ")),
        row("last failure", hooks.last_failure))
    : el("p", { class: "muted" }, "No hooks ([apps.hooks])."));
  $("#webhooks-health").replaceChildren(...(webhooks.length ? webhooks.map((w) =>
    el("table", { class: "grid webhook" },
      row("url", w.url), row("events", w.events.join(", ")), row("queued", w.queued),
      row("delivered", w.delivered), row("retries", w.retries), row("failed", w.failed),
      row("dropped (queue full)", w.dropped), row("last failure", w.last_failure)))
    : [el("p", { class: "muted" }, "No webhooks ([[apps.webhooks]]).")]));
}

// -- the settings form -----------------------------------------------------------------------

function loadForm(clearResult) {
  loaded = JSON.stringify(app().settings);
  form = structuredClone(app().settings);
  formVersion = state.version;
  form.api_keys = form.api_keys.map((k, i) => ({ ...k, keep: i }));
  dirty = false; $("#dirty").textContent = "";
  if (clearResult) $("#result").replaceChildren();
  $("#settings-title").textContent = `Settings of ${selected}`;
  const editable = state.editable;
  $("#readonly-note").hidden = editable;
  for (const flag of FLAGS) {
    const input = $(`input[name=${flag}]`);
    input.checked = Boolean(form[flag] ?? form.api_keys.length > 0);
    input.disabled = !editable;
    input.onchange = () => { form[flag] = input.checked; markDirty(); renderKeyNote(); };
  }
  for (const id of ["#add-key", "#add-rule", "#add-limiter", "#save"]) $(id).disabled = !editable;
  renderKeys(); renderRules(); renderLimiters();
}

// "API key required" unset in the file means: required while the app has a key. The switch
// shows that default live as keys are added or removed, and the page sends the flag only once
// the operator sets it, so adding the first key protects the app (it used to save `false`).
function keyRequired() { return form.api_key_required ?? form.api_keys.length > 0; }

function renderKeyNote() {
  const input = $("input[name=api_key_required]");
  input.checked = keyRequired();
  const open = form.api_keys.length > 0 && !keyRequired();
  $("#keys-note").replaceChildren(
    open ? el("span", { class: "notice" }, "These keys are not required: clients without a key are admitted. Turn on “API key required” to refuse them. ") : "",
    "A generated key is written into the config file in plain text (and shown once). To keep it out of the file, take the key from an ",
    el("b", {}, "environment variable"), " or a ", el("b", {}, "file"),
    " instead (the variable must be set where rtcore runs; a relative path is relative to the config file).");
}

function keySource(k) {
  if (!k.generate) return el("td", { class: "muted" }, k.source);
  const ref = el("input", { type: "text", value: k.ref || "", "aria-label": "key source name", hidden: k.from === "generate",
    placeholder: k.from === "file" ? "secrets/web.key" : "WEB_API_KEY", oninput: (e) => { k.ref = e.target.value; markDirty(); } });
  const choose = el("select", { "aria-label": "key source", onchange: (e) => { k.from = e.target.value; markDirty(); renderKeys(); } },
    ...[["generate", "generate (written to the file)"], ["env", "environment variable"], ["file", "file"]].map(([v, label]) =>
      el("option", { value: v, ...(v === k.from ? { selected: "" } : {}) }, label)));
  return el("td", {}, el("div", { class: "key-source" }, choose, ref));
}

/** A key's list restriction (origins, IPs) as one text input: entries separated by spaces or commas. */
function listInput(key, field, label, placeholder) {
  return el("input", { type: "text", value: (key[field] || []).join(" "), "aria-label": label, placeholder,
    oninput: (e) => { key[field] = e.target.value.split(/[\s,]+/).filter(Boolean); markDirty(); } });
}

function renderKeys() {
  renderKeyNote();
  $("#keys tbody").replaceChildren(...form.api_keys.map((k, i) => el("tr", {},
    el("td", {}, el("input", { type: "text", value: k.name || "", "aria-label": "key name", oninput: (e) => { k.name = e.target.value; markDirty(); } })),
    el("td", {}, el("input", { type: "datetime-local", value: (k.expires || "").slice(0, 16), "aria-label": "expires",
      oninput: (e) => { k.expires = e.target.value ? `${e.target.value}:00Z` : null; markDirty(); } })),
    el("td", {}, listInput(k, "allowed_origins", "allowed origins", "any; e.g. https://app.example.com *.example.com")),
    el("td", {}, listInput(k, "allowed_ips", "allowed IPs", "any; e.g. 10.0.0.0/8 192.0.2.7")),
    el("td", {}, el("input", { type: "checkbox", checked: k.realtime !== false, "aria-label": "realtime connections",
      title: "off: the key may not open realtime connections (4018)", onchange: (e) => { k.realtime = e.target.checked; markDirty(); } })),
    keySource(k),
    el("td", {},
      el("button", { type: "button", class: "icon", title: "add a new key and let this one expire in 24 h", onclick: () => rotateKey(i) }, "Rotate"),
      " ",
      el("button", { type: "button", class: "icon danger", onclick: () => { form.api_keys.splice(i, 1); markDirty(); renderKeys(); } }, "Revoke")))));
}

function rotateKey(i) {
  const old = form.api_keys[i];
  old.expires = new Date(Date.now() + 24 * 3600e3).toISOString().slice(0, 19) + "Z";
  form.api_keys.push({ generate: true, from: "generate", name: `${old.name || "key"}-new`, expires: null });
  markDirty(); renderKeys();
}
$("#add-key").addEventListener("click", () => { form.api_keys.push({ generate: true, from: "generate", name: "", expires: null }); markDirty(); renderKeys(); });

function policySelect(value, onchange, withDefault = false, values = POLICIES) {
  const options = (withDefault ? [["", "as join"]] : []).concat(values.map((p) => [p, p]));
  return el("select", { onchange: (e) => { onchange(e.target.value || null); markDirty(); } },
    ...options.map(([v, label]) => el("option", { value: v, ...(v === (value ?? "") ? { selected: "" } : {}) }, label)));
}

function renderRules() {
  $("#rules tbody").replaceChildren(...form.channels.map((r, i) => el("tr", {},
    el("td", {}, el("input", { type: "text", value: r.pattern || "", placeholder: "public-*", "aria-label": "pattern", oninput: (e) => { r.pattern = e.target.value; markDirty(); } })),
    el("td", {}, policySelect(r.join ?? "anyone", (v) => { r.join = v; }, false, HOOKED)),
    el("td", {}, policySelect(r.send ?? "anyone", (v) => { r.send = v; }, false, HOOKED)),
    el("td", {}, policySelect(r.presence, (v) => { r.presence = v; }, true)),
    el("td", {}, el("input", { type: "checkbox", "aria-label": "presence events", checked: r.presence_events ?? true,
      onchange: (e) => { r.presence_events = e.target.checked ? null : false; markDirty(); } })),
    el("td", {}, el("input", { type: "number", min: "1", max: "100000", step: "1", value: r.member_events_max ?? "", placeholder: "1000", "aria-label": "member events max",
      oninput: (e) => { r.member_events_max = e.target.value === "" ? null : Number(e.target.value); markDirty(); } })),
    el("td", {}, el("input", { type: "number", min: "0", step: "1", value: r.history_size ?? "", placeholder: "0", "aria-label": "history size",
      oninput: (e) => { r.history_size = e.target.value === "" ? null : Number(e.target.value); markDirty(); } })),
    el("td", {}, el("input", { type: "number", min: "0", step: "any", value: r.history_ttl ?? "", placeholder: "300", "aria-label": "history ttl",
      oninput: (e) => { r.history_ttl = e.target.value === "" ? null : Number(e.target.value); markDirty(); } })),
    el("td", {}, policySelect(r.history, (v) => { r.history = v; }, true)),
    el("td", {}, el("input", { type: "checkbox", "aria-label": "user-limited", checked: r.user_limited ?? false,
      onchange: (e) => { r.user_limited = e.target.checked ? true : null; markDirty(); } })),
    el("td", {}, el("button", { type: "button", class: "icon danger", onclick: () => { form.channels.splice(i, 1); markDirty(); renderRules(); } }, "Remove")))));
}
$("#add-rule").addEventListener("click", () => { form.channels.push({ pattern: "", join: "anyone", send: "anyone" }); markDirty(); renderRules(); });

function numberInput(obj, key, label, step = "any") {
  return el("label", {}, label, el("input", { type: "number", min: "0", step, value: obj[key] ?? "", "aria-label": label,
    oninput: (e) => { obj[key] = e.target.value === "" ? null : Number(e.target.value); markDirty(); } }));
}

function renderLimiters() {
  $("#limiters").replaceChildren(...form.rate_limits.map((r, i) => {
    const ops = r.operations ?? OPERATIONS;
    return el("div", { class: "limiter", "data-limiter": r.name || "" },
      el("label", {}, "name", el("input", { type: "text", value: r.name || "", "aria-label": "limiter name", oninput: (e) => { r.name = e.target.value; markDirty(); } })),
      numberInput(r, "rate", "rate"),
      numberInput(r, "per_seconds", "per seconds"),
      numberInput(r, "burst", "burst"),
      el("label", {}, "scope", el("select", { onchange: (e) => { r.scope = e.target.value; markDirty(); } },
        ...["client", "connection"].map((s) => el("option", { value: s, ...((r.scope ?? "client") === s ? { selected: "" } : {}) }, s)))),
      el("div", { class: "buttons" },
        el("button", { type: "button", class: "icon", title: "earlier", disabled: i === 0, onclick: () => move(i, -1) }, "↑"),
        el("button", { type: "button", class: "icon", title: "later", disabled: i === form.rate_limits.length - 1, onclick: () => move(i, 1) }, "↓"),
        el("button", { type: "button", class: "icon danger", title: "remove", onclick: () => { form.rate_limits.splice(i, 1); markDirty(); renderLimiters(); } }, "✕")),
      el("label", { class: "wide" }, "message shown to refused clients",
        el("input", { type: "text", value: r.error_message || "", "aria-label": "error message", oninput: (e) => { r.error_message = e.target.value; markDirty(); } })),
      el("div", { class: "ops" }, ...OPERATIONS.map((op) => el("label", {},
        el("input", { type: "checkbox", checked: ops.includes(op), onchange: (e) => {
          const now = new Set(r.operations ?? OPERATIONS);
          e.target.checked ? now.add(op) : now.delete(op);
          r.operations = OPERATIONS.filter((o) => now.has(o)); markDirty();
        } }), op))));
  }));
}

function move(i, by) {
  const [item] = form.rate_limits.splice(i, 1);
  form.rate_limits.splice(i + by, 0, item);
  markDirty(); renderLimiters();
}
$("#add-limiter").addEventListener("click", () => {
  form.rate_limits.push({ name: `limit-${form.rate_limits.length + 1}`, rate: 10, per_seconds: 1, error_message: "Slow down." });
  markDirty(); renderLimiters();
});

// -- saving -------------------------------------------------------------------------------

function payload() {
  const out = {};
  for (const flag of FLAGS) out[flag] = $(`input[name=${flag}]`).checked;
  if (form.api_key_required === null) delete out.api_key_required; // the default: required iff keys
  out.api_keys = form.api_keys.map((k) => {
    const restrictions = {
      name: k.name,
      expires: k.expires,
      allowed_origins: k.allowed_origins || [],
      allowed_ips: k.allowed_ips || [],
      realtime: k.realtime !== false,
    };
    if (!k.generate) return { keep: k.keep, ...restrictions };
    if (k.from === "env") return { key_env: k.ref || "", ...restrictions };
    if (k.from === "file") return { key_file: k.ref || "", ...restrictions };
    return { generate: true, ...restrictions };
  });
  out.channels = form.channels.map((r) => ({ pattern: r.pattern, join: r.join, send: r.send, presence: r.presence ?? null, presence_events: r.presence_events ?? null, member_events_max: r.member_events_max ?? null, history_size: r.history_size ?? null, history_ttl: r.history_ttl ?? null, history: r.history ?? null, user_limited: r.user_limited ?? null }));
  out.rate_limits = form.rate_limits;
  out.version = formVersion;  // a save from an older version is refused (409), never lost
  return out;
}

$("#settings-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#save").disabled = true;
  try {
    const { status, data } = await call("PUT", `/admin/api/apps/${encodeURIComponent(selected)}/settings`, payload());
    const result = $("#result");
    if (status === 409 && data.code === "stale_settings") {
      result.replaceChildren(el("div", { class: "error", role: "alert" },
        "Not saved: these settings were changed elsewhere (another save, or an edit of the config file) since you loaded them. ",
        el("button", { type: "button", onclick: () => { dirty = false; refresh(true); } }, "Load the current settings"),
        " and make your change again."));
      return;
    }
    if (status !== 200) {
      result.replaceChildren(el("div", { class: "error" }, data.errors ? "Not saved:" : data.message),
        ...(data.errors ? [el("ul", {}, ...data.errors.map((e) => el("li", {}, e)))] : []));
      return;
    }
    dirty = false;
    await refresh(true);
    result.replaceChildren(el("div", { class: "ok" },
      `Saved to ${data.saved} and applied: ${data.closed} connection(s) closed by the new settings.`),
      ...data.generated_keys.map((k) => el("div", { class: "generated" },
        `New key ${k.name ? `“${k.name}” ` : ""}— copy it now, it is not shown again: `, el("code", {}, k.key))));
  } finally {
    $("#save").disabled = !state.editable;
  }
});

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    for (const panel of document.querySelectorAll("[data-panel]")) panel.hidden = panel.dataset.panel !== tab.dataset.tab;
  });
}

// -- start ----------------------------------------------------------------------------------

if (secret()) refresh(true).catch(() => {}); else signOut();
setInterval(() => { if (secret() && !$("#app").hidden) refresh(false).catch(() => {}); }, 2000);
