/** The plain commands as a script or CI sees them: exit codes, JSON, and messages. */
import { afterAll, expect, test } from "vitest";
import { cli as run } from "./support/cli.ts";
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
