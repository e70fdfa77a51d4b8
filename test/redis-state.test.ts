/**
 * The report shows what Redis held for a failed test: its streams, groups (lag, pending) and
 * pending entries, next to the check's message; nothing for a passing check; and only keys
 * under the run's prefix, so a run against a user's REDIS_URL never shows (or reads) theirs.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createClient } from "redis";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { type Lesson, loadLesson } from "../src/catalog.ts";
import { applyPatch } from "../src/check/patch.ts";
import { candidateKeys, type RedisState, stateLines } from "../src/check/redis-state.ts";
import { renderVerdict } from "../src/check/render.ts";
import { runCheck } from "../src/check/run.ts";
import type { CheckTarget, Verdict } from "../src/check/verdict.ts";
import { type PrivateServer, startPrivateServer } from "../src/redis/server.ts";
import { openRedisTarget, type RedisTarget } from "../src/redis/target.ts";
import { stripAnsi } from "../src/ui/term.ts";
import { scratchDir } from "./support/sandbox.ts";

const pending = (n: number) =>
  Array.from({ length: n }, (_, i) => ({
    id: `17-${i}`,
    consumer: "ocr-1",
    idleMs: 1500,
    deliveries: 2,
  }));

const state: RedisState = {
  keys: [
    {
      key: "wb:r:docs",
      type: "stream",
      length: 12,
      lastId: "17-11",
      first: [{ id: "17-0", fields: { docId: "doc-0" } }],
      last: [{ id: "17-11", fields: { docId: "doc-11" } }],
      groups: [
        {
          name: "ocr-1a2b3c",
          lastDeliveredId: "17-9",
          lag: 2,
          pending: 10,
          consumers: 1,
          entries: pending(10),
        },
      ],
      moreGroups: 0,
    },
    { key: "wb:r:status", type: "hash", fields: { stage: "ocr", docId: "doc-1" }, moreFields: 0 },
    { key: "wb:r:lease", type: "string", value: "worker-1", truncated: false },
    { key: "wb:r:done", type: "set", length: 3 },
  ],
  moreKeys: 2,
};

describe("the state shown under a failed test", () => {
  test("is short without --verbose: a few keys and pending entries, and how many more", () => {
    const lines = stateLines(state).map(stripAnsi);
    expect(lines[0]).toBe("In Redis after this check failed:");
    expect(lines).toContain("  stream wb:r:docs");
    expect(lines).toContain("    length 12, last id 17-11");
    expect(lines).toContain("    group ocr-1a2b3c: lag 2, pending 10, 1 consumer");
    expect(lines).toContain("      17-0  ocr-1  idle 1.5s  delivered 2×");
    expect(lines).toContain("      … and 7 more pending (--verbose shows more)");
    expect(lines).toContain("  … and 3 more keys (--verbose shows more)");
    expect(lines.join("\n")).not.toContain("doc-11");
    expect(lines.length).toBeLessThanOrEqual(12);
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(74);
  });

  test("is whole with --verbose: entries, every pending entry and key captured", () => {
    const text = stateLines(state, true).map(stripAnsi).join("\n");
    expect(text).toContain("17-11  docId=doc-11");
    expect(text).toContain("last delivered 17-9");
    expect(text).toContain("17-9  ocr-1  idle 1.5s  delivered 2×");
    expect(text).toContain('string wb:r:lease: "worker-1"');
    expect(text).toContain("set wb:r:done: 3 items");
    expect(text).toMatch(/… and 2 more keys$/);
  });

  test("names only keys inside the run's prefix, each once, in the order first used", () => {
    const keys = candidateKeys(
      ["wb:r:docs", "wb:r:status"],
      [["docs:ocr", "ocr", "0"], ["wb:r:docs", "wb:r:dead", "$"], ["wb:r:"]],
      "wb:r:",
    );
    expect(keys).toEqual(["wb:r:docs", "wb:r:status", "wb:r:dead"]);
  });
});

/** One test of a real check, run by name (checks/vitest.config.ts reads WORKBOOK_ONLY_TEST). */
async function runOne(
  lesson: Lesson,
  target: CheckTarget,
  testName: string,
  redis: RedisTarget,
): Promise<Verdict> {
  process.env.WORKBOOK_ONLY_TEST = testName;
  return runCheck(lesson, target, redis);
}

afterEach(() => {
  delete process.env.WORKBOOK_ONLY_TEST;
});

const lesson08 = loadLesson("08-consumer-groups");
const lesson09 = loadLesson("09-crash-recovery");
const STOP_MID_TASK = "stop\\(\\) in the middle of a task";
const HANDLER_THROWS = "a task whose handler throws";

function mistake(lesson: Lesson, name: string): CheckTarget {
  const found = lesson.mistakes.find((m) => m.name === name);
  if (!found) throw new Error(`no mistake ${name}`);
  return { kind: "mistake", file: found.file, label: name };
}

function failedWithState(verdict: Verdict) {
  const failed = verdict.tests.find((t) => t.status === "failed");
  expect(failed?.redis, JSON.stringify(verdict, null, 1).slice(0, 3000)).toBeDefined();
  return { test: failed, redis: failed?.redis as RedisState };
}

function streamOf(redis: RedisState) {
  const stream = redis.keys.find((k) => k.type === "stream");
  if (!stream || !("groups" in stream)) throw new Error("no stream captured");
  return stream;
}

describe("a real check", () => {
  let redis: RedisTarget;
  beforeAll(async () => {
    redis = await openRedisTarget({});
  });
  afterAll(async () => {
    await redis?.release();
  });

  test("lesson 09, a worker that dies when handle() fails: the entries it left pending", {
    timeout: 60_000,
  }, async () => {
    const target = mistake(lesson09, "dies-on-handler-error");
    const verdict = await runOne(lesson09, target, HANDLER_THROWS, redis);
    expect(verdict.status).toBe("failed");
    const stream = streamOf(failedWithState(verdict).redis);
    expect(stream.length).toBe(3);
    const [group] = stream.groups;
    expect(group?.pending).toBeGreaterThan(0);
    expect(group?.entries.length).toBe(group?.pending);
    expect(group?.entries.every((e) => e.deliveries >= 1 && e.consumer.length > 0)).toBe(true);
    const text = stripAnsi(renderVerdict(verdict));
    expect(text).toContain(`stream ${stream.key}`);
    expect(text).toContain(`pending ${group?.pending}`);
  });

  test("a passing check shows nothing of Redis", { timeout: 60_000 }, async () => {
    const target: CheckTarget = { kind: "solution", file: lesson08.solution, label: "solution" };
    const verdict = await runOne(lesson08, target, STOP_MID_TASK, redis);
    expect(verdict.status).toBe("passed");
    expect(verdict.tests.every((t) => t.redis === undefined)).toBe(true);
    expect(stripAnsi(renderVerdict(verdict))).not.toContain("In Redis");
  });
});

describe("against a user's REDIS_URL", () => {
  let server: PrivateServer;
  const scratch = scratchDir("redis-state");
  beforeAll(async () => {
    server = await startPrivateServer();
  });
  afterAll(async () => {
    await server?.stop();
    scratch.remove();
  });

  test("lesson 08, a worker that never acknowledges: its stream, group and pending entry, and only keys under the run's prefix", {
    timeout: 60_000,
  }, async () => {
    const redis = await openRedisTarget({ REDIS_URL: server.url });
    expect(redis.kind).toBe("external");
    // The no-xack mistake, plus a hard-coded stream outside the prefix.
    const found = lesson08.mistakes.find((m) => m.name === "no-xack");
    const wrong = applyPatch(
      readFileSync(lesson08.solution, "utf8"),
      readFileSync(found?.file ?? "", "utf8"),
    ).replace(
      "const { stream, group, consumer, handle, count, blockMs } = options;",
      'const { stream, group, consumer, handle, count, blockMs } = options;\n  await client.xAdd("docs:ocr", "*", { docId: "x" });',
    );
    expect(wrong).toContain('"docs:ocr"');
    const file = join(scratch.dir, "workers.ts");
    writeFileSync(file, wrong);
    const target: CheckTarget = { kind: "learner", file, label: "your code" };
    const verdict = await runOne(lesson08, target, STOP_MID_TASK, redis);
    expect(verdict.status).toBe("failed");
    const { redis: captured } = failedWithState(verdict);
    const keys = captured.keys.map((k) => k.key);
    expect(keys.length).toBeGreaterThan(0);
    expect(keys.every((k) => k.startsWith("wb:"))).toBe(true);
    // Three tasks, count 2: the two in hand were handled and never acknowledged (still pending,
    // delivered once); the worker stopped before reading the third.
    const stream = streamOf(captured);
    expect(stream.length).toBe(3);
    const [group] = stream.groups;
    expect(group).toMatchObject({ lag: 1, pending: 2, consumers: 1 });
    const first = group?.entries[0];
    expect(first).toMatchObject({ deliveries: 1 });
    const text = stripAnsi(renderVerdict(verdict));
    expect(text).toContain("In Redis after this check failed:");
    expect(text).toContain(`group ${group?.name}: lag 1, pending 2, 1 consumer`);
    expect(text).toMatch(new RegExp(`${first?.id} {2}\\S+ {2}idle \\S+ {2}delivered 1×`));
    expect(text).not.toMatch(/docs:ocr/);
    // --json prints the verdict as it is.
    expect(JSON.stringify(verdict)).toContain(`"pending":2`);
    const user = createClient({ url: server.url });
    await user.connect();
    expect(await user.xLen("docs:ocr")).toBe(1);
    user.destroy();
  });
});
