// index.d.ts declares everything rtcore-client.js exports, and every public method.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import * as rtcore from "../rtcore-client.js";
import { JS_ROOT } from "./helpers.mjs";

const DTS = readFileSync(join(JS_ROOT, "index.d.ts"), "utf8");

test("every export of the module is declared", () => {
  const declared = new Set([...DTS.matchAll(/^export (?:(?:const|class|function) (\w+)|(default))/gm)].map((m) => m[1] ?? m[2]));
  assert.deepEqual(Object.keys(rtcore).filter((k) => !declared.has(k)), []);
});

test("every public method of RealtimeClient is declared", () => {
  const body = DTS.split("export class RealtimeClient")[1].split("\n}\n")[0];
  const methods = Object.getOwnPropertyNames(rtcore.RealtimeClient.prototype)
    .filter((n) => n !== "constructor" && !n.startsWith("_"));
  assert.ok(methods.length >= 20, methods.join());
  assert.deepEqual(methods.filter((m) => !new RegExp(`^  ${m}[<(]`, "m").test(body)), []);
});
