/**
 * The runner without a terminal: `npm start` in CI or a pipe prints the state and the plain
 * commands and exits 0 on its own; `watch --json` re-checks on every save; the data commands
 * answer in JSON.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { afterAll, expect, test } from "vitest";
import { loadCatalog } from "../../src/catalog.ts";
import type { Verdict } from "../../src/check/verdict.ts";
import { ROOT } from "../../src/paths.ts";
import { loadProgress } from "../../src/progress.ts";
import { learnerFile } from "../../src/workspace.ts";
import { cli, cliEnv, exitOf, TSX } from "../support/cli.ts";
import { processesWithEnv, scratchDir } from "../support/sandbox.ts";
import { waitFor } from "../support/wait.ts";

const lessons = loadCatalog();
const lesson = lessons[0];
if (!lesson) throw new Error("No lessons in the catalog.");
const scratches: (() => void)[] = [];
afterAll(() => {
  for (const remove of scratches) remove();
});

function workspace() {
  const scratch = scratchDir("plain");
  scratches.push(scratch.remove);
  return { WORKBOOK_WORKSPACE: scratch.dir };
}

test("npm start without a terminal lists lessons, progress and commands, then exits 0", async () => {
  const env = workspace();
  // stdin is a pipe nobody writes to: a prompt would wait forever, so this proves there is none.
  const child = spawn("npm", ["start"], { cwd: ROOT, env: cliEnv(env), stdio: "pipe" });
  let out = "";
  child.stdout.on("data", (chunk) => {
    out += chunk;
  });
  const code = await exitOf(child);
  expect(code).toBe(0);
  for (const l of lessons) expect(out).toContain(`${l.number}  ${l.title}`);
  expect(out).toMatch(/0 of \d+ lessons? done/);
  for (const command of ["check", "watch", "hint", "reset", "solution", "list", "doctor"]) {
    expect(out).toContain(`npm run ${command}`);
  }
  expect(out).toContain(`Next: npm run check -- ${lesson.number}`);
});

test("watch --json checks now and again after each save, records the pass, stops on Ctrl+C", {
  timeout: 240_000,
}, async () => {
  const env = workspace();
  const file = learnerFile(lesson, env);
  const child: ChildProcess = spawn(
    process.execPath,
    [...TSX, "src/cli.ts", "watch", lesson.number, "--json"],
    { cwd: ROOT, env: cliEnv(env), stdio: ["ignore", "pipe", "pipe"] },
  );
  const verdicts: Verdict[] = [];
  let buffered = "";
  child.stdout?.on("data", (chunk) => {
    buffered += chunk;
    const lines = buffered.split("\n");
    buffered = lines.pop() ?? "";
    for (const line of lines) if (line.startsWith("{")) verdicts.push(JSON.parse(line));
  });
  const exited = exitOf(child);
  const waitForVerdicts = async (count: number) => {
    await waitFor(() => verdicts.length >= count, 90_000);
    expect(verdicts.length, "no verdict arrived").toBeGreaterThanOrEqual(count);
  };

  await waitForVerdicts(1);
  expect(verdicts[0]?.status).toBe("failed");
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, readFileSync(lesson.solution, "utf8"));
  await waitForVerdicts(2);
  expect(verdicts[1]?.status).toBe("passed");
  expect(loadProgress(env).done[lesson.id]).toBeTruthy();

  child.kill("SIGINT");
  expect(await exited).toBe(130);
  const marker = `WORKBOOK_WORKSPACE=${env.WORKBOOK_WORKSPACE}`;
  await waitFor(() => processesWithEnv(marker).length === 0, 10_000);
  expect(processesWithEnv(marker)).toEqual([]);
});

test("hint, reset, solution and list answer in JSON and keep progress", () => {
  const env = workspace();
  const first = cli(["hint", lesson.number, "--json"], env);
  expect(first.code).toBe(0);
  expect(JSON.parse(first.out)).toMatchObject({ lesson: lesson.id, level: 1 });
  expect(loadProgress(env).hints[lesson.id]).toBe(1);

  const locked = cli(["solution", lesson.number], env);
  expect(locked.code).toBe(1);
  expect(locked.out).toContain("unlocks when your check passes");

  const file = learnerFile(lesson, env);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, "// my attempt\n");
  const reset = cli(["reset", lesson.number, "--json"], env);
  expect(reset.code).toBe(0);
  expect(JSON.parse(reset.out)).toMatchObject({ file, backup: `${file}.bak` });
  expect(readFileSync(file, "utf8")).toBe(readFileSync(lesson.starter, "utf8"));
  expect(readFileSync(`${file}.bak`, "utf8")).toBe("// my attempt\n");

  const forced = cli(["solution", lesson.number, "--force", "--json"], env);
  expect(forced.code).toBe(0);
  const shown = JSON.parse(forced.out);
  expect(shown.solution).toBe(readFileSync(lesson.solution, "utf8"));
  expect(shown.diff).toContain("+++ the solution");
  expect(loadProgress(env).peeked?.[lesson.id]).toBeTruthy();

  const listed = cli(["list", "--json"], env);
  expect(JSON.parse(listed.out)[0]).toMatchObject({
    number: lesson.number,
    state: "current",
    done: false,
    hintsSeen: 1,
  });
});

test("doctor names an unreachable REDIS_URL with its fix, the password hidden", () => {
  const { code, out } = cli(["doctor", "--json"], {
    ...workspace(),
    REDIS_URL: "redis://worker:hunter2@127.0.0.1:1",
  });
  expect(code).toBe(1);
  expect(out).not.toContain("hunter2");
  const report = JSON.parse(out) as {
    ok: boolean;
    findings: { name: string; status: string; detail: string; fix?: string }[];
  };
  expect(report.ok).toBe(false);
  const url = report.findings.find((f) => f.name === "REDIS_URL");
  expect(url).toMatchObject({ status: "fail" });
  expect(url?.detail).toContain("redis://worker:***@127.0.0.1:1");
  expect(url?.fix).toMatch(/port/);
  expect(report.findings.find((f) => f.name === "Node.js")).toMatchObject({ status: "ok" });
});
