// End-to-end in Debian's Chromium (playwright-core, never a downloaded browser): the demo chat
// served by `rtcore serve`, and the README's browser quick start.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { launchChromium, ARTIFACTS } from "./chromium.mjs";
import { startServer, client, next, cleanupAll, REPO } from "../test/helpers.mjs";

const SCREENSHOT_FOR_DOCS = process.env.RTCORE_DOCS_SCREENSHOT; // a path: also save the demo there
const T = { timeout: 60000 };

let browser;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await cleanupAll(); // what a failed or timed-out test left running
});

/** A fresh browser context (own storage) on the demo; signs in with the profile dialog. */
async function person(url, name, colorIndex, status = "") {
  const context = await browser.newContext({ viewport: { width: 1280, height: 760 } });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (err) => problems.push(String(err)));
  page.on("console", (msg) => {
    // Chromium logs each refused connection attempt while the server is down: expected.
    if (msg.type() === "error" && !/^WebSocket connection to .* failed/.test(msg.text())) problems.push(msg.text());
  });
  await page.goto(url);
  await page.locator("#profile-dialog[open]").waitFor();
  await page.fill("#profile-name", name);
  await page.locator(".swatch").nth(colorIndex).click();
  if (status) await page.fill("#profile-status", status);
  await page.click("#profile-save");
  await page.locator('#status[data-state="connected"]').waitFor();
  await page.locator("#member-list li", { hasText: name }).waitFor();
  return { page, context, problems };
}

const memberNames = (page) => page.locator("#member-list .name").allTextContents();

async function say(page, text) {
  await page.fill("#text", text);
  await page.click("#send");
}

const message = (page, who, text) =>
  page.locator(".message", { has: page.locator(".who", { hasText: who }) }).filter({ hasText: text });

test("two people chat in the demo; profiles, presence, broadcast, a closed tab, a server restart", T, async () => {
  let server = await startServer(); // the embedded default configuration
  const url = `${server.http}/`;
  try {
    const ann = await person(url, "Ann Lee", 0, "writing docs");
    const bob = await person(url, "Bob", 3);

    // Both in #lobby, each in the other's member list, with the profile's name and status.
    await ann.page.locator("#member-list li", { hasText: "Bob" }).waitFor();
    assert.deepEqual((await memberNames(bob.page)).sort(), ["Ann Lee", "Bobyou"]);
    await bob.page.locator("#member-list li", { hasText: "writing docs" }).waitFor();

    // Chat both ways: sender name and time shown.
    await say(ann.page, "Hi Bob! Welcome to rtcore.");
    const fromAnn = message(bob.page, "Ann Lee", "Hi Bob! Welcome to rtcore.");
    await fromAnn.waitFor();
    assert.match(await fromAnn.locator("time").textContent(), /\d{1,2}:\d{2}/);
    await say(bob.page, "Hey Ann, the member list updates live.");
    await message(ann.page, "Bob", "the member list updates live").waitFor();

    // Bob edits his profile; Ann's member list shows it.
    await bob.page.click("#me");
    await bob.page.fill("#profile-status", "on a call");
    await bob.page.click("#profile-save");
    await ann.page.locator("#member-list li", { hasText: "on a call" }).waitFor();

    // A broadcast reaches everyone as a banner.
    await ann.page.fill("#text", "Release 0.1 is out, read the notes in #news");
    await ann.page.click("#broadcast");
    await bob.page.locator("#banner:not([hidden])", { hasText: "Release 0.1 is out" }).waitFor();

    // Rooms: Ann joins #design (alone there); Bob's message in #lobby shows as unread.
    await ann.page.fill("#join-name", "design");
    await ann.page.click("#join-form button");
    await ann.page.locator("#room-title", { hasText: "# design" }).waitFor();
    await ann.page.locator("#member-count", { hasText: "1" }).waitFor();
    await say(bob.page, "Lunch at noon?");
    await ann.page.locator('#room-list li[data-room="lobby"] .unread', { hasText: "1" }).waitFor();
    await ann.page.click('#room-list li[data-room="lobby"]');
    await message(ann.page, "Bob", "Lunch at noon?").waitFor();
    assert.equal(await ann.page.locator("#room-list .unread").count(), 0);

    // A third person joins, then closes the tab: gone from the others' lists.
    const cleo = await person(url, "Cleo", 5);
    await ann.page.locator("#member-list li", { hasText: "Cleo" }).waitFor();
    await say(cleo.page, "Just passing by, see you later!");
    await message(ann.page, "Cleo", "Just passing by").waitFor();
    await ann.page.screenshot({ path: join(ARTIFACTS, "demo-ann.png") });
    if (SCREENSHOT_FOR_DOCS) await ann.page.screenshot({ path: SCREENSHOT_FOR_DOCS });
    await bob.page.screenshot({ path: join(ARTIFACTS, "demo-bob.png") });
    await cleo.context.close();
    await ann.page.locator("#member-list li", { hasText: "Cleo" }).waitFor({ state: "detached" });
    await bob.page.locator("#member-list li", { hasText: "Cleo" }).waitFor({ state: "detached" });
    assert.equal(await ann.page.locator("#member-count").textContent(), "2");

    // The server restarts on the same port: both show reconnecting, then reconnect and chat on.
    const port = server.port;
    await server.stop();
    await ann.page.locator('#status[data-state="reconnecting"]').waitFor();
    await bob.page.locator('#status[data-state="reconnecting"]').waitFor();
    await ann.page.screenshot({ path: join(ARTIFACTS, "demo-reconnecting.png") });
    server = await startServer({ port });
    await ann.page.locator('#status[data-state="connected"]').waitFor({ timeout: 20000 });
    await bob.page.locator('#status[data-state="connected"]').waitFor({ timeout: 20000 });
    await ann.page.locator("#member-list li", { hasText: "Bob" }).waitFor();
    // Each list holds exactly the two new connections (none of the old ids), with the
    // profiles that came back with them (resent in the hello).
    const ids = async (page) => page.evaluate(() => window.rtcoreDemo.client.getSocketId());
    const listed = (page) => page.locator("#member-list li").evaluateAll((lis) => lis.map((li) => li.dataset.member).sort());
    const current = [await ids(ann.page), await ids(bob.page)].sort();
    for (const page of [ann.page, bob.page]) {
      await page.waitForFunction(
        (want) => [...document.querySelectorAll("#member-list li")].map((li) => li.dataset.member).sort().join() === want.join(),
        current,
        { timeout: 10000 },
      ).catch(async () => assert.deepEqual(await listed(page), current));
    }
    await ann.page.locator("#member-list li", { hasText: "on a call" }).waitFor();
    await bob.page.locator("#member-list li", { hasText: "writing docs" }).waitFor();
    await say(bob.page, "Still here after the restart.");
    await message(ann.page, "Bob", "Still here after the restart.").waitFor();
    await say(ann.page, "Me too.");
    await message(bob.page, "Ann Lee", "Me too.").waitFor();
    await ann.page.screenshot({ path: join(ARTIFACTS, "demo-after-restart.png") });
    assert.deepEqual([...ann.problems, ...bob.problems], []);
  } finally {
    await server.cleanup();
  }
});

test("a rate-limited send shows the refusal with its retry time", T, async () => {
  const server = await startServer({
    config: `
[[apps]]
name = "demo"
[[apps.rate_limits]]
name = "chat-per-minute"
rate = 2
per_seconds = 60
scope = "connection"
operations = ["send"]
error_message = "Easy there: at most 2 messages a minute."
`,
  });
  try {
    const { page } = await person(`${server.http}/`, "Dana", 1);
    await say(page, "one");
    await message(page, "Dana", "one").waitFor();
    await say(page, "two");
    await message(page, "Dana", "two").waitFor();
    await say(page, "three");
    const notice = page.locator("#notice:not([hidden])");
    await notice.waitFor();
    const text = await notice.textContent();
    assert.match(text, /Easy there: at most 2 messages a minute\. Try again in \d+\.\d s\./);
    const retryAfter = Number(await notice.getAttribute("data-retry-after"));
    assert.ok(retryAfter > 0 && retryAfter <= 60000, `retryAfter ${retryAfter}`);
    assert.equal(await page.locator("#send").isDisabled(), true);
    assert.equal(await message(page, "Dana", "three").count(), 0);
    await page.screenshot({ path: join(ARTIFACTS, "demo-rate-limited.png") });
  } finally {
    await server.cleanup();
  }
});

/** The README's quick-start snippet, with the port of this run's server. */
function quickStart(port) {
  const readme = readFileSync(join(REPO, "README.md"), "utf8");
  const m = /<!-- quick-start -->\n```html\n(.*?)```/s.exec(readme);
  assert.ok(m, "README.md has no quick-start snippet");
  return m[1].replaceAll("127.0.0.1:8765", `127.0.0.1:${port}`);
}

test("the README's browser quick start, pasted into a page on another origin, chats through rtcore", T, async () => {
  const server = await startServer();
  const page = quickStart(server.port);
  const site = createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<!doctype html><title>my app</title>\n${page}`);
  });
  await new Promise((r) => site.listen(0, "127.0.0.1", r));
  const watcher = client(server.url, { profile: { name: "watcher" } });
  const context = await browser.newContext();
  try {
    await watcher.open();
    await watcher.join("lobby");
    const joined = next((fn) => watcher.onJoin(fn), { timeout: 20000 });
    const chat = next((fn) => watcher.on("chat", fn), { timeout: 20000 });
    const tab = await context.newPage();
    const logs = [];
    tab.on("console", (msg) => logs.push(msg.text()));
    tab.on("pageerror", (err) => logs.push(`pageerror: ${err}`));
    await tab.goto(`http://127.0.0.1:${site.address().port}/`);
    const ev = await joined;
    assert.equal(ev.member.data.name, "ann");
    const msg = await chat;
    assert.deepEqual(msg.data, { text: "hello from the browser" });
    assert.equal(msg.sender, ev.member.id);
    await watcher.send("lobby", "chat", { text: "hello back" });
    await tab.waitForFunction(() => document.body.textContent.includes("hello back"), null, { timeout: 10000 });
    assert.ok(!logs.some((l) => l.startsWith("pageerror")), logs.join("\n"));
  } finally {
    await context.close();
    await watcher.close();
    site.close();
    await server.cleanup();
  }
});

test("the demo on a 390 px phone: whole buttons, no 'Connecting…' before a name, senders named, no stale members offline", T, async () => {
  const server = await startServer();
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
  try {
    const page = await context.newPage();
    await page.goto(`${server.http}/`);
    await page.locator("#profile-dialog[open]").waitFor();
    assert.equal(await page.locator("#status").getAttribute("data-state"), "idle");
    assert.doesNotMatch(await page.locator("#status-text").textContent(), /Connecting/);
    await page.fill("#profile-name", "Pia");
    await page.click("#profile-save");
    await page.locator('#status[data-state="connected"]').waitFor();
    await page.locator("#member-list li", { hasText: "Pia" }).waitFor();
    for (const id of ["#send", "#broadcast", "#text"]) {
      const fits = await page.locator(id).evaluate((el) => {
        const box = el.getBoundingClientRect();
        return { right: box.right, clipped: el.scrollWidth > el.clientWidth, width: box.width };
      });
      assert.ok(fits.right <= 390 && !fits.clipped && fits.width > 0, `${id} does not fit: ${JSON.stringify(fits)}`);
    }
    await page.screenshot({ path: join(ARTIFACTS, "demo-390.png") });

    // A client like the README's snippet sends only { text }: its profile names it.
    const ann = client(server.url, { profile: { name: "ann" } });
    await ann.open();
    await ann.join("lobby");
    await page.locator("#member-list li", { hasText: "ann" }).waitFor();
    await ann.send("lobby", "chat", { text: "hello from the browser" });
    await message(page, "ann", "hello from the browser").waitFor();
    await ann.close();

    // Offline, the member list is not shown stale.
    await server.stop();
    await page.locator('#status[data-state="reconnecting"]').waitFor();
    await page.locator("#member-count", { hasText: "0" }).waitFor();
    assert.equal(await page.locator("#member-list li").count(), 0);
  } finally {
    await context.close();
    await server.cleanup();
  }
});
