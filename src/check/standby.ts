/**
 * A check run's process, started before it is needed. Booting vitest, transforming the check
 * and loading node-redis take most of a check's time; a standby does all that at once and then
 * waits (./standby-setup.ts) until go(), which only imports the check file and the learner's
 * module and runs the tests. Each run still gets a process of its own, a run id, key prefix and
 * scratch directory of its own: a standby is used once, then killed like any check.
 *
 * `npm run check` starts one while it type-checks the file; watch mode and the guided runner
 * keep the next one waiting (./warm.ts), so a save only pays for the tests themselves.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import type { Lesson } from "../catalog.ts";
import { childEnded, type Ending } from "../child-ended.ts";
import { ROOT } from "../paths.ts";
import { killGroup, killProcessesWithEnv } from "../process-group.ts";
import type { RedisTarget } from "../redis/target.ts";
import { makeScratch, sweepOnce } from "../scratch.ts";
import { killGroupOnExit, killRunOnExit, removeOnExit } from "./cleanup.ts";
import { guardRun } from "./watchdog.ts";

const VITEST = join(ROOT, "node_modules", "vitest", "vitest.mjs");
const REPORTER = join(ROOT, "src", "check", "reporter.ts");
const CONFIG = join(ROOT, "src", "check", "standby.config.ts");
const CHECKS = join(ROOT, "checks");

export interface Standby {
  /** Which runs it can serve: the same lesson, file, Redis and settings. */
  readonly key: string;
  readonly runId: string;
  readonly prefix: string;
  /** The events file its reporter and test process write (./events.ts). */
  readonly events: string;
  readonly child: ChildProcess;
  /** Its stdout and stderr so far (vitest's own complaints, the learner's stray output). */
  output(): string;
  /** Whether it can still run: alive, not yet started, and its check's sources unchanged. */
  usable(): boolean;
  /** Whether it has booted and now waits for go() (what the latency benchmarks wait for). */
  waiting(): boolean;
  /** Starts the tests: from here on the run's time limit counts. */
  go(): void;
  /** Kills the process group and waits (briefly) until its output is read. */
  stop(): Promise<void>;
  /** Kills whatever of the run is left (what left the group too) and removes its scratch. */
  dispose(): Promise<void>;
}

export function standbyKey(lesson: Lesson, file: string, redis: RedisTarget): string {
  const limit = process.env.WORKBOOK_TEST_TIMEOUT_MS ?? "";
  const starved = process.env.WORKBOOK_STARVATION_MS ?? "";
  return [lesson.id, file, redis.url, redis.kind, limit, starved].join("\n");
}

function childEnv(vars: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    // An outer vitest (our own test suite) must not leak its worker settings into the check's.
    if (!/^VITEST|^TEST$|^NODE_ENV$/.test(name)) env[name] = value;
  }
  return { ...env, ...vars, FORCE_COLOR: "0", NO_COLOR: "1" };
}

/**
 * When the sources a standby has already loaded were last changed: the kit and its helpers, the
 * lesson's check, the harness's own check files. An author who edits them gets a fresh process.
 */
function sourcesStamp(lesson: Lesson): string {
  const files = [
    lesson.check,
    ...readdirSync(CHECKS)
      .filter((name) => name.endsWith(".ts"))
      .map((name) => join(CHECKS, name)),
  ];
  return files
    .map((file) => {
      try {
        return statSync(file).mtimeMs;
      } catch {
        return 0;
      }
    })
    .join(",");
}

/** One of several processes sharing a check's tests (./shards.ts). */
export interface Shard {
  /** Where the processes claim tests (./shard-setup.ts). */
  dir: string;
  index: number;
  /** The run's key prefix; each process's own keys go under `<prefix><index>:`. */
  prefix: string;
}

/**
 * Starts the check of `lesson` on `file` against `redis`, held before its first import of the
 * check file. `ownFile` is a file made for this run only (a mistake applied to the solution):
 * the watchdog removes it too if we die.
 */
export function startStandby(
  lesson: Lesson,
  file: string,
  redis: RedisTarget,
  ownFile?: string,
  shard?: Shard,
): Standby {
  sweepOnce();
  const runId = randomBytes(4).toString("hex");
  const prefix = shard ? `${shard.prefix}${shard.index}:` : `wb:${runId}:`;
  const scratch = makeScratch("check");
  const keepScratch = removeOnExit(scratch);
  // vitest's own temporary files (<tmp>/<id>/ssr) go inside the scratch directory and leave with it.
  const childTmp = join(scratch, "tmp");
  mkdirSync(childTmp);
  const events = join(scratch, "events.jsonl");
  const goFile = join(scratch, "go");
  const forgetRun = killRunOnExit(runId);
  // Armed before the spawn: a SIGKILL of the workbook between the two would leave vitest and
  // the scratch directory with no one to end them. A shard's watchdog also removes the
  // directory its processes share (./shards.ts): nothing else would after a SIGKILL.
  const guard = guardRun(runId, [
    scratch,
    ...(ownFile ? [ownFile] : []),
    ...(shard ? [shard.dir] : []),
  ]);
  const stamp = sourcesStamp(lesson);
  const child = spawn(
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
        WORKBOOK_GO: goFile,
        WORKBOOK_CHECK_FILE: lesson.check,
        ...(shard && {
          WORKBOOK_SHARDS_DIR: shard.dir,
          WORKBOOK_SHARD: String(shard.index),
          WORKBOOK_ALONE: JSON.stringify(lesson.alone ?? []),
        }),
        TMPDIR: childTmp,
      }),
    },
  );
  const pid = child.pid;
  const forgetChild = pid === undefined ? () => false : killGroupOnExit(pid);
  if (pid !== undefined) guard.group(pid);
  let stdio = "";
  const collect = (chunk: Buffer) => {
    if (stdio.length < 200_000) stdio += chunk.toString();
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  // --verbose shows this output: read it to the end, not just to the exit.
  const drained: Promise<Ending> = childEnded(child, 1_000);
  child.on("error", () => {});
  let started = false;
  let disposed: Promise<void> | undefined;

  return {
    key: standbyKey(lesson, file, redis),
    runId,
    prefix,
    events,
    child,
    output: () => stdio,
    usable: () =>
      !started &&
      pid !== undefined &&
      child.exitCode === null &&
      child.signalCode === null &&
      sourcesStamp(lesson) === stamp,
    waiting: () => !started && existsSync(`${goFile}.waiting`),
    go() {
      started = true;
      writeFileSync(goFile, "");
    },
    async stop() {
      if (pid !== undefined) {
        await killGroup(pid);
        await drained;
      }
      forgetChild();
    },
    dispose() {
      disposed ??= (async () => {
        if (forgetChild() && pid !== undefined) await killGroup(pid);
        // What left the group (a detached spawn, a daemon) still carries the run id.
        killProcessesWithEnv(`WORKBOOK_RUN_ID=${runId}`);
        forgetRun();
        rmSync(scratch, { recursive: true, force: true });
        keepScratch();
        guard.release();
      })();
      return disposed;
    },
  };
}
