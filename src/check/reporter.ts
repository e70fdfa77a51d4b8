import type { UserConsoleLog } from "vitest";
import type { Reporter, SerializedError, TestCase, TestModule } from "vitest/node";
import { redactedJson, rememberSecretsOf } from "../redis/redact.ts";
import { appendEvent, type CheckEvent, shardOfThisProcess } from "./events.ts";

/** Learner output and messages may quote the password: the events file never holds it. */
export function append(event: CheckEvent): void {
  rememberSecretsOf(process.env.WORKBOOK_REDIS_URL);
  appendEvent(JSON.parse(redactedJson(event)) as CheckEvent);
}

export function toError(error: {
  name?: string;
  message?: string;
  stack?: string;
  hint?: unknown;
}) {
  return {
    name: error.name ?? "Error",
    message: error.message ?? String(error),
    stack: error.stack,
    // A CheckFailure's own property, which vitest keeps when it serializes the error.
    hint: typeof error.hint === "number" ? error.hint : undefined,
  };
}

/**
 * An error raised outside any test, with what vitest says of it: whether it was a rejection
 * nobody handled or an exception nobody caught, and the test that was running (or ran last).
 */
export function toUnhandled(error: {
  name?: string;
  message?: string;
  stack?: string;
  type?: unknown;
  VITEST_TEST_NAME?: unknown;
}) {
  return {
    ...toError(error),
    type: typeof error.type === "string" ? error.type : undefined,
    test: typeof error.VITEST_TEST_NAME === "string" ? error.VITEST_TEST_NAME : undefined,
  };
}

/**
 * Runs in the check's vitest process and passes results, the learner's console output and
 * errors to the harness as events. Each test's start (kit.ts) and a first copy of its result
 * (checks/test-results.ts) are also written from inside the test process: vitest batches what
 * reaches a reporter, and a batch never arrives from a process whose event loop the learner's
 * code has blocked.
 */
export default class CheckReporter implements Reporter {
  onTestCaseResult(testCase: TestCase): void {
    const result = testCase.result();
    if (result.state === "pending") return;
    append({
      event: "result",
      test: testCase.name,
      state: result.state,
      note: result.state === "skipped" ? result.note : undefined,
      errors: (result.errors ?? []).map(toError),
      durationMs: testCase.diagnostic()?.duration,
      shard: result.state === "skipped" ? undefined : shardOfThisProcess(),
    });
  }

  onUserConsoleLog(log: UserConsoleLog): void {
    append({ event: "log", text: log.content });
  }

  onTestModuleEnd(testModule: TestModule): void {
    for (const error of testModule.errors()) append({ event: "error", ...toError(error) });
  }

  onTestRunEnd(modules: ReadonlyArray<TestModule>, errors: ReadonlyArray<SerializedError>): void {
    for (const error of errors) append({ event: "error", ...toUnhandled(error) });
    // Results arrive as tests end; the processes sharing a check end theirs in their own order.
    const tests = modules.flatMap((m) => [...m.children.allTests()].map((t) => t.name));
    append({ event: "order", tests });
    append({ event: "end" });
  }
}
