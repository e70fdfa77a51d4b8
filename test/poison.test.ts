/**
 * Watch mode runs every check of a session on one private server. Learner code that changes
 * the server's settings, pauses it or shuts it down must not fail the checks that follow, and a
 * paused server must not stretch a check past its time limit.
 */
import { createClient } from "redis";
import { expect, test } from "vitest";
import { expectNothingLeft } from "./support/leftovers.ts";
import { lesson01Runs, solution } from "./support/lesson01.ts";

const runs = lesson01Runs("poison");
const checkSource = runs.check;

/** The solution, sending `args` to the server as soon as it has connected. */
function sending(...args: string[]): string {
  return solution.replace(
    "await client.connect();",
    `await client.connect();\n  await client.sendCommand(${JSON.stringify(args)}).catch(() => {});`,
  );
}

/** The next check on the same server: the solution passes, and nothing of either run is left. */
async function nextCheckPasses(): Promise<void> {
  const verdict = await checkSource(solution);
  expect(verdict.status, verdict.reason).toBe("passed");
  await expectNothingLeft(runs.server().url);
}

async function config(name: string): Promise<unknown> {
  const client = createClient({ url: runs.server().url });
  await client.connect();
  try {
    return (await client.configGet(name))[name];
  } finally {
    client.destroy();
  }
}

test("CONFIG SET maxmemory 1: the next check runs on the settings the server started with", async () => {
  await checkSource(sending("CONFIG", "SET", "maxmemory", "1"));
  await nextCheckPasses();
  expect(await config("maxmemory")).toBe("0");
});

test("SHUTDOWN: the next check gets a server again", async () => {
  await checkSource(sending("SHUTDOWN", "NOSAVE"));
  await nextCheckPasses();
});

test("CLIENT PAUSE 300000 ALL: the check ends within its time limit, and the next one passes", async () => {
  const verdict = await checkSource(sending("CLIENT", "PAUSE", "300000", "ALL"), 5_000);
  expect(verdict.status).toBe("failed");
  // The time limit (5 s) plus the bounded cleanup steps and the type check, nowhere near 300 s.
  expect(verdict.durationMs).toBeLessThan(40_000);
  await nextCheckPasses();
});
