// Debian's Chromium driven by playwright-core (never a downloaded browser build), with the
// flags this machine's closed network needs; shared by the browser tests.

import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { JS_ROOT } from "../test/helpers.mjs";

export const CHROMIUM = process.env.RTCORE_CHROMIUM || "/usr/bin/chromium";
export const ARTIFACTS = join(JS_ROOT, "test-artifacts");
const ARGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];

/** Chromium on a fresh, temporary user-data-dir of its own (playwright's launch()). */
export async function launchChromium() {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (apt-get install chromium)`);
  mkdirSync(ARTIFACTS, { recursive: true });
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 30000 });
}
