/**
 * `npm run pipeline` end to end, as a user runs it: a chaos run whose audit must show nothing
 * lost and nothing twice, and Ctrl+C in the middle of a run. Both must leave no process and no
 * listening port behind.
 */
import { randomUUID } from "node:crypto";
import { expect, test } from "vitest";
import { processesWithEnv } from "../support/sandbox.ts";
import { waitFor } from "../support/wait.ts";
import { expectNothingLeft, runPipeline } from "./run-cli.ts";

test("a chaos run of 300 documents, batched (the default): every one completed or dead-lettered, none lost, none twice", async () => {
  const mark = randomUUID();
  const run = runPipeline(["--docs", "300", "--workers", "3", "--chaos", "--json"], mark);
  const code = await run.exited;
  const lines = run.output.stdout.trim().split("\n");
  const last = lines[lines.length - 1] ?? "";
  const context = `${run.output.stderr.slice(-3000)}\n${last}`;
  expect(code, context).toBe(0);
  const audit = JSON.parse(last) as Record<string, unknown> & { deadLetters: unknown[] };
  expect(audit, context).toMatchObject({
    ok: true,
    submitted: 300,
    accepted: 300,
    rejected: 3,
    rejectedWrongly: 0,
    lost: 0,
    duplicated: 0,
    wrongResults: 0,
    redisRestarts: 1,
    // The default run is the batched one, bulk uploads included.
    batch: 100,
    bulk: 100,
  });
  expect(Number(audit.completed) + Number(audit.deadLettered)).toBe(300);
  // The two poison documents at least; a healthy one only if chaos hit it again and again.
  expect(Number(audit.deadLettered)).toBeGreaterThanOrEqual(2);
  expect(Number(audit.workersKilled)).toBeGreaterThan(0);
  await expectNothingLeft(mark, run.output.stderr);
}, 240_000);

test("Ctrl+C in the middle of a run stops workers, API and Redis, and exits 130", async () => {
  const mark = randomUUID();
  const run = runPipeline(["--docs", "5000", "--workers", "2", "--chaos"], mark);
  // Running for real: the workers are up and documents are flowing.
  const flowing = await waitFor(
    () => /\] accepted [1-9]/.test(run.output.stdout) && processesWithEnv(mark).length >= 4,
    60_000,
  );
  expect(flowing, run.output.stdout + run.output.stderr).toBe(true);
  process.kill(run.child.pid ?? 0, "SIGINT");
  const code = await Promise.race([
    run.exited,
    new Promise<string>((resolve) => setTimeout(() => resolve("still running"), 30_000)),
  ]);
  expect(code, run.output.stderr).toBe(130);
  expect(run.output.stderr).toContain("Nothing is left running");
  await expectNothingLeft(mark, run.output.stdout);
}, 120_000);
