// Opens an `rtcore loadtest` HTML report in Debian's Chromium (playwright-core from
// clients/js, offline: every request but the file itself is refused) and prints what it saw
// as one JSON line: each chart image by id with its decoded size, the tables' headers, and
// any page error or network request. Optionally saves a screenshot (docs/loadtest.md's).
//
//   node tests/integration/loadtest_report.mjs REPORT.html [SCREENSHOT.png]

import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
import { resolve, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "..", "..", "clients", "js", "package.json"));
const { chromium } = require("playwright-core");

const [report, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.RTCORE_CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  timeout: 30000,
});
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  const problems = [];
  const requests = [];
  page.on("pageerror", (err) => problems.push(String(err)));
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith("file:") || url.startsWith("data:")) return route.continue();
    requests.push(url);
    return route.abort();
  });
  await page.goto(pathToFileURL(resolve(report)).href, { waitUntil: "load" });
  const seen = await page.evaluate(() => ({
    title: document.title,
    images: [...document.querySelectorAll("img")].map((img) => ({
      id: img.id, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
    })),
    headers: [...document.querySelectorAll("th")].map((th) => th.textContent),
    text: document.body.innerText,
  }));
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ ...seen, problems, requests }));
} finally {
  await browser.close();
}
