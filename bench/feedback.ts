/**
 * Feedback after a save: how long a learner in watch mode waits between saving the exercise and
 * seeing the verdict, and how long a cold `npm run check` takes. For each of lessons 01-08 it
 * runs `npm run watch -- NN --json` on a copy of the solution, saves the file as an editor does
 * (a new file renamed over the old one) once the previous verdict is in and the next check's
 * process is waiting, and times each save to its verdict line.
 *
 *   npm run bench -- feedback        BENCH_SAVES=10 saves per lesson, BENCH_LESSONS=01,02
 */
import { type ChildProcess, spawn } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { loadCatalog } from "../src/catalog.ts";
import { ROOT } from "../src/paths.ts";
import { signalGroup, waitGroupGone } from "../src/process-group.ts";
import { learnerFile } from "../src/workspace.ts";
import { scratchDir } from "../test/support/sandbox.ts";
import { percentile, printTable } from "./table.ts";

const SAVES = Number(process.env.BENCH_SAVES ?? 10);
const ONLY = process.env.BENCH_LESSONS?.split(",");
const LESSONS = ["01", "02", "03", "04", "05", "06", "07", "08"].filter(
  (n) => !ONLY || ONLY.includes(n),
);

interface Verdict {
  status: string;
}

function cli(args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  return spawn(process.execPath, ["--import", "tsx", join(ROOT, "src", "cli.ts"), ...args], {
    cwd: ROOT,
    env,
    detached: true,
    stdio: ["ignore", "pipe", "ignore"],
  });
}

/** Verdict lines, one promise per line, in order. */
function verdicts(child: ChildProcess): () => Promise<Verdict> {
  const queue: Verdict[] = [];
  const waiting: ((v: Verdict) => void)[] = [];
  if (!child.stdout) throw new Error("no stdout");
  createInterface({ input: child.stdout }).on("line", (line) => {
    if (!line.startsWith("{")) return;
    const verdict = JSON.parse(line) as Verdict;
    const next = waiting.shift();
    if (next) next(verdict);
    else queue.push(verdict);
  });
  return () => {
    const ready = queue.shift();
    return ready ? Promise.resolve(ready) : new Promise((resolve) => waiting.push(resolve));
  };
}

/** Whether the watch's next check process is booted and waiting (./src/check/standby-setup.ts). */
function standbyWaiting(tmp: string): boolean {
  return readdirSync(tmp)
    .filter((name) => name.startsWith("workbook-check-"))
    .some((name) => existsSync(join(tmp, name, "go.waiting")));
}

async function until(condition: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition() && Date.now() < deadline) await sleep(10);
}

/** Saves as editors do: the whole new content in a new file, renamed over the old one. */
function save(file: string, content: string): void {
  writeFileSync(`${file}.swp`, content);
  renameSync(`${file}.swp`, file);
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.pid === undefined) return;
  signalGroup(child.pid, "SIGINT");
  if (!(await waitGroupGone(child.pid, 10_000))) signalGroup(child.pid, "SIGKILL");
}

async function watchLesson(number: string, env: NodeJS.ProcessEnv, tmp: string) {
  const lesson = loadCatalog().find((l) => l.number === number);
  if (!lesson) throw new Error(`no lesson ${number}`);
  const file = learnerFile(lesson, env);
  mkdirSync(join(file, ".."), { recursive: true });
  const solution = readFileSync(lesson.solution, "utf8");
  save(file, solution);
  const child = cli(["watch", number, "--json"], env);
  const next = verdicts(child);
  const times: number[] = [];
  const statuses = new Set<string>();
  try {
    statuses.add((await next()).status);
    for (let i = 0; i < SAVES; i++) {
      await until(() => standbyWaiting(tmp), 30_000);
      const started = performance.now();
      save(file, `${solution}\n// save ${i}\n`);
      statuses.add((await next()).status);
      times.push(performance.now() - started);
    }
  } finally {
    await stop(child);
  }
  times.sort((a, b) => a - b);
  return { lesson, times, statuses };
}

async function cold(number: string, env: NodeJS.ProcessEnv): Promise<number> {
  const started = performance.now();
  const child = cli(["check", number, "--solution", "--json"], env);
  // Read to the end: a verdict with its traced commands can outgrow the pipe, and a check
  // whose output nobody reads never exits.
  child.stdout?.resume();
  await new Promise((resolve) => child.once("close", resolve));
  return performance.now() - started;
}

const sandbox = scratchDir("bench-feedback");
const tmp = join(sandbox.dir, "tmp");
mkdirSync(tmp);
const env: NodeJS.ProcessEnv = {
  ...process.env,
  WORKBOOK_WORKSPACE: join(sandbox.dir, "ws"),
  TMPDIR: tmp,
};
delete env.REDIS_URL;
const rows: Record<string, string | number>[] = [];
try {
  for (const number of LESSONS) {
    const load = loadavg()[0] ?? 0;
    const { lesson, times, statuses } = await watchLesson(number, env, tmp);
    rows.push({
      lesson: lesson.id,
      // On a shared machine the figures mean little without it.
      "load avg": load,
      verdicts: [...statuses].join(","),
      saves: times.length,
      "save p50 ms": percentile(times, 50),
      "save p95 ms": percentile(times, 95),
      "cold check ms": await cold(number, env),
    });
  }
} finally {
  sandbox.remove();
}
printTable(`Feedback after a save (watch mode, ${SAVES} saves per lesson) and a cold check`, rows);
