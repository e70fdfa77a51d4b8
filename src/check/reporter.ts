import { appendFileSync } from "node:fs";
import type { UserConsoleLog } from "vitest";
import type { Reporter, SerializedError, TestCase, TestModule } from "vitest/node";
import type { CheckEvent } from "./events.ts";

/**
 * Runs inside the check's vitest process and writes each event as a JSON line the moment it
 * happens, so the harness knows which test was running even if the learner's code hangs or
 * kills the process.
 */
function write(event: CheckEvent): void {
  const file = process.env.WORKBOOK_RESULTS;
  if (file) appendFileSync(file, `${JSON.stringify(event)}\n`);
}

function toError(error: { name?: string; message?: string; stack?: string }) {
  return {
    name: error.name ?? "Error",
    message: error.message ?? String(error),
    stack: error.stack,
  };
}

export default class CheckReporter implements Reporter {
  onTestCaseReady(testCase: TestCase): void {
    write({ event: "start", test: testCase.name });
  }

  onTestCaseResult(testCase: TestCase): void {
    const result = testCase.result();
    if (result.state === "pending") return;
    write({
      event: "result",
      test: testCase.name,
      state: result.state,
      note: result.state === "skipped" ? result.note : undefined,
      errors: (result.errors ?? []).map(toError),
    });
  }

  onUserConsoleLog(log: UserConsoleLog): void {
    write({ event: "log", text: log.content });
  }

  onTestModuleEnd(testModule: TestModule): void {
    for (const error of testModule.errors()) write({ event: "error", ...toError(error) });
  }

  onTestRunEnd(_modules: ReadonlyArray<TestModule>, errors: ReadonlyArray<SerializedError>): void {
    for (const error of errors) write({ event: "error", ...toError(error) });
    write({ event: "end" });
  }
}
