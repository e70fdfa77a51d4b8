/**
 * The self-verification rustlings calls `dev check`: for every lesson, the check passes on the
 * solution, fails on the untouched starter (as a failure of the code, not of the harness, with no
 * test of a function the starter leaves as TODO passing), and
 * rejects every mistake with the message the mistake file names. A check that cannot fail is a
 * defect, and this is where it is caught.
 */
import { readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";
import { type Lesson, loadCatalog } from "../src/catalog.ts";
import { type RunOptions, runCheck } from "../src/check/run.ts";
import type { CheckTarget, Verdict } from "../src/check/verdict.ts";
import { openRedisTarget } from "../src/redis/target.ts";
import { expectNothingLeft } from "./support/leftovers.ts";
import { lessonTypecheck } from "./support/lesson-typecheck.ts";

const lessons = loadCatalog();
const typechecks = new Map(lessons.map((lesson) => [lesson.id, lessonTypecheck(lesson)]));

/**
 * Each run gets its own private server, so checks that change server settings stay apart, and
 * so that afterwards the server can prove nothing of the run is still connected, and /proc that
 * no process the run started (the check, a learner's worker) is still alive.
 */
async function verdictFor(
  lesson: Lesson,
  target: CheckTarget,
  enough?: RunOptions["enough"],
): Promise<Verdict> {
  const redis = await openRedisTarget({});
  try {
    const verdict = await runCheck(lesson, target, redis, {
      typecheck: typechecks.get(lesson.id),
      enough,
    });
    await expectNothingLeft(redis.url);
    return verdict;
  } finally {
    await redis.release();
  }
}

function explain(verdict: Verdict): string {
  const failures = verdict.tests
    .filter((t) => t.status !== "passed")
    .map((t) => `  ${t.status}: ${t.name}: ${t.message ?? ""}`);
  return [`${verdict.status}: ${verdict.reason ?? ""}`, ...failures, verdict.diagnostics ?? ""]
    .join("\n")
    .slice(0, 4000);
}

function messages(verdict: Pick<Verdict, "reason" | "tests">): string {
  return [verdict.reason ?? "", ...verdict.tests.map((t) => t.message ?? "")].join("\n");
}

describe.each(lessons.map((l) => [l.id, l] as const))("lesson %s", (_id, lesson) => {
  test.concurrent("its check passes on the solution", async () => {
    const verdict = await verdictFor(lesson, {
      kind: "solution",
      file: lesson.solution,
      label: "the solution",
    });
    expect(verdict.status, explain(verdict)).toBe("passed");
  });

  test.concurrent("its check fails on the untouched starter, as a failure of the code", async () => {
    const verdict = await verdictFor(lesson, {
      kind: "starter",
      file: lesson.starter,
      label: "the starter",
    });
    expect(verdict.status, explain(verdict)).toBe("failed");
    // A test of a function the starter leaves to write cannot pass yet: one that does takes the
    // starter's TODO throw for the rejection it wants, and shows green before a line is written.
    const todo = [...readFileSync(lesson.starter, "utf8").matchAll(/"TODO: (\w+)"/g)].map(
      ([, name]) => `${name}(`,
    );
    const early = verdict.tests.filter(
      (t) => t.status === "passed" && todo.some((name) => t.name.includes(name)),
    );
    expect(early.map((t) => t.name)).toEqual([]);
  });

  for (const mistake of lesson.mistakes) {
    test.concurrent(`its check rejects the mistake "${mistake.name}"`, async () => {
      // Once rejected with the expected message, the rest of the check cannot take it back:
      // the run stops there (and must still leave nothing behind).
      const rejected: RunOptions["enough"] = (soFar) =>
        soFar.status === "failed" && messages(soFar).includes(mistake.expect);
      // In one process even where the check shares its tests among several (lesson.json
      // "shards"): a test rejects a mistake the same way in either, and the solution, starter
      // and variants prove the shared runs. Three processes for each of a hundred mistakes
      // loaded the machine enough to starve the cluster chaos tests that run beside them.
      const verdict = await verdictFor(
        { ...lesson, shards: 1 },
        { kind: "mistake", file: mistake.file, label: mistake.name },
        rejected,
      );
      expect(verdict.status, explain(verdict)).toBe("failed");
      expect(messages(verdict), explain(verdict)).toContain(mistake.expect);
    });
  }

  for (const variant of lesson.variants) {
    test.concurrent(`its check passes the right answer "${variant.name}"`, async () => {
      const verdict = await verdictFor(lesson, {
        kind: "variant",
        file: variant.file,
        label: variant.name,
      });
      expect(verdict.status, explain(verdict)).toBe("passed");
    });
  }
});
