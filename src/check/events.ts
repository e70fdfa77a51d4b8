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
      /** Which of the check's processes ran it, when several share its tests (./shards.ts). */
      shard?: number;
    }
  /** What Redis held for a failed test's keys (checks/redis-state.ts). */
  | { event: "state"; test: string; state: RedisState }
  | { event: "log"; text: string }
  | {
      event: "error";
      name: string;
      message: string;
      stack?: string;
      /** vitest's word for an error raised outside any test: "Unhandled Rejection", "Uncaught Exception". */
      type?: string;
      /** The test vitest was running when it was raised (or had run last). */
      test?: string;
    }
  /** Every test of the check file, in the file's order (written once, at the end). */
  | { event: "order"; tests: string[] }
  | { event: "end" }
  /** A process group the check started (a learner's worker): the harness makes sure it ends. */
  | { event: "process"; pid: number };

/**
 * The note of a test a check's process skipped because another of the run's processes claimed
 * it (./shard-setup.ts): the harness keeps the result of the process that ran it instead.
 */
export const CLAIMED_ELSEWHERE = "run by another of the check's processes";

/** This process's number among those sharing a check's tests; undefined when it runs alone. */
export function shardOfThisProcess(): number | undefined {
  const shard = process.env.WORKBOOK_SHARDS_DIR ? process.env.WORKBOOK_SHARD : undefined;
  return shard === undefined ? undefined : Number(shard);
}

/**
 * Appends an event to the run's events file (WORKBOOK_RESULTS), synchronously, so it is on
 * disk even if the process is killed or its event loop never runs again.
 */
export function appendEvent(event: CheckEvent): void {
  const file = process.env.WORKBOOK_RESULTS;
  if (file) appendFileSync(file, `${JSON.stringify(event)}\n`);
}
