import { appendFileSync } from "node:fs";
import type { RedisState } from "./redis-state.ts";

/** What the check's vitest reporter writes, one JSON object per line, for the harness to read. */
export type CheckEvent =
  | { event: "start"; test: string }
  | {
      event: "result";
      test: string;
      state: "passed" | "failed" | "skipped";
      /** Why a test was skipped. */
      note?: string;
      errors: { name: string; message: string; stack?: string; hint?: number }[];
      /** The learner's function the kit's call() was still waiting for when the test ended. */
      waitingFor?: string;
      /** How long the test took, hooks included: where a slow check spends its time. */
      durationMs?: number;
    }
  /** What Redis held for a failed test's keys (checks/redis-state.ts). */
  | { event: "state"; test: string; state: RedisState }
  | { event: "log"; text: string }
  | { event: "error"; name: string; message: string; stack?: string }
  | { event: "end" }
  /** A process group the check started (a learner's worker): the harness makes sure it ends. */
  | { event: "process"; pid: number };

/**
 * Appends an event to the run's events file (WORKBOOK_RESULTS), synchronously, so it is on
 * disk even if the process is killed or its event loop never runs again.
 */
export function appendEvent(event: CheckEvent): void {
  const file = process.env.WORKBOOK_RESULTS;
  if (file) appendFileSync(file, `${JSON.stringify(event)}\n`);
}
