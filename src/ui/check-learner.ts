import type { Lesson } from "../catalog.ts";
import { runCheck } from "../check/run.ts";
import type { CheckTarget, Verdict } from "../check/verdict.ts";
import type { WarmChecks } from "../check/warm.ts";
import type { RedisTarget } from "../redis/target.ts";

/** The learner's own copy of the exercise, as a check target. */
export function learnerTarget(file: string): CheckTarget {
  return { kind: "learner", file, label: "your code" };
}

/** A verdict for when the check on the learner's file could not even start (no Redis, say). */
export function notRun(lesson: Lesson, file: string, reason: string): Verdict {
  return {
    lesson: lesson.id,
    title: lesson.title,
    target: "learner",
    file,
    status: "error",
    reason,
    tests: [],
    output: [],
    durationMs: 0,
  };
}

/**
 * Checks the learner's file. A screen shows every outcome as a verdict, so a failure to open
 * Redis (or to start the check) becomes an error verdict rather than an exception.
 */
export async function checkLearner(
  lesson: Lesson,
  file: string,
  redis: () => Promise<RedisTarget>,
  signal?: AbortSignal,
  /** The lesson screen's: its next check waits ready for the next save. */
  warm?: WarmChecks,
): Promise<Verdict> {
  try {
    return await runCheck(lesson, learnerTarget(file), await redis(), { signal, warm });
  } catch (error) {
    return notRun(lesson, file, (error as Error).message);
  }
}
