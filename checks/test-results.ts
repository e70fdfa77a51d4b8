/**
 * Writes each test's result from inside the test process, as it ends (a vitest setup file). The
 * reporter's copy of a result arrives later, in batches, and never when the learner's code then
 * blocks the event loop: without this copy a run stopped at its time limit would lose the tests
 * that had already passed. The harness keeps one result per test, the reporter's when both came.
 */
import { beforeEach } from "vitest";
import { append, toError } from "../src/check/reporter.ts";

/** Where kit's call() keeps the names of the learner's functions it is waiting for. */
const WAITING = Symbol.for("workbook.waitingFor");
type Waiting = { [WAITING]?: string[] };

function waitingFor(): string | undefined {
  return (globalThis as Waiting)[WAITING]?.at(-1);
}

beforeEach((context) => {
  // A call an earlier test gave up on may never settle: it is not what this test waits for.
  (globalThis as Waiting)[WAITING] = [];
  context.onTestFinished(({ task }) => {
    const result = task.result;
    if (result?.state !== "pass" && result?.state !== "fail") return;
    append({
      event: "result",
      test: task.name,
      state: result.state === "pass" ? "passed" : "failed",
      errors: (result.errors ?? []).map(toError),
      waitingFor: result.state === "fail" ? waitingFor() : undefined,
    });
  });
});
