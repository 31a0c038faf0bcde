// Private channels in Debian's Chromium (playwright-core): three tabs of a small app whose
// backend mints session and channel tokens. Alice and Bob chat in their DM (`dm#alice,bob`,
// a user-limited channel), Carol's tab is refused; a private room admits by channel token
// (getChannelToken), and a tab without one is refused (protocol.md §4.1.2, §4.4.2).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { launchChromium } from "./chromium.mjs";
import { startServer, cleanupAll, mintToken, nowSeconds, JWT_SECRET } from "../test/helpers.mjs";

const T = { timeout: 60000 };

const CONFIG = `
[server]
default_app = "chat"

[[apps]]
name = "chat"

[apps.session]
algorithms = ["HS256"]
secret = "${JWT_SECRET}"

[[apps.channels]]
pattern = "dm#*"
user_limited = true
join = "signed_in"
send = "signed_in"

[[apps.channels]]
pattern = "room:*"
join = "token"
send = "token"
`;

let browser;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await cleanupAll();
});

/** The app: a page per user, and its backend's token endpoints (room tokens for alice and bob). */
function app(server) {
  const page = `<!doctype html><title>private</title><ul id="log"></ul>
<script type="module">
import { RealtimeClient } from "${server.http}/rtcore-client.js";
const user = new URLSearchParams(location.search).get("user");
const token = await (await fetch("/session-token?user=" + user)).text();
const client = new RealtimeClient({
  url: "${server.url}",
  token,
  getChannelToken: async (channel) => {
    const res = await fetch("/channel-token?user=" + user + "&ch=" + encodeURIComponent(channel));
    return res.ok ? res.text() : null;
  },
});
client.on("chat", (m) => {
  const li = document.createElement("li");
  li.textContent = m.channel + " " + m.data.text;
  document.getElementById("log").append(li);
});
window.attempt = async (fn) => {
  try { return { ok: await fn(client) }; } catch (err) { return { code: err.code ?? String(err) }; }
};
await client.open();
window.ready = true;
</script>`;
  return createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    const user = url.searchParams.get("user");
    if (url.pathname === "/session-token") {
      res.end(mintToken({ sub: user, exp: nowSeconds() + 3600 }));
    } else if (url.pathname === "/channel-token") {
      const channel = url.searchParams.get("ch");
      if (!channel.startsWith("room:") || !["alice", "bob"].includes(user)) {
        res.writeHead(403).end();
        return;
      }
      res.end(mintToken({ sub: user, channel, exp: nowSeconds() + 600, ops: ["join", "send", "presence"] }));
    } else {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(page);
    }
  });
}

test("alice and bob chat in their DM and a private room; carol's tab is refused both", T, async () => {
  const server = await startServer({ config: CONFIG });
  const site = app(server);
  await new Promise((r) => site.listen(0, "127.0.0.1", r));
  const context = await browser.newContext();
  try {
    const tabs = {};
    for (const user of ["alice", "bob", "carol"]) {
      const tab = await context.newPage();
      const errors = [];
      tab.on("pageerror", (err) => errors.push(String(err)));
      await tab.goto(`http://127.0.0.1:${site.address().port}/?user=${user}`);
      await tab.waitForFunction(() => window.ready === true, null, { timeout: 20000 });
      tabs[user] = { tab, errors };
    }
    const run = (user, body) => tabs[user].tab.evaluate(`window.attempt(${body})`);
    for (const user of ["alice", "bob"]) {
      assert.deepEqual(await run(user, `(c) => c.join("dm#alice,bob")`), { ok: true });
      assert.deepEqual(await run(user, `(c) => c.join("room:1")`), { ok: true });
    }
    assert.deepEqual(await run("carol", `(c) => c.join("dm#alice,bob")`), { code: "forbidden" });
    assert.deepEqual(await run("carol", `(c) => c.join("room:1")`), { code: "forbidden" });
    assert.deepEqual(await run("carol", `(c) => c.join("dm#carol,dave")`), { ok: true }); // hers
    await run("alice", `(c) => c.send("dm#alice,bob", "chat", { text: "hi bob" })`);
    await run("bob", `(c) => c.send("room:1", "chat", { text: "hi room" })`);
    for (const user of ["alice", "bob"]) {
      const tab = tabs[user].tab;
      await tab.locator("#log li", { hasText: "dm#alice,bob hi bob" }).waitFor({ timeout: 10000 });
      await tab.locator("#log li", { hasText: "room:1 hi room" }).waitFor({ timeout: 10000 });
    }
    const members = await run("alice", `(c) => c.getMembers("dm#alice,bob")`);
    assert.deepEqual(members.ok.map((m) => m.user).sort(), ["alice", "bob"]);
    assert.equal(await tabs.carol.tab.locator("#log li").count(), 0); // carol heard nothing
    for (const { errors } of Object.values(tabs)) assert.deepEqual(errors, []);
  } finally {
    await context.close();
    site.close();
    await server.cleanup();
  }
});
