/**
 * However the workbook dies mid-check (SIGKILL of it or of its whole process group, npm killed
 * alone), nothing it started keeps running and no temporary directory of it stays behind.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, expect, test } from "vitest";
import { loadLesson } from "../src/catalog.ts";
import { launch, TSX } from "./support/cli.ts";
import {
  commandOf,
  killMarked,
  marker,
  processesWithEnv,
  scratchDir,
  workbookLeftovers,
} from "./support/sandbox.ts";
import { waitFor } from "./support/wait.ts";

const lesson = loadLesson("01-connect");
const solution = readFileSync(lesson.solution, "utf8");
/** A lesson whose check runs in several processes that share a directory ("shards"). */
const sharded = loadLesson("07-tail-xread");
const scratch = scratchDir("containment");
const marks: string[] = [];
afterEach(() => {
  for (const mark of marks.splice(0)) killMarked(mark);
});
afterAll(() => scratch.remove());

let counter = 0;
/** A workspace holding `source` as the lesson's exercise, a temp dir, and a marked environment. */
function sandbox(source: string, { id, exercise } = lesson) {
  const base = join(scratch.dir, String(counter++));
  const workspace = join(base, "workspace");
  const tmp = join(base, "tmp");
  const file = join(workspace, id, exercise);
  mkdirSync(join(workspace, id), { recursive: true });
  mkdirSync(tmp);
  writeFileSync(file, source);
  const { mark, env } = marker();
  marks.push(mark);
  return { file, tmp, mark, env: { ...env, WORKBOOK_WORKSPACE: workspace, TMPDIR: tmp } };
}

/** The check's vitest and its test worker, both running the learner's file. */
function checkProcesses(file: string): number[] {
  return processesWithEnv(`WORKBOOK_TARGET=${file}\0`);
}

function leftovers(mark: string): string[] {
  return processesWithEnv(mark).map((pid) => `${pid} ${commandOf(pid)}`);
}

/** Soon, no process of the sandbox runs and its temp dir holds nothing of the workbook's. */
async function expectAllGone(box: { mark: string; tmp: string }, ms = 10_000): Promise<void> {
  const gone = await waitFor(() => processesWithEnv(box.mark).length === 0, ms);
  expect(gone, `still running:\n${leftovers(box.mark).join("\n")}`).toBe(true);
  const clean = await waitFor(() => workbookLeftovers(box.tmp).length === 0, 5_000);
  expect(clean, `left in the temp dir: ${workbookLeftovers(box.tmp)}`).toBe(true);
}

test("SIGKILL of the workbook's process group while learner code spins: nothing is left", async () => {
  const box = sandbox(solution.replace("const base =", "for (;;) {}\n  const base ="));
  const cli = launch(process.execPath, [...TSX, "src/cli.ts", "check", "01"], box.env);
  // The test worker has started too: the learner's loop is what runs.
  const running = await waitFor(() => checkProcesses(box.file).length >= 2, 60_000);
  expect(running, "the check's test worker never started").toBe(true);

  process.kill(-(cli.pid ?? 0), "SIGKILL");

  await expectAllGone(box);
});

test("SIGKILL of the workbook's process group during a check run in several processes: nothing is left", async () => {
  // Each process has its own scratch and the processes share one more: all must go.
  const shards = sharded.shards ?? 1;
  expect(shards, "07 no longer runs in several processes: pick a lesson that does").toBeGreaterThan(
    1,
  );
  const spin = "  for (;;) {}\n  const { stream, checkpoint";
  const source = readFileSync(sharded.solution, "utf8").replace(
    "  const { stream, checkpoint",
    spin,
  );
  expect(source).toContain("for (;;)");
  const box = sandbox(source, sharded);
  const cli = launch(process.execPath, [...TSX, "src/cli.ts", "check", "07"], box.env);
  // Every process's vitest and its test worker are running the learner's file.
  const running = await waitFor(() => checkProcesses(box.file).length >= 2 * shards, 60_000);
  expect(running, "the check's processes never all started").toBe(true);

  process.kill(-(cli.pid ?? 0), "SIGKILL");

  await expectAllGone(box);
});

test("killing only npm stops the CLI, its Redis and the check", async () => {
  const box = sandbox(solution.replace("await client.connect();", "await new Promise(() => {});"));
  const npm = launch("npm", ["run", "--silent", "check", "--", "01"], box.env);
  const running = await waitFor(() => checkProcesses(box.file).length >= 1, 60_000);
  expect(running, "the check process never started").toBe(true);

  process.kill(npm.pid ?? 0, "SIGKILL");

  await expectAllGone(box);
});

test("killing only npm stops the pipeline, its workers and its Redis", async () => {
  const box = sandbox(solution);
  const npm = launch(
    "npm",
    ["run", "--silent", "pipeline", "--", "--docs", "1000", "--workers", "1", "--latency", "1000"],
    box.env,
  );
  const workers = () =>
    processesWithEnv("PIPELINE_WORKER=").filter((pid) => processesWithEnv(box.mark).includes(pid));
  expect(await waitFor(() => workers().length > 0, 60_000), "no worker started").toBe(true);

  process.kill(npm.pid ?? 0, "SIGKILL");

  await expectAllGone(box, 15_000);
});

test("SIGKILL of the workbook's process group during the type check: the compiler stops too", async () => {
  const box = sandbox(solution);
  const cli = launch(process.execPath, [...TSX, "src/cli.ts", "check", "01"], box.env);
  const compilers = () =>
    processesWithEnv(box.mark).filter((pid) => / -p \S+tsconfig\./.test(commandOf(pid)));
  expect(await waitFor(() => compilers().length > 0, 60_000), "tsc never started").toBe(true);
  const config = / -p (\S+)/.exec(commandOf(compilers()[0] ?? 0))?.[1] ?? "";

  process.kill(-(cli.pid ?? 0), "SIGKILL");

  const gone = await waitFor(() => processesWithEnv(box.mark).length === 0, 10_000);
  expect(gone, `still running:\n${leftovers(box.mark).join("\n")}`).toBe(true);
  expect(await waitFor(() => !existsSync(config), 5_000), `${config} was left`).toBe(true);
});

test("a SIGKILL after the spawn but before the guard learns its group still ends it and removes its files", async () => {
  // The window the type check and the check's vitest each had between spawning their group and
  // arming its guard, held open here on purpose: the guard is armed, the process is spawned
  // with the run id, and the group is never named.
  const box = sandbox(solution);
  const file = join(box.tmp, "config.json");
  writeFileSync(file, "{}");
  const script = join(box.tmp, "spawner.ts");
  writeFileSync(
    script,
    [
      'import { spawn } from "node:child_process";',
      `import { guardRun } from ${JSON.stringify(join(process.cwd(), "src/check/watchdog.ts"))};`,
      `guardRun("test-window", [${JSON.stringify(file)}]);`,
      'const env = { ...process.env, WORKBOOK_RUN_ID: "test-window" };',
      'spawn("sleep", ["300"], { detached: true, stdio: "ignore", env }).unref();',
      "setInterval(() => {}, 1_000);",
    ].join("\n"),
  );
  const parent = launch(process.execPath, [...TSX, script], box.env);
  const sleeper = () => processesWithEnv(box.mark).filter((pid) => commandOf(pid) === "sleep 300");
  expect(await waitFor(() => sleeper().length > 0, 30_000), "sleep never started").toBe(true);

  process.kill(parent.pid ?? 0, "SIGKILL");

  const gone = await waitFor(() => processesWithEnv(box.mark).length === 0, 10_000);
  expect(gone, `still running:\n${leftovers(box.mark).join("\n")}`).toBe(true);
  expect(await waitFor(() => !existsSync(file), 5_000), `${file} was left`).toBe(true);
});
