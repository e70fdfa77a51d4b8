import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  existsSync,
  type FSWatcher,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  watch,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join, relative } from "node:path";
import type { Lesson } from "../catalog.ts";
import { ROOT } from "../paths.ts";
import { killGroup } from "../process-group.ts";
import { hideSecrets } from "../redis/redact.ts";
import { deletePrefixedKeys, preloadClient, type RedisTarget } from "../redis/target.ts";
import { learnerCommands, startTrace, type Trace } from "../redis/trace.ts";
import { removeOnExit } from "./cleanup.ts";
import type { CheckEvent } from "./events.ts";
import { applyPatch } from "./patch.ts";
import { type CheckProcesses, startCheck } from "./shards.ts";
import { standbyKey } from "./standby.ts";
import { type Diagnostic, typecheck } from "./typecheck.ts";
import { type CheckTarget, decide, mergeShards, skipReason, type Verdict } from "./verdict.ts";
import type { WarmChecks } from "./warm.ts";

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
  /**
   * Watch mode and the guided runner: a warm type checker, and the next run's process started
   * as soon as this one ends (./warm.ts).
   */
  warm?: WarmChecks;
  /**
   * The file's compile errors from elsewhere: the self-verification type-checks all of a
   * lesson's files in one compiler run (typecheckMany) instead of one run per check.
   */
  typecheck?: (file: string) => Promise<Diagnostic[]>;
  /**
   * Ends the run as soon as this holds of what it has reported so far (as if it had ended
   * there). The self-verification stops a mistake's run once the mistake is rejected with its
   * expected message: the tests after that one cannot take the rejection back.
   */
  enough?: (soFar: Decided) => boolean;
}

type Decided = ReturnType<typeof decide>;

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

function parseEvents(text: string): CheckEvent[] {
  return text
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

function readEvents(file: string): CheckEvent[] {
  if (!existsSync(file)) return [];
  return parseEvents(readFileSync(file, "utf8"));
}

/** The events of a run still going, read as they come: only the complete lines added since. */
function eventTail(file: string): () => CheckEvent[] {
  const events: CheckEvent[] = [];
  let offset = 0;
  let partial = "";
  return () => {
    let fd: number | undefined;
    try {
      fd = openSync(file, "r");
      const size = fstatSync(fd).size;
      if (size > offset) {
        const chunk = Buffer.alloc(size - offset);
        readSync(fd, chunk, 0, chunk.length, offset);
        offset = size;
        const text = partial + chunk.toString();
        const end = text.lastIndexOf("\n") + 1;
        partial = text.slice(end);
        events.push(...parseEvents(text.slice(0, end)));
      }
    } catch {
      // Not written yet.
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
    return events;
  };
}

const END: CheckEvent = { event: "end" };
const END_LINE = `${JSON.stringify(END)}\n`;

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

/**
 * Waits until the reporter has written "end", the process exits, time runs out, or `cancel`.
 * A change event on the events file's directory says when to look; the poll backs it up where
 * such events never come.
 */
function waitForEnd(
  child: ChildProcess,
  events: string,
  ms: number,
  cancel?: AbortSignal,
  enough?: (soFar: CheckEvent[]) => boolean,
) {
  const soFar = enough ? eventTail(events) : undefined;
  return new Promise<{
    timedOut: boolean;
    /** Ended by `enough`, the process still running. */
    enough: boolean;
    exitCode: number | null;
    signal: string | null;
  }>((resolve) => {
    let watcher: FSWatcher | undefined;
    let done = false;
    // How many events `enough` has judged: it decides afresh only when more have come.
    let judged = 0;
    const finish = (timedOut: boolean, isEnough = false) => {
      if (done) return;
      done = true;
      clearInterval(poll);
      clearTimeout(timer);
      watcher?.close();
      child.off("exit", look);
      cancel?.removeEventListener("abort", cancelled);
      resolve({ timedOut, enough: isEnough, exitCode: child.exitCode, signal: child.signalCode });
    };
    const look = () => {
      if (child.exitCode !== null || child.signalCode !== null || hasEnded(events)) {
        finish(false);
      } else if (soFar && enough) {
        const events = soFar();
        if (events.length > judged) {
          judged = events.length;
          if (enough(events)) finish(false, true);
        }
      }
    };
    const cancelled = () => finish(false);
    cancel?.addEventListener("abort", cancelled);
    child.on("exit", look);
    try {
      watcher = watch(dirname(events), look);
      watcher.on("error", () => watcher?.close());
    } catch {
      // The poll alone then.
    }
    const poll = setInterval(look, 40);
    const timer = setTimeout(() => finish(true), ms);
    if (cancel?.aborted) finish(false);
    else look();
  });
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
  const warm = options.warm;
  // Booting the check's processes and type-checking the file go on at the same time; the tests
  // start only once the file compiles.
  const run =
    warm?.take(standbyKey(lesson, file, redis)) ?? startCheck(lesson, file, redis, ownFile);
  let trace: Trace | undefined;
  let keepKeys = false;
  let ran = false;
  try {
    const diagnostics = await (options.typecheck?.(file) ??
      (warm ? warm.typecheck(file) : typecheck(file)));
    if (options.signal?.aborted) return cancelled();
    if (diagnostics.length > 0) return finish(doesNotCompile(diagnostics));

    await warm?.tidied();
    if (redis.kind === "private" && redis.port !== undefined) {
      await redis.refresh?.();
      if (!lesson.serverOfItsOwn) trace = await bounded(startTrace(redis.port));
    }
    ran = true;
    run.go();
    // The run's keys are deleted with node-redis once it ends: loaded now, while the tests run.
    preloadClient();
    const timeoutMs = options.timeoutMs ?? lesson.timeoutMs ?? 60_000;
    const decided = await waitForParts(run, file, timeoutMs, options);
    if (options.signal?.aborted) return cancelled();
    const traced = trace ? await bounded(trace.stop()) : undefined;
    const sent = traced ? learnerCommands(traced) : undefined;
    trace = undefined;
    keepKeys = decided.status === "failed" && options.keepFailed !== undefined;
    const untraced = lesson.serverOfItsOwn;
    return finish({ ...decided, sent, untraced, diagnostics: hideSecrets(run.output()) });
  } catch (error) {
    return finish({
      status: "error",
      reason: `The check could not run: ${(error as Error).message}`,
      tests: [],
      output: [],
      diagnostics: hideSecrets(run.output()),
    });
  } finally {
    const cleanUp = async () => {
      await run.dispose();
      if (trace) await bounded(trace.stop());
      // A test stopped midway (the run ended early, was cancelled or timed out, or another of
      // its processes failed first) may have left the private server busy with a script or a
      // setting changed: it is put right before anyone else uses it (not when it is kept for the
      // learner to look at: a restart would lose what the run left).
      if (ran && !keepKeys) await bounded(redis.refresh?.() ?? Promise.resolve(), 12_000);
      if (keepKeys) options.keepFailed?.(run.prefix);
      else if (ran) await bounded(deletePrefixedKeys(redis.url, run.prefix, STEP_MS));
    };
    if (warm) {
      // The learner sees the verdict now; the next run waits for this tidying, and its process
      // boots meanwhile, spawned only once the verdict is out (a spawn takes 5-70 ms). A learner
      // who cancelled a check asked for quiet: nothing boots then.
      if (!ownFile && !options.signal?.aborted)
        setImmediate(() => warm.prepare(lesson, file, redis));
      warm.tidying(cleanUp());
    } else {
      await cleanUp();
    }
  }
}

/**
 * Waits for every process of the run and decides what they reported together. A run that
 * `enough` ends stops all of them: each is then decided as if it had ended there.
 */
async function waitForParts(
  run: CheckProcesses,
  file: string,
  timeoutMs: number,
  options: RunOptions,
): Promise<Decided> {
  const enough = options.enough;
  const stopAll = new AbortController();
  const cancel = options.signal
    ? AbortSignal.any([options.signal, stopAll.signal])
    : stopAll.signal;
  const tails = run.parts.map((part) => eventTail(part.events));
  let ended = false;
  const judge =
    enough &&
    (() => {
      const merged = mergeShards(
        tails.map((tail) => decide([...tail(), END], { exitCode: null, signal: null }, file)),
      );
      if (!enough(merged)) return false;
      ended = true;
      stopAll.abort();
      return true;
    });
  const endings = await Promise.all(
    run.parts.map((part) => waitForEnd(part.child, part.events, timeoutMs, cancel, judge)),
  );
  await run.stop();
  const parts: Decided[] = [];
  for (const [i, part] of run.parts.entries()) {
    const all = readEvents(part.events);
    const ending = endings[i];
    // Stopped on purpose: decided as if it had ended there, not as a process that died.
    if (ended || ending?.enough) all.push(END);
    for (const e of all) if (e.event === "process") await killGroup(e.pid);
    parts.push(
      decide(
        all,
        {
          timedOutAfterMs: ending?.timedOut ? timeoutMs : undefined,
          exitCode: ending?.exitCode ?? null,
          signal: ending?.signal ?? null,
        },
        file,
      ),
    );
  }
  return mergeShards(parts, timeoutMs);
}

function doesNotCompile(diagnostics: Diagnostic[]): Parameters<Finish>[0] {
  const shown = diagnostics.slice(0, 8).map((d) => `${d.file}:${d.line}:${d.column}  ${d.message}`);
  const more = diagnostics.length > 8 ? [`... and ${diagnostics.length - 8} more`] : [];
  return {
    status: "failed",
    reason: ["Your code does not compile, so the check did not run it:", ...shown, ...more].join(
      "\n",
    ),
    tests: [],
    output: [],
  };
}
