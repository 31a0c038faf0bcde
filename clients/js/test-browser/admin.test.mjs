// The Realtime settings page (/admin on the server-API port) in Debian's Chromium: an operator
// turns on "session required" and an anonymous client is closed with 4013; adds a rate limiter
// and a client is refused with the limiter's message. Both go through the page's form only.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { launchChromium, ARTIFACTS } from "./chromium.mjs";
import { startServer, client, next, cleanupAll } from "../test/helpers.mjs";
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
