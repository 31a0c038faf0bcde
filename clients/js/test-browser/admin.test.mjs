// The Realtime settings page (/admin on the server-API port) in Debian's Chromium: an operator
// turns on "session required" and an anonymous client is closed with 4013; adds a rate limiter
// and a client is refused with the limiter's message. Both go through the page's form only.
// The "Hooks & webhooks" panel shows a failing hook's breaker and a webhook's deliveries.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { launchChromium, ARTIFACTS } from "./chromium.mjs";
import { startServer, client, next, cleanupAll, mintToken, nowSeconds } from "../test/helpers.mjs";
import { RequestError, ConnectionClosedError } from "../rtcore-client.js";

const SCREENSHOT_FOR_DOCS = process.env.RTCORE_ADMIN_SCREENSHOT; // a path: also save the page there
const T = { timeout: 60000 };
const ADMIN = "an-operators-admin-secret-of-32-characters-or-more";
const CONFIG = `# managed from the settings page
[server]
admin_secret = "${ADMIN}"

[[apps]]
name = "default"   # the demo app
session_required = false

[apps.session]
secret = "${"j".repeat(40)}"
`;

let browser;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await cleanupAll();
});

async function settingsPage(server) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1400 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (err) => problems.push(String(err)));
  await page.goto(`http://127.0.0.1:${server.apiPort}/admin`);
  await page.fill("#secret", ADMIN);
  await page.click("#login-form button[type=submit]");
  await page.locator("#app:not([hidden])").waitFor();
  await page.locator("#settings-title", { hasText: "default" }).waitFor();
  return { page, problems };
}

async function save(page) {
  await page.click("#save");
  await page.locator("#result .ok").waitFor();
  return page.locator("#result .ok").textContent();
}

test("toggling session required on the page closes an anonymous client with 4013", T, async () => {
  const server = await startServer({ config: CONFIG });
  try {
    const anon = client(server.url);
    await anon.open();
    await anon.join("lobby");
    const { page, problems } = await settingsPage(server);
    await page.locator("#stat-connections", { hasText: "1" }).waitFor();

    const closed = next((fn) => anon.onError(fn), { timeout: 10000, where: (e) => e instanceof ConnectionClosedError });
    await page.locator("label.switch", { hasText: "Session required" }).click();
    const saved = await save(page);
    assert.match(saved, /applied: 1 connection\(s\) closed/);
    assert.equal((await closed).code, 4013);

    const again = client(server.url, { reconnect: false });
    await assert.rejects(again.open(), (e) => e instanceof ConnectionClosedError && e.code === 4013);
    const file = readFileSync(join(server.configDir, "rtcore.toml"), "utf8");
    assert.match(file, /^session_required = true$/m);
    assert.match(file, /^name = "default" {3}# the demo app$/m); // comments kept
    assert.match(file, /^# managed from the settings page$/m);
    assert.deepEqual(problems, []);
  } finally {
    await server.cleanup();
  }
});

test("a limiter added on the page refuses a client with its message; a bad value is shown", T, async () => {
  const server = await startServer({ config: CONFIG });
  try {
    const { page, problems } = await settingsPage(server);
    await page.click("#add-limiter");
    const limiter = page.locator(".limiter").last();
    await limiter.locator('input[aria-label="limiter name"]').fill("tight");
    await limiter.locator('input[aria-label="rate"]').fill("0");
    await limiter.locator('input[aria-label="per seconds"]').fill("60");
    await limiter.locator('input[aria-label="error message"]').fill("One join a minute, please.");

    // rate 0 is refused with check-config's own words, and nothing is applied
    await page.click("#save");
    await page.locator("#result .error").waitFor();
    assert.match(await page.locator("#result").textContent(), /rate_limits\[0\]\.rate: must be a positive number/);

    await limiter.locator('input[aria-label="rate"]').fill("1");
    await save(page);
    await page.screenshot({ path: join(ARTIFACTS, "admin-settings.png"), fullPage: true });
    if (SCREENSHOT_FOR_DOCS) await page.screenshot({ path: SCREENSHOT_FOR_DOCS, fullPage: true });

    const c = client(server.url);
    await c.open();
    await c.join("a");
    await assert.rejects(c.join("b"), (e) =>
      e instanceof RequestError && e.code === "rate_limited" && e.limiter === "tight" &&
      e.message.includes("One join a minute, please."));
    assert.deepEqual(problems, []);
  } finally {
    await server.cleanup();
  }
});

test("the sign-in screen shows the sign-in form and nothing of the settings under it", T, async () => {
  const server = await startServer({ config: CONFIG });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${server.apiPort}/admin`);
    await page.locator("#login").waitFor({ state: "visible" });
    for (const hidden of ["#app", "#stats", "#signout", "#settings-form"]) {
      assert.equal(await page.locator(hidden).isVisible(), false, `${hidden} shows on the sign-in screen`);
    }
    await page.fill("#secret", ADMIN);
    await page.click("#login-form button[type=submit]");
    await page.locator("#app").waitFor({ state: "visible" });
    assert.equal(await page.locator("#login").isVisible(), false);
    assert.equal(await page.locator("#signout").isVisible(), true);
  } finally {
    await server.cleanup();
  }
});

test("adding the first key protects the app, and the generated key stays on screen through refreshes", T, async () => {
  const server = await startServer({ config: CONFIG });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 1400 } });
    const page = await context.newPage();
    await page.clock.install(); // the page's 2 s refresh runs when the test says so
    await page.goto(`http://127.0.0.1:${server.apiPort}/admin`);
    await page.fill("#secret", ADMIN);
    await page.click("#login-form button[type=submit]");
    await page.locator("#settings-title", { hasText: "default" }).waitFor();
    const required = page.locator("input[name=api_key_required]");
    assert.equal(await required.isChecked(), false); // no keys: an open app

    await page.click("#add-key");
    assert.equal(await required.isChecked(), true, "a key makes API key required (the file's default)");
    assert.match(await page.locator("#keys-note").textContent(), /written into the config file in plain text/);
    await save(page);
    const key = await page.locator("#result .generated code").textContent();
    assert.ok(key.length >= 32, key);

    // two rounds of the periodic refresh later, the key is still there to be copied
    const seen = Number(await page.locator("body").getAttribute("data-refreshes"));
    await page.clock.runFor(4500);
    await page.waitForFunction((n) => Number(document.body.dataset.refreshes) >= n + 2, seen, { timeout: 10000 });
    assert.equal(await page.locator("#result .generated code").textContent(), key);

    const file = readFileSync(join(server.configDir, "rtcore.toml"), "utf8");
    assert.doesNotMatch(file, /api_key_required\s*=\s*false/);
    const anon = client(server.url, { reconnect: false });
    await assert.rejects(anon.open(), (e) => e instanceof ConnectionClosedError && e.code === 4010);
    const keyed = client(server.url, { reconnect: false, key });
    await keyed.open();
    await keyed.join("lobby");
  } finally {
    await server.cleanup();
  }
});

test("a key taken from an environment variable stays out of the config file", T, async () => {
  const secretKey = "an-api-key-kept-in-the-environment-0123456789";
  const server = await startServer({ config: CONFIG, env: { WEB_API_KEY: secretKey } });
  try {
    const { page, problems } = await settingsPage(server);
    await page.click("#add-key");
    const row = page.locator("#keys tbody tr").last();
    await row.locator('input[aria-label="key name"]').fill("web");
    await row.locator('select[aria-label="key source"]').selectOption("env");
    // a variable the server does not have is refused with check-config's words
    await row.locator('input[aria-label="key source name"]').fill("NOT_SET_ANYWHERE");
    await page.click("#save");
    await page.locator("#result .error").waitFor();
    assert.match(await page.locator("#result").textContent(), /NOT_SET_ANYWHERE/);

    await row.locator('input[aria-label="key source name"]').fill("WEB_API_KEY");
    await save(page);
    assert.equal(await page.locator("#result .generated").count(), 0);
    const file = readFileSync(join(server.configDir, "rtcore.toml"), "utf8");
    assert.match(file, /^key_env = "WEB_API_KEY"$/m);
    assert.ok(!file.includes(secretKey));
    assert.match(await page.locator("#keys tbody").textContent(), /key_env WEB_API_KEY/);

    const anon = client(server.url, { reconnect: false });
    await assert.rejects(anon.open(), (e) => e instanceof ConnectionClosedError && e.code === 4010);
    const keyed = client(server.url, { reconnect: false, key: secretKey });
    await keyed.open();
    assert.deepEqual(problems, []);
  } finally {
    await server.cleanup();
  }
});

/**
 * Click save and wait until the config file says `expected`. (Not `save()`: the page's
 * 2-second refresh clears the result line of a saved form, so reading it races that timer.)
 */
async function saveUntil(page, file, expected) {
  await page.click("#save");
  for (let i = 0; i < 200 && !expected.test(file()); i++) await new Promise((r) => setTimeout(r, 50));
  assert.match(file(), expected);
}

test("a key's restrictions set on the page refuse clients with their close codes", T, async () => {
  const KEY = "a-client-key-for-the-restriction-test";
  const server = await startServer({ config: `${CONFIG}\n[[apps.api_keys]]\nname = "web"\nkey = "${KEY}"\n` });
  try {
    const { page, problems } = await settingsPage(server);
    const file = () => readFileSync(join(server.configDir, "rtcore.toml"), "utf8");
    const row = page.locator("#keys tbody tr").first();
    await row.locator('input[aria-label="allowed IPs"]').fill("10.0.0.0/8, 192.0.2.7");
    await saveUntil(page, file, /^allowed_ips = \["10\.0\.0\.0\/8", "192\.0\.2\.7"\]$/m);
    const refused = client(server.url, { key: KEY, reconnect: false });
    await assert.rejects(refused.open(), (e) => e instanceof ConnectionClosedError && e.code === 4021);

    // a bad entry is refused with check-config's words (an error stays shown: not dirty-reset)
    await row.locator('input[aria-label="allowed IPs"]').fill("10.0.0.0/40");
    await page.click("#save");
    await page.locator("#result .error").waitFor();
    assert.match(await page.locator("#result").textContent(), /allowed_ips\[0\]: '10\.0\.0\.0\/40' is not an IP address/);

    await row.locator('input[aria-label="allowed IPs"]').fill("");
    await row.locator('input[aria-label="realtime connections"]').uncheck();
    await saveUntil(page, file, /^realtime = false$/m);
    assert.doesNotMatch(file(), /allowed_ips/);
    const serverOnly = client(server.url, { key: KEY, reconnect: false });
    await assert.rejects(serverOnly.open(), (e) => e instanceof ConnectionClosedError && e.code === 4018);
    assert.deepEqual(problems, []);
  } finally {
    await server.cleanup();
  }
});

test("a user-limited rule and a token rule added on the page admit only whom they say", T, async () => {
  const server = await startServer({ config: CONFIG });
  try {
    const { page, problems } = await settingsPage(server);
    const addRule = async (pattern, join) => {
      await page.click("#add-rule");
      const row = page.locator("#rules tbody tr").last();
      await row.locator('input[aria-label="pattern"]').fill(pattern);
      await row.locator("select").first().selectOption(join);
      return row;
    };
    const dm = await addRule("dm#*", "signed_in");
    await dm.locator('input[aria-label="user-limited"]').check();
    await addRule("room:*", "token");
    await save(page);
    const file = readFileSync(join(server.configDir, "rtcore.toml"), "utf8");
    assert.match(file, /^user_limited = true$/m);
    assert.match(file, /^join = "token"$/m);

    const as = (user) => client(server.url, { token: mintToken({ sub: user, exp: nowSeconds() + 600 }) });
    const [alice, carol] = [as("alice"), as("carol")];
    await alice.open();
    await carol.open();
    assert.equal(await alice.join("dm#alice,bob"), true);
    await assert.rejects(carol.join("dm#alice,bob"), (e) => e instanceof RequestError && e.code === "forbidden");
    await assert.rejects(alice.join("room:1"), (e) => e instanceof RequestError && e.code === "forbidden");
    await alice.close();
    await carol.close();
    assert.deepEqual(problems, []);
  } finally {
    await server.cleanup();
  }
});

test("a save made stale by another change is refused with a clear message, then works", T, async () => {
  const server = await startServer({ config: CONFIG });
  try {
    const { page, problems } = await settingsPage(server);
    await page.locator("label.switch", { hasText: "Session required" }).click(); // unsaved
    // meanwhile the file changes (another operator's save, or an edit by hand)
    const path = join(server.configDir, "rtcore.toml");
    writeFileSync(path, readFileSync(path, "utf8") + "\n# edited by hand\n");
    await page.click("#save");
    await page.locator("#result .error").waitFor();
    assert.match(await page.locator("#result").textContent(), /Not saved: these settings were changed elsewhere/);
    assert.doesNotMatch(readFileSync(path, "utf8"), /^session_required = true$/m);

    await page.click("#result button"); // load the current settings, then change them again
    await page.locator("#result .error").waitFor({ state: "detached" });
    await page.locator("label.switch", { hasText: "Session required" }).click();
    assert.match(await save(page), /Saved to/);
    const file = readFileSync(path, "utf8");
    assert.match(file, /^session_required = true$/m);
    assert.match(file, /^# edited by hand$/m); // the other change kept
    assert.deepEqual(problems, []);
  } finally {
    await server.cleanup();
  }
});

test("the Hooks & webhooks panel shows a failing join hook's breaker and a webhook's deliveries; a hook rule survives a save", T, async () => {
  // The app's backend: the join hook answers 500 (a failure), the webhook endpoint 200.
  const delivered = [];
  const backend = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => { body += chunk; });
    req.on("end", () => {
      if (req.url === "/events") { delivered.push(JSON.parse(body)); res.writeHead(200).end("{}"); }
      else res.writeHead(500).end("the backend is down");
    });
  });
  await new Promise((r) => backend.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${backend.address().port}`;
  const config = `${CONFIG}
[apps.hooks]
join_url = "${base}/join"
secret_env = "HOOKS_SECRET"
breaker_failures = 1
breaker_open = 600.0

[[apps.channels]]
pattern = "team-*"
join = "hook"

[[apps.webhooks]]
url = "${base}/events"
secret_env = "HOOKS_SECRET"
events = ["connection_opened"]
batch_window = 0.05
`;
  const server = await startServer({ config, env: { HOOKS_SECRET: "h".repeat(40) } });
  try {
    const c = client(server.url);
    await c.open();
    await assert.rejects(c.join("team-1"), (e) => e instanceof RequestError && e.code === "hook_unavailable");
    for (let i = 0; i < 200 && delivered.length === 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(delivered[0].events[0].name, "connection_opened");

    const { page, problems } = await settingsPage(server);
    await page.click('.tab[data-tab="integrations"]');
    const hooks = page.locator("#hooks-table");
    await hooks.waitFor({ state: "visible" });
    assert.match(await hooks.locator("tr", { hasText: "join_url" }).textContent(), new RegExp(`${base}/join`));
    assert.match(await hooks.locator("tr", { hasText: "breaker" }).textContent(), /open/);
    assert.match(await hooks.locator("tr", { hasText: "outcomes" }).textContent(), /join:unavailable 1/);
    assert.match(await hooks.locator("tr", { hasText: "last failure" }).textContent(), /HTTP 500/);
    const webhook = page.locator("#webhooks-health table.webhook");
    assert.match(await webhook.locator("tr", { hasText: "url" }).first().textContent(), new RegExp(`${base}/events`));
    await webhook.locator("tr", { hasText: "delivered" }).locator("td", { hasText: /^[1-9]/ }).waitFor({ timeout: 10000 });
    assert.match(await webhook.locator("tr", { hasText: "dropped" }).textContent(), /0/);

    // The rule editor shows join = "hook" as it is, and a save keeps it.
    await page.click('.tab[data-tab="settings"]');
    const rule = page.locator("#rules tbody tr").first();
    assert.equal(await rule.locator("select").first().inputValue(), "hook");
    await page.locator("label.switch", { hasText: "Broadcast to everyone" }).click();
    const file = () => readFileSync(join(server.configDir, "rtcore.toml"), "utf8");
    await saveUntil(page, file, /^allow_client_broadcast = false$/m);
    assert.match(file(), /^join = "hook"$/m);
    await c.close();
    assert.deepEqual(problems, []);
  } finally {
    await server.cleanup();
    backend.close();
  }
});
