/**
 * Progress is the learner's record: updates from several commands at once all survive, a
 * damaged file is kept, odd values cost only themselves, and resets keep every backup.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, expect, test, vi } from "vitest";
import { loadCatalog } from "../src/catalog.ts";
import { ROOT } from "../src/paths.ts";
import { loadProgress, markHintSeen, markPassed, progressFile } from "../src/progress.ts";
import { resetLearnerCopy } from "../src/workspace.ts";
import { cli, exitOf, scrubbedEnv, TSX } from "./support/cli.ts";
import { scratchDir } from "./support/sandbox.ts";

const scratch = scratchDir("progress");
afterAll(() => scratch.remove());

function workspace(name: string): NodeJS.ProcessEnv {
  return { WORKBOOK_WORKSPACE: join(scratch.dir, name) };
}

test("12 processes marking 30 lessons each at once: all 360 updates are kept", async () => {
  const env = workspace("stress");
  const script = join(scratch.dir, "mark.ts");
  writeFileSync(
    script,
    `import { markPassed } from ${JSON.stringify(join(ROOT, "src", "progress.ts"))};
for (let i = 0; i < 30; i++) markPassed(\`p\${process.argv[2]}-\${i}\`);
`,
  );
  const children = Array.from({ length: 12 }, (_, n) =>
    spawn(process.execPath, [...TSX, script, String(n)], {
      cwd: ROOT,
      env: scrubbedEnv(env as Record<string, string>),
      stdio: ["ignore", "ignore", "pipe"],
    }),
  );
  const errors: string[] = [];
  for (const child of children) child.stderr?.on("data", (chunk) => errors.push(String(chunk)));
  const codes = await Promise.all(children.map((child) => exitOf(child, 60_000)));
  expect(errors.join("")).toBe("");
  expect(codes).toEqual(Array(12).fill(0));
  expect(Object.keys(loadProgress(env).done)).toHaveLength(360);
  // No temporary file or lock is left behind.
  expect(readdirSync(env.WORKBOOK_WORKSPACE as string)).toEqual([".progress.json"]);
}, 120_000);

test("a damaged file is kept as .progress.json.damaged, said once, and progress starts afresh", () => {
  const env = workspace("damaged");
  markPassed("01-connect", env);
  const file = progressFile(env);
  writeFileSync(file, '{"done": {"01-connect": "2026-01-01T00:00:00Z"'); // cut off mid-write
  const said = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
  try {
    expect(loadProgress(env)).toEqual({ done: {}, hints: {} });
    expect(loadProgress(env)).toEqual({ done: {}, hints: {} });
    markHintSeen("02-pubsub-broadcast", 1, env);
    expect(said.mock.calls.map(([text]) => String(text))).toEqual([
      expect.stringContaining(".progress.json.damaged"),
    ]);
  } finally {
    said.mockRestore();
  }
  expect(readFileSync(`${file}.damaged`, "utf8")).toContain('"01-connect"');
  expect(loadProgress(env).hints).toEqual({ "02-pubsub-broadcast": 1 });
});

test("odd values are dropped field by field, and npm run hint still works", () => {
  const env = workspace("odd");
  const file = progressFile(env);
  markPassed("01-connect", env);
  writeFileSync(
    file,
    JSON.stringify({
      done: { "01-connect": "2026-01-01T00:00:00Z", "03-pubsub-patterns": 7 },
      hints: { "02-pubsub-broadcast": "x", "04-streams-queue": 2, "05-x": -1 },
      current: 12,
      peeked: "yes",
      quiz: {
        "02-pubsub-broadcast": { score: "9" },
        "01-connect": { score: 3, total: 4, at: "t" },
      },
    }),
  );
  expect(loadProgress(env)).toEqual({
    done: { "01-connect": "2026-01-01T00:00:00Z" },
    hints: { "04-streams-queue": 2 },
    current: undefined,
    peeked: {},
    quiz: { "01-connect": { score: 3, total: 4, at: "t" } },
  });
  const { code, out } = cli(["hint", "02"], env as Record<string, string>);
  expect(code).toBe(0);
  expect(out).toContain("Hint 1 of");
  expect(existsSync(`${file}.damaged`)).toBe(false);
});

test("a second reset keeps the first backup: .bak is the latest, .bak.1 the one before", () => {
  const env = workspace("reset");
  const lesson = loadCatalog()[0];
  if (!lesson) throw new Error("no lessons");
  const first = resetLearnerCopy(lesson, env);
  writeFileSync(first.file, "// attempt one\n");
  expect(resetLearnerCopy(lesson, env).backup).toBe(`${first.file}.bak`);
  writeFileSync(first.file, "// attempt two\n");
  const second = resetLearnerCopy(lesson, env);
  expect(second).toMatchObject({ backup: `${first.file}.bak`, older: `${first.file}.bak.1` });
  writeFileSync(first.file, "// attempt three\n");
  expect(resetLearnerCopy(lesson, env).older).toBe(`${first.file}.bak.2`);
  expect(readFileSync(`${first.file}.bak.1`, "utf8")).toBe("// attempt one\n");
  expect(readFileSync(`${first.file}.bak.2`, "utf8")).toBe("// attempt two\n");
  expect(readFileSync(`${first.file}.bak`, "utf8")).toBe("// attempt three\n");
});

test("a lock left by a command that crashed is taken over, not waited on forever", () => {
  const env = workspace("stale");
  const dead = spawnSync(process.execPath, ["-e", ""]).pid;
  mkdirSync(env.WORKBOOK_WORKSPACE as string, { recursive: true });
  writeFileSync(`${progressFile(env)}.lock`, `${dead}:0123456789ab`);
  const started = Date.now();
  markPassed("01-connect", env);
  expect(Date.now() - started).toBeLessThan(2_000);
  expect(Object.keys(loadProgress(env).done)).toEqual(["01-connect"]);
  expect(readdirSync(env.WORKBOOK_WORKSPACE as string)).toEqual([".progress.json"]);
});
