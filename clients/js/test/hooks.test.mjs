// Hook data: `connectData` reaches the app's connect hook on every connection, a join's `data`
// its join hook on the join and on the rejoin after a reconnect. Against a real rtcore server
// and a real hook backend (node:http on 127.0.0.1) that records each request's body.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { startServer, client, next, cleanupAll } from "./helpers.mjs";

const HOOK_SECRET = "h".repeat(40);
const bodies = { "/connect": [], "/join": [] };
let backend;
let server;

/** The hook backend: allows a hello whose data names a user (as that user), and a join whose
 * data is `{ seat: 7 }`; records every body by path. */
function answer(path, body) {
  if (path === "/connect") return { allow: typeof body.data?.user === "string", user: body.data?.user };
  return { allow: body.data?.seat === 7, code: "no_seat", message: "pick a seat" };
}

before(async () => {
  backend = createServer((req, res) => {
    let text = "";
    req.on("data", (chunk) => (text += chunk));
    req.on("end", () => {
      const body = JSON.parse(text);
      bodies[req.url]?.push(body);
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(answer(req.url, body)));
    });
  });
  await new Promise((resolve) => backend.listen(0, "127.0.0.1", resolve));
  const hooks = `http://127.0.0.1:${backend.address().port}`;
  server = await startServer({
    config: `
[[apps]]
name = "hooked"

[apps.hooks]
connect_url = "${hooks}/connect"
join_url = "${hooks}/join"
secret = "${HOOK_SECRET}"

[[apps.channels]]
pattern = "team-*"
join = "hook"
`,
  });
});

after(async () => {
  await cleanupAll();
  await new Promise((resolve) => backend.close(resolve));
});

const T = { timeout: 20000 };

test("connectData and a join's data reach the hooks, again after a reconnect", T, async () => {
  const c = client(server.url, { app: "hooked", connectData: { user: "ann" } });
  await c.open();
  assert.equal(await c.join("team-red", undefined, undefined, { data: { seat: 7 } }), true);
  const first = c.welcome.conn;
  const reconnected = next((fn) => c.onConnect(fn));
  c._ws.terminate(); // the socket drops (1006): the client reconnects and rejoins
  const [second, { reconnected: again }] = await reconnected;
  assert.ok(again && second !== first);
  assert.deepEqual(
    bodies["/connect"].map((b) => [b.data, b.conn]),
    [[{ user: "ann" }, first], [{ user: "ann" }, second]],
  );
  assert.deepEqual(
    bodies["/join"].map((b) => [b.channel, b.data, b.conn]),
    [["team-red", { seat: 7 }, first], ["team-red", { seat: 7 }, second]],
  );
  assert.deepEqual([...c.channels.keys()], ["team-red"]);
  await c.leave("team-red");
  assert.equal(c.joinData.size, 0);
});
