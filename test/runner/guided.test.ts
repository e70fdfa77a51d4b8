/**
 * The guided runner, driven through a real terminal (tmux): what a learner sees and does, and
 * that leaving (quit or Ctrl+C) leaves nothing running. Each test has its own workspace and
 * uses whichever lessons exist, starting with the first.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import { loadCatalog } from "../../src/catalog.ts";
import { loadProgress } from "../../src/progress.ts";
import { visibleLength } from "../../src/ui/term.ts";
import { learnerFile } from "../../src/workspace.ts";
import { alive, commandOf, family, processesWithEnv, scratchDir } from "../support/sandbox.ts";
import { waitFor } from "../support/wait.ts";
import { hasTmux, Terminal } from "./tmux.ts";

const lesson = loadCatalog()[0];
if (!lesson) throw new Error("No lessons in the catalog.");
const starter = readFileSync(lesson.starter, "utf8");
const solution = readFileSync(lesson.solution, "utf8");

// CI installs tmux; a developer without it gets a skip with the reason rather than a failure.
const skip = !hasTmux() && !process.env.CI;

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

function workspace() {
  const scratch = scratchDir("runner");
  cleanups.push(scratch.remove);
  const env = { WORKBOOK_WORKSPACE: scratch.dir };
  return {
    env,
    marker: `WORKBOOK_WORKSPACE=${scratch.dir}`,
    file: learnerFile(lesson as NonNullable<typeof lesson>, env),
    progress: () => loadProgress(env),
  };
}

function terminal(command: string, env: Record<string, string>, width = 80): Terminal {
  const term = Terminal.open(command, env, { width, height: 30 });
  cleanups.push(() => term.close());
  return term;
}

/** Every line of the screen fits 80 columns, even in a wider terminal. */
function expectFits(screen: string): void {
  const widest = Math.max(...screen.split("\n").map((line) => visibleLength(line.trimEnd())));
  expect(widest, screen).toBeLessThanOrEqual(80);
}

// Generous: on a loaded 2-core machine a check can take many seconds; nothing here asserts speed.
describe.skipIf(skip)("the guided runner in a terminal", { timeout: 240_000 }, () => {
  test("first lesson: failing check, a hint, watch passes the fixed file, progress saved, quit", async () => {
    const ws = workspace();
    const term = terminal("npm start", ws.env, 100);

    const home = await term.waitFor("Choose a lesson");
    expect(home).toMatch(/Redis \d+\.\d+\.\d+ · redis:\/\/127\.0\.0\.1:\d+ \(private/);
    expect(home).toMatch(/0 of \d+ lessons? done/);
    expect(home).toContain(`${lesson.number}  ${lesson.title}`);
    expectFits(home);

    // The first lesson is the suggested one: Enter opens it, with its text first.
    term.press("Enter");
    const text = await term.waitFor("q close");
    expect(text).toContain(lesson.title);
    expectFits(text);
    term.press("q");

    const failing = await term.waitFor("not yet");
    expect(failing).toContain(`Your file: `);
    expect(failing).toContain("r run again");
    expectFits(failing);
    expect(readFileSync(ws.file, "utf8")).toBe(starter);

    term.press("h");
    await term.waitFor(`Hint 1 of ${lesson.hints.length}`);
    expect(ws.progress().hints[lesson.id]).toBe(1);

    // The learner saves a working file: watch mode checks it again without a key press.
    writeFileSync(ws.file, solution);
    const passing = await term.waitFor(/all \d+ checks passed/);
    expect(passing).toContain("You can now:");
    expectFits(passing);
    expect(await waitFor(() => Boolean(ws.progress().done[lesson.id]), 10_000)).toBe(true);

    term.press("q");
    const list = await term.waitFor("Choose a lesson");
    expect(list).toContain(`✓ ${lesson.number}  ${lesson.title}`);
    expect(list).toMatch(/1 of \d+ lessons? done/);
    // Typing selects by name: "q" is Quit.
    term.press("q", "Enter");
    expect(await term.exitCode()).toBe(0);
    expect(await waitFor(() => processesWithEnv(ws.marker).length === 0, 10_000)).toBe(true);
  });

  test("reset asks first, restores the starter and keeps a .bak; e opens $EDITOR; NO_COLOR", async () => {
    const ws = workspace();
    const mine = `${starter}\n// my attempt\n`;
    mkdirSync(dirname(ws.file), { recursive: true });
    writeFileSync(ws.file, mine);
    // An "editor" that writes the solution into the file it is given, then returns.
    const editor = `cp ${JSON.stringify(lesson.solution)}`;
    const term = terminal(`npm run watch -- ${lesson.number}`, {
      ...ws.env,
      NO_COLOR: "1",
      EDITOR: editor,
    });

    await term.waitFor("not yet");
    // No colour codes anywhere on screen, only plain text.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: colour codes start with ESC.
    expect(term.screen(true)).not.toMatch(/\x1b\[(?:3\d|9\d|4\d)(?:;\d+)*m/);

    term.press("x");
    await term.waitFor("(y/N)");
    term.press("n");
    expect(await waitFor(() => !term.screen().includes("(y/N)"), 10_000)).toBe(true);
    expect(readFileSync(ws.file, "utf8")).toBe(mine);

    term.press("x");
    await term.waitFor("(y/N)");
    term.press("y");
    await term.waitFor("Restored the starter");
    expect(readFileSync(ws.file, "utf8")).toBe(starter);
    expect(readFileSync(`${ws.file}.bak`, "utf8")).toBe(mine);
    // The message outlives the save event of the reset's own write and the check that follows.
    expect(await term.waitFor("not yet")).toContain("Restored the starter");

    term.press("e");
    await term.waitFor(/all \d+ checks passed/);
    expect(readFileSync(ws.file, "utf8")).toBe(solution);

    // `npm run watch` opened just this lesson: leaving it ends the command.
    term.press("q");
    expect(await term.exitCode()).toBe(0);
  });

  const withQuiz = loadCatalog().find((l) => l.quiz && l.quiz.length > 0);
  test.skipIf(!withQuiz)(
    "a lesson's knowledge check: answer each question, the score is kept",
    async () => {
      if (!withQuiz?.quiz) return;
      const ws = workspace();
      const term = terminal(`npm run watch -- ${withQuiz.number}`, ws.env);
      await term.waitFor("q close");
      term.press("q");
      await term.waitFor("k knowledge check");
      term.press("k");
      for (let i = 1; i <= withQuiz.quiz.length; i++) {
        await term.waitFor(`${i}. `);
        term.press("Enter");
      }
      await term.waitFor(`of ${withQuiz.quiz.length}`);
      const score = ws.progress().quiz?.[withQuiz.id];
      expect(score?.total).toBe(withQuiz.quiz.length);
      term.press("Space");
      await term.waitFor("r run again");
      term.press("q");
      expect(await term.exitCode()).toBe(0);
    },
  );

  test("Ctrl+C while a check runs cancels just the check; a second Ctrl+C quits: nothing is left", async () => {
    const ws = workspace();
    mkdirSync(dirname(ws.file), { recursive: true });
    // Learner code that never finishes loading: the check is surely running when interrupted.
    writeFileSync(ws.file, `${starter}\nawait new Promise(() => {});\n`);
    const term = terminal(`npm run watch -- ${lesson.number}`, ws.env);

    await term.waitFor("Checking your code");
    const check = `WORKBOOK_TARGET=${ws.file}`;
    const running = await waitFor(() => processesWithEnv(check).length > 0, 60_000);
    expect(running, "the check process never started").toBe(true);
    // redis-server rewrites its own environment (its process title), so find it as a child.
    const started = family(processesWithEnv(ws.marker));
    expect(started.some((pid) => commandOf(pid).startsWith("redis-server"))).toBe(true);

    term.press("C-c");
    const cancelled = await term.waitFor("Check cancelled: r runs it again; Ctrl+C again quits.");
    expect(cancelled).toContain("r run again");
    const checkGone = await waitFor(() => processesWithEnv(check).length === 0, 10_000);
    expect(checkGone, `the check still runs: ${processesWithEnv(check).map(commandOf)}`).toBe(true);
    expect(started.filter((pid) => commandOf(pid).startsWith("redis-server")).every(alive)).toBe(
      true,
    );

    term.press("C-c");
    expect(await term.exitCode()).toBe(130);
    const screen = term.screen();
    expect(screen).toContain("Stopped.");
    expect(screen).not.toMatch(/\n\s+at /);
    const left = () => [...processesWithEnv(ws.marker), ...started.filter(alive)];
    const gone = await waitFor(() => left().length === 0, 10_000);
    expect(gone, `still running: ${left().map(commandOf).join(", ")}`).toBe(true);
  });
});
