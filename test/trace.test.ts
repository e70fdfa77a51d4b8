/** "What your code sent": connections told apart, and setup collapsed so the rest is seen. */
import { createHook } from "node:async_hooks";
import { expect, test } from "vitest";
import { connectRaw, encode } from "../src/redis/raw.ts";
import { startPrivateServer } from "../src/redis/server.ts";
import { startTrace, type TracedCommand, traceLines } from "../src/redis/trace.ts";

const at = 0;
function cmd(addr: string, client: string | undefined, ...args: string[]): TracedCommand {
  return { at, addr, client, args };
}

test("runs of one command on one connection collapse into one line with a count", () => {
  const sent = [
    ...Array.from({ length: 30 }, (_, i) =>
      cmd("a:1", "wb:learner:1a2b3c4d", "XADD", "s", "*", "n", String(i)),
    ),
    cmd("a:1", "wb:learner:1a2b3c4d", "XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"),
    cmd("a:1", "wb:learner:1a2b3c4d", "XADD", "s", "*", "n", "31"),
  ];
  const lines = traceLines(sent);
  expect(lines.map((l) => [l.args[0], l.count])).toEqual([
    ["XADD", 30],
    ["XREADGROUP", 1],
    ["XADD", 1],
  ]);
});

test("each connection gets its own label, and blocking ones are marked", () => {
  const lines = traceLines([
    cmd("a:1", "wb:learner:1a2b3c4d", "PUBLISH", "ch", "x"),
    cmd("a:2", undefined, "SUBSCRIBE", "ch"),
    cmd("a:3", "dashboard-2", "SUBSCRIBE", "ch"),
    cmd("a:4", undefined, "XREAD", "BLOCK", "100", "STREAMS", "s", "$"),
  ]);
  expect(lines.map((l) => l.connection)).toEqual([
    "your client",
    "connection 2 (blocking)",
    "dashboard-2 (blocking)",
    "connection 4 (blocking)",
  ]);
});

test("duplicates that share a name are numbered apart", () => {
  const lines = traceLines([
    cmd("a:1", "wb:learner:1a2b3c4d", "PUBLISH", "ch", "x"),
    cmd("a:2", "wb:learner:1a2b3c4d", "SUBSCRIBE", "ch"),
  ]);
  expect(lines.map((l) => l.connection)).toEqual(["your client #1", "your client #2 (blocking)"]);
});

test("stop() keeps every command Redis ran for a connection closed just before it, and not its own marker", async () => {
  const server = await startPrivateServer(["--enable-debug-command", "yes"]);
  try {
    const trace = await startTrace(server.port);
    // As a killed check leaves it: commands written, the connection closed before any reply,
    // and Redis busy, so it runs them only after stop() began.
    const conn = await connectRaw("127.0.0.1", server.port);
    const sets = Array.from({ length: 200 }, (_, i) => encode(["SET", `k${i}`, "v"])).join("");
    await new Promise<void>((resolve) =>
      conn.socket.write(encode(["DEBUG", "SLEEP", "0.2"]) + sets, () => resolve()),
    );
    conn.close();
    // Nothing of the trace may keep a one-off `npm run check` from exiting: no timer it set
    // is still waiting once stop() has resolved.
    const timers = new Set<number>();
    const hook = createHook({
      init: (id, type) => type === "Timeout" && timers.add(id),
      destroy: (id) => timers.delete(id),
    }).enable();
    const sent = await trace.stop();
    await new Promise((resolve) => setImmediate(resolve));
    hook.disable();
    expect(timers.size).toBe(0);
    const check = await connectRaw("127.0.0.1", server.port);
    const ran = await check.command(["DBSIZE"]);
    check.close();
    expect(ran).toBe(200);
    expect(sent.filter((c) => c.args[0] === "SET")).toHaveLength(200);
    expect(sent.some((c) => c.args[0] === "ECHO" || c.args[0] === "CLIENT")).toBe(false);
  } finally {
    await server.stop();
  }
});
