/**
 * Watch mode keeps the next check's process waiting and the type checker up between saves. Each
 * run must still be a run of its own: a fresh process and module, its own key prefix, nothing of
 * the run before it (keys, connections, processes), and a hang or a leak in the learner's code
 * reported as before. Lesson 01's check on learner files of this file's making.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { createClient } from "redis";
import { afterAll, beforeAll, expect, test } from "vitest";
import { applyPatch } from "../src/check/patch.ts";
import { runCheck } from "../src/check/run.ts";
import { typecheck } from "../src/check/typecheck.ts";
import { WarmChecks } from "../src/check/warm.ts";
import { ROOT } from "../src/paths.ts";
import { openRedisTarget, type RedisTarget } from "../src/redis/target.ts";
import { readSources } from "../src/ui/watch.ts";
import { learnerFile } from "../src/workspace.ts";
import { cliEnv, exitOf, TSX } from "./support/cli.ts";
import { lesson, solution } from "./support/lesson01.ts";
import { alive, processesWithEnv, scratchDir } from "./support/sandbox.ts";
import { waitFor } from "./support/wait.ts";

const scratch = scratchDir("warm");
const file = join(scratch.dir, "connect.ts");
const log = join(scratch.dir, "imports.log");
let redis: RedisTarget;
let warm: WarmChecks;

beforeAll(async () => {
  redis = await openRedisTarget({});
  warm = new WarmChecks();
  // The check's processes inherit it: the fixture below says where it ran.
  process.env.WARM_TEST_LOG = log;
});
afterAll(async () => {
  await warm?.close();
  await redis?.release();
  delete process.env.WARM_TEST_LOG;
  scratch.remove();
});

/**
 * The solution plus what a learner's module might carry between runs if they shared a process:
 * a global counter that refuses a second import, and a key written under the run's prefix.
 */
const witness = `${solution}
const imports = globalThis as { workbookImports?: number };
imports.workbookImports = (imports.workbookImports ?? 0) + 1;
if (imports.workbookImports > 1) throw new Error("imported twice in one process");
import { appendFileSync } from "node:fs";
appendFileSync(process.env.WARM_TEST_LOG ?? "", \`\${process.pid} \${process.env.WORKBOOK_PREFIX}\\n\`);
const marker = createClient({ url: process.env.WORKBOOK_REDIS_URL });
await marker.connect();
await marker.set(\`\${process.env.WORKBOOK_PREFIX}left-behind\`, "1");
marker.destroy();
`;

function check(source: string, timeoutMs?: number) {
  writeFileSync(file, source);
  return runCheck(lesson, { kind: "learner", file, label: "your code" }, redis, {
    warm,
    timeoutMs,
  });
}

function imports(): { pid: number; prefix: string }[] {
  if (!existsSync(log)) return [];
  return readFileSync(log, "utf8")
    .trim()
    .split("\n")
    .map((line) => {
      const [pid = "0", prefix = ""] = line.split(" ");
      return { pid: Number(pid), prefix };
    });
}

async function keysUnder(prefix: string): Promise<string[]> {
  const client = createClient({ url: redis.url });
  await client.connect();
  try {
    return await client.keys(`${prefix}*`);
  } finally {
    client.destroy();
  }
}

test("two runs in a row: a fresh process and module each, own prefixes, no keys left", {
  timeout: 120_000,
}, async () => {
  const first = await check(witness);
  expect(first.status, first.reason).toBe("passed");
  const second = await check(witness);
  expect(second.status, second.reason).toBe("passed");
  await warm.tidied();
  const [one, two] = imports();
  expect(one?.pid).not.toBe(two?.pid);
  expect(one?.prefix).not.toBe(two?.prefix);
  for (const run of [one, two]) {
    expect(alive(run?.pid ?? 0)).toBe(false);
    expect(await keysUnder(run?.prefix ?? "none")).toEqual([]);
  }
});

test("a run stopped at its limit does not break the next one", { timeout: 120_000 }, async () => {
  // Not named by the kit's starvation watcher first: this is about the run's own limit.
  process.env.WORKBOOK_STARVATION_MS = "0";
  const hung = await check(
    solution.replace("const base =", "for (;;) {}\n  const base ="),
    6_000,
  ).finally(() => {
    delete process.env.WORKBOOK_STARVATION_MS;
  });
  expect(hung.status).toBe("failed");
  expect(hung.reason).toMatch(/did not finish within 6s/);
  const next = await check(solution);
  expect(next.status, next.reason).toBe("passed");
});

test("a connection left open is still reported, and not held against the next run", {
  timeout: 120_000,
}, async () => {
  const mistake = lesson.mistakes.find((m) => m.name === "never-closes");
  if (!mistake) throw new Error("lesson 01 has no never-closes mistake");
  const diff = readFileSync(mistake.file, "utf8");
  const expected = /^# expect: (.*)$/m.exec(diff)?.[1] ?? "";
  const verdict = await check(applyPatch(solution, diff));
  expect(verdict.status).toBe("failed");
  const messages = verdict.tests.map((t) => t.message ?? "").join("\n");
  expect(messages).toContain(expected);
  const next = await check(solution);
  expect(next.status, next.reason).toBe("passed");
});

test("the warm type checker reports what tsc reports", { timeout: 120_000 }, async () => {
  const broken = `${solution}\nexport const wrong: number = "text";\n`;
  writeFileSync(file, broken);
  expect(await warm.warmUp(file)).toBe(true);
  const cold = await typecheck(file);
  expect(cold.length).toBeGreaterThan(0);
  expect(await warm.typecheck(file)).toEqual(cold);
  const verdict = await check(broken);
  expect(verdict.status).toBe("failed");
  expect(verdict.reason).toContain("does not compile");
  expect(verdict.reason).toContain(`${cold[0]?.line}:${cold[0]?.column}`);
});

test("a module the exercise imports is type-checked warm as tsc checks it, and its saves count", {
  timeout: 120_000,
}, async () => {
  const helper = join(scratch.dir, "helper.ts");
  writeFileSync(helper, "export const base: number = 100;\n");
  writeFileSync(
    file,
    `import { base as fromHelper } from "./helper.ts";\n${solution}\nexport const b = fromHelper;\n`,
  );
  try {
    expect(await warm.warmUp(file)).toBe(true);
    expect(await warm.typecheck(file)).toEqual([]);
    const before = readSources(file);
    writeFileSync(join(scratch.dir, "helper.ts.bak"), "an editor's or a reset's copy");
    expect(readSources(file)).toBe(before);
    writeFileSync(helper, 'export const base: number = "text";\n');
    expect(readSources(file)).not.toBe(before);
    const cold = await typecheck(file);
    expect(cold.map((d) => d.file)).toContain(relative(ROOT, helper));
    expect(await warm.typecheck(file)).toEqual(cold);
  } finally {
    rmSync(helper, { force: true });
    rmSync(join(scratch.dir, "helper.ts.bak"), { force: true });
  }
});

test("quitting watch leaves no process and no check directory behind", {
  timeout: 120_000,
}, async () => {
  const ws = scratchDir("warm-watch");
  const tmp = join(ws.dir, "tmp");
  mkdirSync(tmp);
  const env = { WORKBOOK_WORKSPACE: join(ws.dir, "ws"), TMPDIR: tmp };
  const learner = learnerFile(lesson, env);
  mkdirSync(dirname(learner), { recursive: true });
  writeFileSync(learner, solution);
  const child: ChildProcess = spawn(
    process.execPath,
    [...TSX, "src/cli.ts", "watch", lesson.number, "--json"],
    { cwd: ROOT, env: cliEnv(env), stdio: ["ignore", "pipe", "ignore"] },
  );
  const exited = exitOf(child);
  let out = "";
  child.stdout?.on("data", (chunk) => {
    out += chunk;
  });
  const checkDirs = () => readdirSync(tmp).filter((name) => name.startsWith("workbook-check-"));
  try {
    await waitFor(() => out.includes('"status"'), 90_000);
    // The next check's process is up and waiting for a save.
    await waitFor(() => checkDirs().some((d) => existsSync(join(tmp, d, "go.waiting"))), 60_000);
    child.kill("SIGINT");
    expect(await exited).toBe(130);
    const marker = `WORKBOOK_WORKSPACE=${env.WORKBOOK_WORKSPACE}`;
    await waitFor(() => processesWithEnv(marker).length === 0, 10_000);
    expect(processesWithEnv(marker)).toEqual([]);
    expect(checkDirs()).toEqual([]);
  } finally {
    child.kill("SIGKILL");
    ws.remove();
  }
});
