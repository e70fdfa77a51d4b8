/**
 * Ctrl+C during `npm run check` stops everything the workbook started: the private
 * redis-server, the check process and the learner's code inside it.
 */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, expect, test } from "vitest";
import { loadLesson } from "../src/catalog.ts";
import { ROOT } from "../src/paths.ts";
import { exitOf, TSX } from "./support/cli.ts";
import { processesWithEnv, scratchDir } from "./support/sandbox.ts";
import { waitFor } from "./support/wait.ts";

const scratch = scratchDir("interrupt");
afterAll(() => scratch.remove());

test("Ctrl+C during a check leaves no process behind and exits 130", async () => {
  const lesson = loadLesson("01-connect");
  const file = join(scratch.dir, lesson.id, lesson.exercise);
  mkdirSync(join(scratch.dir, lesson.id), { recursive: true });
  // A learner file that never returns, so the check is surely still running when interrupted.
  writeFileSync(
    file,
    readFileSync(lesson.solution, "utf8").replace(
      "await client.connect();",
      "await new Promise(() => {});",
    ),
  );
  const mark = `WORKBOOK_TEST_MARK=${randomUUID()}`;
  const [name = "", value = ""] = mark.split("=");
  const cli = spawn(process.execPath, [...TSX, "src/cli.ts", "check", "01"], {
    cwd: ROOT,
    env: { ...process.env, WORKBOOK_WORKSPACE: scratch.dir, REDIS_URL: "", [name]: value },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  cli.stdout.on("data", (chunk) => {
    output += chunk;
  });
  const exited = exitOf(cli);

  // Wait until the learner's code is running inside the check process.
  const running = await waitFor(
    () => processesWithEnv(`WORKBOOK_TARGET=${file}`).length > 0,
    30_000,
  );
  expect(running, "the check process never started").toBe(true);
  expect(processesWithEnv(mark).length).toBeGreaterThanOrEqual(3);

  cli.kill("SIGINT");
  expect(await exited).toBe(130);
  expect(output).toContain("Stopped");
  const gone = await waitFor(() => processesWithEnv(mark).length === 0, 5_000);
  expect(gone, `still running: ${processesWithEnv(mark).join(", ")}`).toBe(true);
});
