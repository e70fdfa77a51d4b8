import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll } from "vitest";
import { loadLesson } from "../../src/catalog.ts";
import { runCheck } from "../../src/check/run.ts";
import type { Verdict } from "../../src/check/verdict.ts";
import { openRedisTarget, type RedisTarget } from "../../src/redis/target.ts";
import { scratchDir } from "./sandbox.ts";

export const lesson = loadLesson("01-connect");
export const solution = readFileSync(lesson.solution, "utf8");

/**
 * Lesson 01's check run on learner files of a test file's making, all on one private server
 * (as in a watch session), started before the file's tests and stopped after them.
 */
export function lesson01Runs(label: string) {
  const scratch = scratchDir(label);
  let redis: RedisTarget | undefined;
  beforeAll(async () => {
    redis = await openRedisTarget({});
  });
  afterAll(async () => {
    await redis?.release();
    scratch.remove();
  });
  const server = (): RedisTarget => {
    if (!redis) throw new Error("the server starts in beforeAll");
    return redis;
  };
  let counter = 0;
  return {
    server,
    /** Checks `source` as the learner's lesson 01 file, on `redis` if given, else the shared one. */
    check(source: string, timeoutMs?: number, redis?: RedisTarget): Promise<Verdict> {
      const file = join(scratch.dir, `attempt-${counter++}.ts`);
      writeFileSync(file, source);
      const target = { kind: "learner", file, label: "your code" } as const;
      return runCheck(lesson, target, redis ?? server(), { timeoutMs });
    },
  };
}

/**
 * The solution with a reconnectDelay() that spins for ever, only where the "reconnect delays"
 * test asks (retries above 500): the tests before it, which ask the strategy about retries 0,
 * 3 and 100, still pass.
 */
export const spinsInDelaysTest = solution.replace(
  "const base =",
  "if (retries > 500) for (;;) {}\n  const base =",
);
