/**
 * A check whose lesson.json names "shards" runs its tests in that many processes at once
 * (src/check/shards.ts): the report must be the one a single process gives, each test run once
 * by one of them, and a run stopped early must leave none of them behind.
 */
import { readdirSync } from "node:fs";
import { expect, test } from "vitest";
import { loadLesson } from "../src/catalog.ts";
import { runCheck } from "../src/check/run.ts";
import { openRedisTarget } from "../src/redis/target.ts";
import { expectNothingLeft } from "./support/leftovers.ts";

const lesson = loadLesson("07-tail-xread");
const solution = { kind: "solution", file: lesson.solution, label: "the solution" } as const;

test("lesson 07's tests are shared among its processes, and the report is one process's", async () => {
  expect(lesson.shards).toBeGreaterThan(1);
  const redis = await openRedisTarget({});
  try {
    const [shared, single] = [
      await runCheck(lesson, solution, redis),
      await runCheck({ ...lesson, shards: 1 }, solution, redis),
    ];
    expect(shared.status, shared.reason).toBe("passed");
    expect(single.status, single.reason).toBe("passed");
    expect(shared.tests.map((t) => t.name)).toEqual(single.tests.map((t) => t.name));
    const by = new Set(shared.tests.map((t) => t.shard));
    expect(by.size, "tests run by each process").toBeGreaterThan(1);
    expect(single.tests.every((t) => t.shard === undefined)).toBe(true);
    await expectNothingLeft(redis.url);
  } finally {
    await redis.release();
  }
});

test("a run ended at its first failure stops every process and leaves nothing", async () => {
  const [mistake] = readdirSync(lesson.check.replace(/[^/]+$/, "mistakes"));
  expect(mistake).toBeDefined();
  const redis = await openRedisTarget({});
  try {
    const verdict = await runCheck(
      lesson,
      {
        kind: "mistake",
        file: lesson.check.replace(/[^/]+$/, `mistakes/${mistake}`),
        label: "a mistake",
      },
      redis,
      { enough: (soFar) => soFar.status === "failed" },
    );
    expect(verdict.status).toBe("failed");
    await expectNothingLeft(redis.url);
  } finally {
    await redis.release();
  }
});
