/**
 * One test of a check that never returns costs that test, not the run: it fails naming what it
 * waited for, the other tests still run, and what passed stays in the report, even when the run
 * as a whole is cut off.
 */
import { afterEach, expect, test } from "vitest";
import { lesson01Runs, solution, spinsInDelaysTest } from "./support/lesson01.ts";

const runs = lesson01Runs("per-test-limit");
afterEach(() => {
  delete process.env.WORKBOOK_TEST_TIMEOUT_MS;
  delete process.env.WORKBOOK_STARVATION_MS;
});

const passedBefore = [
  "local: plain TCP on port 6379",
  "Azure Cache for Redis: TLS on port 6380 with the access key",
];

test("a test past its own limit fails naming the function; the others still run", async () => {
  // Below call()'s own 10 s, so the test's limit is what stops it.
  process.env.WORKBOOK_TEST_TIMEOUT_MS = "3000";
  const verdict = await runs.check(
    solution.replace("await client.connect();", "await new Promise(() => {});"),
  );
  expect(verdict.status).toBe("failed");
  const stuck = verdict.tests.find((t) => t.name.startsWith("connect() returns"));
  expect(stuck?.status).toBe("failed");
  expect(stuck?.message).toMatch(
    /did not finish within its 3s: it was still waiting for connect\(\) to finish\. Something in your code never returns/,
  );
  const names = verdict.tests.map((t) => t.name);
  expect(names).toContain(
    "withRedis() closes the connection after the work, also when the work throws",
  );
  expect(verdict.tests.filter((t) => t.name === stuck?.name)).toHaveLength(1);
});

test("a run cut off by its limit keeps the tests that passed and names the stuck one", async () => {
  // The spin would be named after 3 s by the kit's watcher: this is about the run's own limit.
  process.env.WORKBOOK_STARVATION_MS = "0";
  const verdict = await runs.check(spinsInDelaysTest, 15_000);
  expect(verdict.status).toBe("failed");
  expect(verdict.reason).toMatch(/did not finish within 15s[\s\S]*reconnect delays/);
  for (const name of passedBefore) {
    expect(verdict.tests.find((t) => t.name === name)?.status, name).toBe("passed");
  }
  // Found by name: when the check runs in several processes, the others' tests may come after it.
  const stuck = verdict.tests.filter(
    (t) => t.name === "reconnect delays grow and stay within 5 seconds",
  );
  expect(stuck).toHaveLength(1);
  expect(stuck[0]?.status).toBe("failed");
  expect(stuck[0]?.message).toMatch(/never finished/);
});
