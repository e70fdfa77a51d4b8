/** The plain commands as a script or CI sees them: exit codes, JSON, and messages. */
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { afterAll, expect, test } from "vitest";
import { ROOT } from "../src/paths.ts";
import { cliEnv, cli as run, TSX } from "./support/cli.ts";
import { scratchDir } from "./support/sandbox.ts";

const scratch = scratchDir("cli");
afterAll(() => scratch.remove());

const cli = (args: string[], env: Record<string, string> = {}) =>
  run(args, { WORKBOOK_WORKSPACE: scratch.dir, ...env });

test("check exits 0 on the solution and prints the verdict as JSON", () => {
  const { code, out } = cli(["check", "01", "--solution", "--json"]);
  expect(code).toBe(0);
  const verdict = JSON.parse(out.trim().split("\n").pop() ?? "{}");
  expect(verdict).toMatchObject({ lesson: "01-connect", target: "solution", status: "passed" });
  // Each test says how long it took: where a slow check spends its time.
  const tests = verdict.tests as { durationMs?: number }[];
  expect(tests.length).toBeGreaterThan(0);
  for (const t of tests) expect(t.durationMs).toEqual(expect.any(Number));
});

test("check exits 1 on the learner's untouched copy, made from the starter on first use", () => {
  const { code, out } = cli(["check", "connect"]);
  expect(code).toBe(1);
  expect(out).toContain("Made your copy of the exercise");
  expect(out).toContain("is not written yet");
  expect(out).toMatch(/Next: edit .*connect\.ts/);
});

test("an unknown lesson is a usage error that lists the lessons", () => {
  const { code, err } = cli(["check", "99"]);
  expect(code).toBe(2);
  expect(err).toContain('There is no lesson "99"');
  expect(err).toContain("01 connect");
});

test("without redis-server and REDIS_URL: one clear message with the fixes, no stack trace", () => {
  // A PATH with node but without redis-server.
  const { code, err } = cli(["check", "01", "--solution"], { PATH: "/nonexistent" });
  expect(code).toBe(2);
  for (const fix of [
    "apt-get install -y redis-server",
    "brew install redis",
    "docker run",
    "REDIS_URL",
  ]) {
    expect(err).toContain(fix);
  }
  expect(err).not.toMatch(/\n\s+at /);
});

test("an unreachable REDIS_URL names the problem with the password hidden", () => {
  const { code, err } = cli(["check", "01", "--solution"], {
    REDIS_URL: "redis://user:hunter2@127.0.0.1:1",
  });
  expect(code).toBe(2);
  expect(err).toContain("redis://user:***@127.0.0.1:1");
  expect(err).not.toContain("hunter2");
});

test("a mistyped option is refused with the nearest one, exit 2, and changes nothing", () => {
  const fresh = scratchDir("cli-typo");
  try {
    const { code, out, err } = run(["check", "08", "--soluton", "--json"], {
      WORKBOOK_WORKSPACE: fresh.dir,
    });
    expect(code).toBe(2);
    expect(JSON.parse(out)).toEqual({
      error: "Unknown option --soluton: did you mean --solution?",
      usage: true,
    });
    expect(err.trim().split("\n")).toEqual([
      "Unknown option --soluton: did you mean --solution?",
      "Run `npm run check -- --help` for its usage.",
    ]);
    // No copy of lesson 08 was made, and no progress (the current lesson) was written.
    expect(readdirSync(fresh.dir)).toEqual([]);
  } finally {
    fresh.remove();
  }
});

test("an empty lesson name is refused in one line with where the usage is", () => {
  const { code, err } = cli(["check", ""]);
  expect(code).toBe(2);
  expect(err.trim().split("\n")).toEqual([
    "The lesson is empty: give a number (2 or 02) or a name.",
    "Run `npm run check -- --help` for its usage.",
  ]);
});

test("--help prints the usage of that command only", () => {
  const { code, out } = cli(["solution", "02", "--help"]);
  expect(code).toBe(0);
  expect(out).toMatch(/^Usage: npm run solution -- \[lesson\]/);
  expect(out).toContain("--force, --full, --json");
  expect(out).not.toContain("npm run check");
});

test("solution --json before the check passes answers in JSON", () => {
  const fresh = scratchDir("cli-locked");
  try {
    const { code, out } = run(["solution", "02", "--json"], { WORKBOOK_WORKSPACE: fresh.dir });
    expect(code).toBe(1);
    expect(JSON.parse(out)).toMatchObject({ lesson: "02-pubsub-broadcast", locked: true });
  } finally {
    fresh.remove();
  }
});

test("a reader that closes the pipe early ends the command quietly", () => {
  const fresh = scratchDir("cli-pipe");
  try {
    // `true` exits without reading: every write after it meets a closed pipe (EPIPE).
    const result = spawnSync(
      "bash",
      [
        "-c",
        `set -o pipefail; "${process.execPath}" ${TSX.join(" ")} src/cli.ts solution 03 --force --full | true`,
      ],
      { cwd: ROOT, encoding: "utf8", env: cliEnv({ WORKBOOK_WORKSPACE: fresh.dir }) },
    );
    expect(result.stderr).toBe("");
    // 128 + SIGPIPE, as a program killed by the broken pipe would end, without the trace.
    expect(result.status).toBe(141);
  } finally {
    fresh.remove();
  }
});
