/**
 * Each benchmark of issue 14 starts and prints every table at a tiny size. Benchmarks are not
 * timed tests: nothing here looks at a figure, only that the run ends well with its tables.
 */
import { spawnSync } from "node:child_process";
import { expect, test } from "vitest";
import { ROOT } from "../src/paths.ts";

/**
 * Runs the bench file itself, not bench/run.ts: a timeout then ends the process that owns the
 * servers, whose watchdogs stop them.
 */
function expectTables(name: string, env: Record<string, string>, tables: (string | RegExp)[]) {
  const run = spawnSync(process.execPath, ["--import", "tsx", `bench/${name}.ts`], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    encoding: "utf8",
    timeout: 280_000,
  });
  expect(run.status, run.stderr).toBe(0);
  for (const table of tables) expect(run.stdout).toMatch(table);
}

test("vs-bullmq runs BullMQ and the capstone's CLI and prints every table", () => {
  expectTables(
    "vs-bullmq",
    {
      BENCH_DOCS: "20",
      // A traced run of 20 batched documents can end before MONITOR attaches: trace a longer one.
      BENCH_TRACE_DOCS: "1000",
      BENCH_ROUNDS: "1",
      BENCH_CONCURRENCIES: "8",
      BENCH_WORKERS: "1",
      BENCH_CEILING_REQUESTS: "20000",
    },
    [
      "Tuning, 20 documents each: BullMQ's worker concurrency and the capstone's worker processes",
      "Capstone vs BullMQ: 20 documents per run",
      "Capstone ÷ BullMQ",
      "Commands one capstone document costs",
      "The server's ceiling",
    ],
  );
}, 300_000);

test("pubsub-fanout prints its latency table", () => {
  expectTables(
    "pubsub-fanout",
    {
      BENCH_FANOUT_SUBSCRIBERS: "1,3",
      BENCH_FANOUT_RATE: "200",
      BENCH_FANOUT_SECONDS: "0.2",
      BENCH_FANOUT_RATES: "200",
    },
    [/Pub\/sub fan-out[\s\S]*subscribers[\s\S]*\n3 /],
  );
}, 300_000);
