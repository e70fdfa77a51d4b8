/**
 * Writes each test's result from inside the test process, as it ends (a vitest setup file). The
 * reporter's copy of a result arrives later, in batches, and never when the learner's code then
 * blocks the event loop: without this copy a run stopped at its time limit would lose the tests
 * that had already passed. The harness keeps one result per test, the reporter's when both came.
 *
 * A failed test also gets what Redis holds for its keys, read here before the run's keys are
 * deleted (after the test's own finally blocks and afterEach hooks).
 */
import { beforeEach } from "vitest";
import { shardOfThisProcess } from "../src/check/events.ts";
import { append, toError } from "../src/check/reporter.ts";
import { captureState, markTestStart } from "./redis-state.ts";

/** A capture that takes longer is left out: the report must not wait on a stuck server. */
const CAPTURE_MS = 2000;

/** Where kit's call() keeps the names of the learner's functions it is waiting for. */
const WAITING = Symbol.for("workbook.waitingFor");
type Waiting = { [WAITING]?: string[] };

function waitingFor(): string | undefined {
  return (globalThis as Waiting)[WAITING]?.at(-1);
}

beforeEach((context) => {
  // A call an earlier test gave up on may never settle: it is not what this test waits for.
  (globalThis as Waiting)[WAITING] = [];
  markTestStart();
  context.onTestFinished(async ({ task }) => {
    const result = task.result;
    if (result?.state !== "pass" && result?.state !== "fail") return;
    append({
      event: "result",
      test: task.name,
      state: result.state === "pass" ? "passed" : "failed",
      errors: (result.errors ?? []).map(toError),
      waitingFor: result.state === "fail" ? waitingFor() : undefined,
      durationMs: result.duration,
      shard: shardOfThisProcess(),
    });
    if (result.state !== "fail") return;
    let timer: NodeJS.Timeout | undefined;
    const state = await Promise.race([
      captureState().catch(() => undefined),
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), CAPTURE_MS);
      }),
    ]);
    clearTimeout(timer);
    if (state) append({ event: "state", test: task.name, state });
  });
});
