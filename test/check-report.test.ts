/** The check's report to a learner: where an error came from, without --verbose. */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, describe, expect, test } from "vitest";
import { renderVerdict } from "../src/check/render.ts";
import { decide, learnerLocation, type Verdict } from "../src/check/verdict.ts";

const dir = mkdtempSync(join(tmpdir(), "wb-report-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = join(dir, "worker.ts");
writeFileSync(file, "export function f() {\n  throw new Error('boom');\n}\n");

describe("where an error in the learner's code came from", () => {
  test("is the first frame in the file under test, with its line of source", () => {
    const stack = [
      "Error: boom",
      "    at Commander.send (/r/node_modules/@redis/client/dist/index.js:9:9)",
      `    at f (${file}:2:9)`,
      `    at g (${file}:7:1)`,
    ].join("\n");
    expect(learnerLocation(stack, file)).toEqual({
      file,
      line: 2,
      column: 9,
      source: "  throw new Error('boom');",
    });
  });

  test("is found in file:// URLs too, and not at all in a stack of the check's own", () => {
    const stack = `Error: boom\n    at ${pathToFileURL(file).href}:2:9`;
    expect(learnerLocation(stack, file)).toMatchObject({ line: 2, column: 9 });
    const ours = "CheckFailure: no\n    at fail (/r/checks/kit.ts:53:9)";
    expect(learnerLocation(ours, file)).toBeUndefined();
    expect(learnerLocation(`Error: x\n    at h (${file}.bak:2:9)`, file)).toBeUndefined();
  });

  test("is shown under the failure message without --verbose", () => {
    const decided = decide(
      [
        {
          event: "result",
          test: "runs the task",
          state: "failed",
          errors: [
            { name: "Error", message: "boom", stack: `Error: boom\n    at f (${file}:2:9)` },
          ],
        },
        { event: "end" },
      ],
      { exitCode: 0, signal: null },
      file,
    );
    const verdict: Verdict = {
      ...decided,
      lesson: "08-consumer-groups",
      title: "Consumer groups",
      target: "learner",
      file,
      durationMs: 1,
    };
    const text = renderVerdict(verdict);
    expect(text).toMatch(/Error: boom\n\s+at .*worker\.ts:2:9\n\s+2 \| throw new Error\('boom'\);/);
  });
});

describe("a test that runs out of time", () => {
  const timedOut = { name: "Error", message: "Test timed out in 20000ms.\nIf this is a long…" };
  const ended = { exitCode: 0, signal: null };

  test("is one line in the report, naming what call() waited for, whichever copy came last", () => {
    const { tests } = decide(
      [
        { event: "start", test: "a" },
        {
          event: "result",
          test: "a",
          state: "failed",
          errors: [timedOut],
          waitingFor: "connect()",
        },
        { event: "start", test: "b" },
        { event: "result", test: "b", state: "passed", errors: [] },
        // The reporter's copy, later and without what the kit knew.
        { event: "result", test: "a", state: "failed", errors: [timedOut] },
        { event: "end" },
      ],
      ended,
    );
    expect(tests.map((t) => [t.name, t.status])).toEqual([
      ["a", "failed"],
      ["b", "passed"],
    ]);
    expect(tests[0]?.message).toMatch(
      /^This check did not finish within its 20s: it was still waiting for connect\(\) to finish\./,
    );
  });

  test("cut off with the run, is listed failed after the tests that finished", () => {
    const { tests } = decide(
      [
        { event: "start", test: "a" },
        { event: "result", test: "a", state: "passed", errors: [] },
        { event: "start", test: "b" },
      ],
      { ...ended, timedOutAfterMs: 60_000 },
    );
    expect(tests.map((t) => [t.name, t.status])).toEqual([
      ["a", "passed"],
      ["b", "failed"],
    ]);
    expect(tests[1]?.message).toMatch(/^Stopped after the check's 60s: this test never finished/);
  });
});

describe("a lesson whose code talks only to the check's own servers", () => {
  test("says why its trace is not shown instead of claiming the code sent nothing", () => {
    const verdict: Verdict = {
      lesson: "14-production-azure",
      title: "Production on Azure",
      target: "learner",
      file,
      status: "failed",
      tests: [{ name: "runs the task", status: "failed", message: "no" }],
      untraced: "the worker talks to the check's own TLS redis-server",
      output: [],
      durationMs: 1,
    };
    const text = renderVerdict(verdict);
    expect(text).toContain("What your code sent to Redis: not shown");
    expect(text).toContain("the check's own TLS redis-server");
    expect(text).not.toMatch(/sent to Redis \(\d+ command/);
  });
});
