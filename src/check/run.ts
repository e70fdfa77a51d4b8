import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { basename, join, relative } from "node:path";
import type { Lesson } from "../catalog.ts";
import { childEnded } from "../child-ended.ts";
import { ROOT } from "../paths.ts";
import { killGroup, killProcessesWithEnv } from "../process-group.ts";
import { hideSecrets } from "../redis/redact.ts";
import { deletePrefixedKeys, type RedisTarget } from "../redis/target.ts";
import { learnerCommands, startTrace, type Trace } from "../redis/trace.ts";
import { makeScratch, sweepOnce } from "../scratch.ts";
import { killGroupOnExit, killRunOnExit, removeOnExit } from "./cleanup.ts";
import type { CheckEvent } from "./events.ts";
import { applyPatch } from "./patch.ts";
import { typecheck } from "./typecheck.ts";
import { type CheckTarget, decide, skipReason, type Verdict } from "./verdict.ts";
import { guardGroup } from "./watchdog.ts";

export interface RunOptions {
  /** Upper bound for the whole run; defaults to the lesson's timeoutMs or 60 s. */
  timeoutMs?: number;
  /**
   * `npm run check -- --keep`: a failed run leaves its keys in Redis for the learner to look at,
   * and this is told their prefix.
   */
  keepFailed?: (prefix: string) => void;
  /** Cancels the run: its processes are killed and the verdict is an error, reason "cancelled". */
  signal?: AbortSignal;
}

const VITEST = join(ROOT, "node_modules", "vitest", "vitest.mjs");
const REPORTER = join(ROOT, "src", "check", "reporter.ts");
const CONFIG = join(ROOT, "checks", "vitest.config.ts");

/**
 * How long each step around the learner's run may take (tracing, deleting the run's keys): the
 * learner's code may have paused or stopped the server (CLIENT PAUSE, DEBUG SLEEP, SHUTDOWN),
 * and the check's time limit must stay the time limit whatever it did.
 */
const STEP_MS = 3000;

/** `work`'s result, or undefined once `ms` have passed (or it failed). */
function bounded<T>(work: Promise<T>, ms = STEP_MS): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    work.catch(() => undefined),
    new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function readEvents(file: string): CheckEvent[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((line) => line.length > 0)
    .flatMap((line) => {
      try {
        return [JSON.parse(line) as CheckEvent];
      } catch {
        return [];
      }
    });
}

const END_LINE = `${JSON.stringify({ event: "end" } satisfies CheckEvent)}\n`;

/**
 * Whether the reporter has written its last event. Reads only the file's tail: the learner's
 * console output fills the file too, and this runs every 40 ms.
 */
function hasEnded(file: string): boolean {
  let fd: number | undefined;
  try {
    fd = openSync(file, "r");
    const size = fstatSync(fd).size;
    if (size < END_LINE.length) return false;
    const tail = Buffer.alloc(END_LINE.length);
    readSync(fd, tail, 0, END_LINE.length, size - END_LINE.length);
    return tail.toString() === END_LINE;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function childEnv(vars: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    // An outer vitest (our own test suite) must not leak its worker settings into the check's.
    if (!/^VITEST|^TEST$|^NODE_ENV$/.test(name)) env[name] = value;
  }
  return { ...env, ...vars, FORCE_COLOR: "0", NO_COLOR: "1" };
}

/** Waits until the reporter has written "end", the process exits, time runs out, or `cancel`. */
function waitForEnd(child: ChildProcess, events: string, ms: number, cancel?: AbortSignal) {
  return new Promise<{ timedOut: boolean; exitCode: number | null; signal: string | null }>(
    (resolve) => {
      let exitCode: number | null = null;
      let signal: string | null = null;
      let exited = false;
      const finish = (timedOut: boolean) => {
        clearInterval(poll);
        clearTimeout(timer);
        cancel?.removeEventListener("abort", cancelled);
        resolve({ timedOut, exitCode, signal });
      };
      const cancelled = () => finish(false);
      cancel?.addEventListener("abort", cancelled);
      child.once("exit", (code, sig) => {
        exitCode = code;
        signal = sig;
        exited = true;
      });
      const poll = setInterval(() => {
        if (exited || hasEnded(events)) finish(false);
      }, 40);
      const timer = setTimeout(() => finish(true), ms);
      if (cancel?.aborted) finish(false);
    },
  );
}

/** Completes a verdict with what every verdict carries. */
type Finish = (
  rest: Omit<Verdict, "lesson" | "title" | "target" | "file" | "durationMs">,
) => Verdict;

/**
 * Runs one lesson's check against one file and decides a verdict. The one code path shared by
 * `npm run check`, the guided runner and the self-verification tests.
 */
export async function runCheck(
  lesson: Lesson,
  target: CheckTarget,
  redis: RedisTarget,
  options: RunOptions = {},
): Promise<Verdict> {
  const started = Date.now();
  const base = { lesson: lesson.id, title: lesson.title, target: target.kind, file: target.file };
  const finish: Finish = (rest) => ({
    ...base,
    ...rest,
    durationMs: Date.now() - started,
  });

  const skipped = skipReason(lesson, redis);
  if (skipped) return finish({ status: "skipped", reason: skipped, tests: [], output: [] });
  if (!existsSync(target.file)) {
    return finish({
      status: "error",
      reason: `${relative(ROOT, target.file)} does not exist. Run \`npm run reset -- ${lesson.number}\` to make a fresh copy.`,
      tests: [],
      output: [],
    });
  }

  let file = target.file;
  let materialized: string | undefined;
  if (file.endsWith(".diff")) {
    try {
      materialized = materializeMistake(lesson, file);
      file = materialized;
    } catch (error) {
      return finish({
        status: "error",
        reason: `The mistake ${relative(ROOT, target.file)} could not be applied: ${(error as Error).message}.`,
        tests: [],
        output: [],
      });
    }
  }
  const forgetMistake = materialized ? removeOnExit(materialized) : () => false;
  try {
    return await checkFile(lesson, file, redis, options, finish, materialized);
  } finally {
    if (materialized) rmSync(materialized, { force: true });
    forgetMistake();
  }
}

/**
 * A mistake stored as a diff becomes a real file beside the workspace, inside the repository so
 * that its `redis` import resolves like the learner's.
 */
function materializeMistake(lesson: Lesson, diffFile: string): string {
  const source = applyPatch(readFileSync(lesson.solution, "utf8"), readFileSync(diffFile, "utf8"));
  const dir = join(ROOT, ".tmp", "mistakes", lesson.id);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${basename(diffFile, ".diff")}.${randomBytes(3).toString("hex")}.ts`);
  writeFileSync(file, source);
  return file;
}

async function checkFile(
  lesson: Lesson,
  file: string,
  redis: RedisTarget,
  options: RunOptions,
  finish: Finish,
  /** A file made for this run only (a mistake applied to the solution): the watchdog removes it too. */
  ownFile?: string,
): Promise<Verdict> {
  const cancelled = () => finish({ status: "error", reason: "cancelled", tests: [], output: [] });
  if (options.signal?.aborted) return cancelled();
  const diagnostics = await typecheck(file);
  if (options.signal?.aborted) return cancelled();
  if (diagnostics.length > 0) {
    const shown = diagnostics
      .slice(0, 8)
      .map((d) => `${d.file}:${d.line}:${d.column}  ${d.message}`);
    const more = diagnostics.length > 8 ? [`... and ${diagnostics.length - 8} more`] : [];
    return finish({
      status: "failed",
      reason: ["Your code does not compile, so the check did not run it:", ...shown, ...more].join(
        "\n",
      ),
      tests: [],
      output: [],
    });
  }

  sweepOnce();
  const runId = randomBytes(4).toString("hex");
  const prefix = `wb:${runId}:`;
  const scratch = makeScratch("check");
  const keepScratch = removeOnExit(scratch);
  // vitest's own temporary files (<tmp>/<id>/ssr) go inside the scratch directory and leave with it.
  const childTmp = join(scratch, "tmp");
  mkdirSync(childTmp);
  const events = join(scratch, "events.jsonl");
  const runEntry = `WORKBOOK_RUN_ID=${runId}`;
  const forgetRun = killRunOnExit(runId);
  let trace: Trace | undefined;
  let child: ChildProcess | undefined;
  let forgetChild = () => false;
  let releaseGuard = () => {};
  let stdio = "";
  let keepKeys = false;
  try {
    if (redis.kind === "private" && redis.port !== undefined) {
      await redis.refresh?.();
      trace = await bounded(startTrace(redis.port));
    }
    child = spawn(
      process.execPath,
      [VITEST, "run", relative(ROOT, lesson.check), "--config", CONFIG, "--reporter", REPORTER],
      {
        cwd: ROOT,
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
        env: childEnv({
          WORKBOOK_REDIS_URL: redis.url,
          WORKBOOK_PREFIX: prefix,
          WORKBOOK_RUN_ID: runId,
          WORKBOOK_TARGET: file,
          WORKBOOK_LESSON: lesson.number,
          WORKBOOK_SERVER: redis.kind,
          WORKBOOK_REDIS_VERSION: redis.version,
          WORKBOOK_RESULTS: events,
          TMPDIR: childTmp,
        }),
      },
    );
    const pid = child.pid;
    if (pid !== undefined) {
      forgetChild = killGroupOnExit(pid);
      releaseGuard = guardGroup(pid, runId, ownFile ? [scratch, ownFile] : [scratch]);
    }
    const collect = (chunk: Buffer) => {
      if (stdio.length < 200_000) stdio += chunk.toString();
    };
    child.stdout?.on("data", collect);
    child.stderr?.on("data", collect);
    // --verbose shows this output: read it to the end, not just to the exit.
    const drained = childEnded(child, 1_000);

    const timeoutMs = options.timeoutMs ?? lesson.timeoutMs ?? 60_000;
    const ending = await waitForEnd(child, events, timeoutMs, options.signal);
    if (pid !== undefined) {
      await killGroup(pid);
      await drained;
    }
    forgetChild();
    const all = readEvents(events);
    for (const e of all) if (e.event === "process") await killGroup(e.pid);
    if (options.signal?.aborted) return cancelled();
    const decided = decide(
      all,
      {
        timedOutAfterMs: ending.timedOut ? timeoutMs : undefined,
        exitCode: ending.exitCode,
        signal: ending.signal,
      },
      file,
    );
    const traced = trace ? await bounded(trace.stop()) : undefined;
    const sent = traced ? learnerCommands(traced) : undefined;
    trace = undefined;
    keepKeys = decided.status === "failed" && options.keepFailed !== undefined;
    return finish({ ...decided, sent, diagnostics: hideSecrets(stdio) });
  } catch (error) {
    return finish({
      status: "error",
      reason: `The check could not run: ${(error as Error).message}`,
      tests: [],
      output: [],
      diagnostics: hideSecrets(stdio),
    });
  } finally {
    if (forgetChild() && child?.pid !== undefined) await killGroup(child.pid);
    // What left the group (a detached spawn, a daemon) still carries the run id.
    killProcessesWithEnv(runEntry);
    forgetRun();
    if (trace) await bounded(trace.stop());
    if (keepKeys) options.keepFailed?.(prefix);
    else await bounded(deletePrefixedKeys(redis.url, prefix, STEP_MS));
    rmSync(scratch, { recursive: true, force: true });
    keepScratch();
    releaseGuard();
  }
}
