/**
 * Learner code that throws, hangs, spins, exits or does not compile is a failed check with an
 * explanation, never a crash of the workbook, and leaves no process or connection behind.
 */
import { describe, expect, test } from "vitest";
import type { Verdict } from "../src/check/verdict.ts";
import { openRedisTarget } from "../src/redis/target.ts";
import { expectNothingLeft } from "./support/leftovers.ts";
import { lesson01Runs, solution, spinsInDelaysTest } from "./support/lesson01.ts";

const runs = lesson01Runs("harness");

/**
 * Checks a variant of the lesson 01 solution, then proves nothing it started is still alive. On
 * a server of its own, so that the tests can run at the same time (two of them wait out a limit)
 * and each can still prove its run left no connection open.
 */
async function checkVariant(source: string, timeoutMs?: number): Promise<Verdict> {
  const redis = await openRedisTarget({});
  try {
    const verdict = await runs.check(source, timeoutMs, redis);
    await expectNothingLeft(redis.url);
    return verdict;
  } finally {
    await redis.release();
  }
}

function text(verdict: Verdict): string {
  return [verdict.reason ?? "", ...verdict.tests.map((t) => t.message ?? "")].join("\n");
}

describe.concurrent("learner code that misbehaves", () => {
  test("passes when it is right", async () => {
    expect((await checkVariant(solution)).status).toBe("passed");
  });

  test("does not compile: a failed check that quotes the compiler", async () => {
    const verdict = await checkVariant(`${solution}\nexport const broken: number = "text";\n`);
    expect(verdict.status).toBe("failed");
    expect(verdict.reason).toMatch(/does not compile[\s\S]*TS2322/);
  });

  test("has a syntax error: a failed check that names the line", async () => {
    const verdict = await checkVariant(`${solution}\nexport const broken = (;\n`);
    expect(verdict.status).toBe("failed");
    expect(verdict.reason).toMatch(/does not compile[\s\S]*:\d+:\d+/);
  });

  test("throws while loading: a failed check saying the file could not be loaded", async () => {
    const verdict = await checkVariant(`${solution}\nthrow new Error("boom at import");\n`);
    expect(verdict.status).toBe("failed");
    expect(text(verdict)).toContain("could not be loaded: boom at import");
  });

  test("connects to Redis at the top of the file: told to connect inside its functions", async () => {
    const verdict = await checkVariant(
      `${solution}\nimport { createClient as atLoad } from "redis";\nawait atLoad({ url: "redis://127.0.0.1:1" }).connect();\n`,
    );
    expect(verdict.status).toBe("failed");
    expect(text(verdict)).toContain("ECONNREFUSED");
    expect(text(verdict)).toContain("open connections inside your functions");
  });

  test("calls process.exit while loading: a failed check that says so", async () => {
    const verdict = await checkVariant(`${solution}\nprocess.exit(3);\n`);
    expect(verdict.status).toBe("failed");
    expect(text(verdict)).toMatch(/process\.exit/);
  });

  test("calls process.exit inside a function: that test fails and names it", async () => {
    const verdict = await checkVariant(
      solution.replace("const base =", "process.exit(4);\n  const base ="),
    );
    expect(verdict.status).toBe("failed");
    expect(text(verdict)).toContain("reconnectDelay() called process.exit(4)");
  });

  test("never returns: a failed check naming what it was waiting for", async () => {
    const verdict = await checkVariant(
      solution.replace("await client.connect();", "await new Promise(() => {});"),
    );
    expect(verdict.status).toBe("failed");
    expect(text(verdict)).toContain("Still waiting for connect() to finish");
  });

  test("spins the CPU forever: the stuck test is named within seconds, with the function", async () => {
    const started = Date.now();
    const verdict = await checkVariant(spinsInDelaysTest, 60_000);
    expect(verdict.status).toBe("failed");
    const stuck = verdict.tests.find((t) => t.status === "failed");
    expect(stuck?.name).toBe("reconnect delays grow and stay within 5 seconds");
    expect(stuck?.message).toMatch(
      /kept the check's process busy for 3 s .*the last of your functions the check called: reconnectDelay/,
    );
    // Named by the watcher, not by the run's limit of 60 s.
    expect(Date.now() - started).toBeLessThan(45_000);
  });

  test("starts a detached process: it is ended with the check, which still passes", async () => {
    const verdict = await checkVariant(
      `import { spawn } from "node:child_process";\n${solution}\nspawn("sleep", ["1000"], { detached: true, stdio: "ignore" }).unref();\n`,
    );
    expect(verdict.status).toBe("passed");
  });

  test("what the code sent to Redis is recorded on the private server", async () => {
    const verdict = await checkVariant(solution.replace("await client.close();", ""));
    expect(verdict.status).toBe("failed");
    const sent = (verdict.sent ?? []).map((c) => c.args.join(" "));
    expect(sent).toContain("PING");
    expect(sent.some((c) => c.startsWith("HELLO 3 SETNAME wb:learner:"))).toBe(true);
    expect(sent.some((c) => c.includes("wb:check"))).toBe(false);
  });
});
