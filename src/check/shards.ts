/**
 * The processes of one check run. Most checks run in one; a check whose tests mostly wait (a
 * reply held back, a blocking read left to time out, a task held in a handler) names in its
 * lesson.json how many processes share its tests ("shards"), so that those waits overlap and
 * a save is answered sooner. Each process is a standby of its own (./standby.ts) with its own
 * run id, connections and keys under the run's prefix; they claim tests as they reach them
 * (./shard-setup.ts), and the harness merges what they report (mergeShards in ./verdict.ts).
 *
 * WORKBOOK_SHARDS=1 runs every check in one process (to compare, or to rule sharing out).
 */
import { randomBytes } from "node:crypto";
import { rmSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Lesson } from "../catalog.ts";
import { ROOT } from "../paths.ts";
import type { RedisTarget } from "../redis/target.ts";
import { makeScratch } from "../scratch.ts";
import { removeOnExit } from "./cleanup.ts";
import { type Standby, standbyKey, startStandby } from "./standby.ts";

export interface CheckProcesses {
  readonly key: string;
  readonly parts: readonly Standby[];
  /** Every key of the run is under it: what the run deletes, or `--keep` keeps. */
  readonly prefix: string;
  usable(): boolean;
  waiting(): boolean;
  go(): void;
  stop(): Promise<void>;
  dispose(): Promise<void>;
  /** The processes' own output, each process's under a line naming it when there are several. */
  output(): string;
}

/**
 * Whether vitest may empty its module cache as this run starts: it does when the installed
 * packages changed since the cache was made (node_modules/.package-lock.json newer than the
 * cache's _metadata.json), and another process writing to the cache just then fails with
 * ENOENT. Such a run goes in one process; the next finds the cache made anew.
 */
function cacheMayBeEmptied(): boolean {
  const mtime = (file: string) => {
    try {
      return statSync(file).mtimeMs;
    } catch {
      return undefined;
    }
  };
  const made = mtime(
    join(ROOT, "node_modules", ".cache", "workbook", "vitest-modules", "_metadata.json"),
  );
  const installed = mtime(join(ROOT, "node_modules", ".package-lock.json"));
  return made !== undefined && installed !== undefined && installed > made;
}

export function shardCount(lesson: Lesson): number {
  if (cacheMayBeEmptied()) return 1;
  const forced = Number(process.env.WORKBOOK_SHARDS);
  if (Number.isInteger(forced) && forced >= 1) return Math.min(forced, lesson.shards ?? 1);
  return lesson.shards ?? 1;
}

export function startCheck(
  lesson: Lesson,
  file: string,
  redis: RedisTarget,
  ownFile?: string,
): CheckProcesses {
  const count = shardCount(lesson);
  if (count <= 1) {
    const only = startStandby(lesson, file, redis, ownFile);
    return {
      key: only.key,
      parts: [only],
      prefix: only.prefix,
      usable: () => only.usable(),
      waiting: () => only.waiting(),
      go: () => only.go(),
      stop: () => only.stop(),
      dispose: () => only.dispose(),
      output: () => only.output(),
    };
  }
  const dir = makeScratch("check");
  const keepDir = removeOnExit(dir);
  const prefix = `wb:${randomBytes(4).toString("hex")}:`;
  const parts = Array.from({ length: count }, (_, index) =>
    startStandby(lesson, file, redis, ownFile, { dir, index, prefix }),
  );
  let disposed: Promise<void> | undefined;
  return {
    key: standbyKey(lesson, file, redis),
    parts,
    prefix,
    usable: () => parts.every((p) => p.usable()),
    waiting: () => parts.every((p) => p.waiting()),
    go: () => {
      for (const part of parts) part.go();
    },
    stop: async () => {
      await Promise.all(parts.map((p) => p.stop()));
    },
    dispose() {
      disposed ??= (async () => {
        await Promise.all(parts.map((p) => p.dispose()));
        rmSync(dir, { recursive: true, force: true });
        keepDir();
      })();
      return disposed;
    },
    output: () =>
      parts
        .map((p, i) => p.output() && `-- process ${i + 1} of ${count} --\n${p.output()}`)
        .filter(Boolean)
        .join("\n"),
  };
}
