/**
 * What `npm run check -- --keep` (or `npm run redis-cli`) left for the learner to look at: a
 * private redis-server still running, or a failed check's keys on REDIS_URL. Recorded in the
 * workspace so later commands find it; the next check, `npm run redis-cli -- --stop`, or the
 * server's own timer ends it, so nothing is kept forever.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { workspaceDir } from "../paths.ts";
import { killGroup } from "../process-group.ts";
import { startTime } from "../scratch.ts";
import { deletePrefixedKeys, redisUrlFrom } from "./target.ts";

/** How long a kept private server may go unused before it stops itself. */
export const KEEP_SECONDS = 30 * 60;

export interface Kept {
  kind: "private" | "external";
  /** The failed check's key prefix, when a check kept its keys. */
  prefix?: string;
  lesson?: string;
  /** Private server: where it listens, its watchdog's process group, and its directory. */
  port?: number;
  pid?: number;
  start?: string;
  dir?: string;
}

export function keptFile(env: NodeJS.ProcessEnv = process.env): string {
  return join(workspaceDir(env), ".kept-redis.json");
}

function serverAlive(kept: Kept): boolean {
  return kept.pid !== undefined && startTime(kept.pid) === kept.start;
}

/** The kept Redis, or undefined; a record of a private server that has ended is removed. */
export function readKept(): Kept | undefined {
  const file = keptFile();
  if (!existsSync(file)) return undefined;
  let kept: Kept;
  try {
    kept = JSON.parse(readFileSync(file, "utf8")) as Kept;
  } catch {
    rmSync(file, { force: true });
    return undefined;
  }
  if (kept.kind === "private" && !serverAlive(kept)) {
    rmSync(file, { force: true });
    return undefined;
  }
  return kept;
}

/** Records a private server kept by `server.keep()`. */
export function recordKeptServer(
  port: number,
  held: { pid: number; dir: string },
  check?: { prefix: string; lesson: string },
): Kept {
  const kept: Kept = {
    kind: "private",
    port,
    pid: held.pid,
    start: startTime(held.pid),
    dir: held.dir,
    ...check,
  };
  recordKept(kept);
  return kept;
}

/** Restarts a kept server's idle time: its watchdog stops it once this file is old enough. */
export function markKeptUsed(kept: Kept): void {
  if (!kept.dir) return;
  const now = new Date();
  try {
    utimesSync(join(kept.dir, "used"), now, now);
  } catch {
    // Gone: the server is stopping, and the command will say it could not connect.
  }
}

export function recordKept(kept: Kept): void {
  const file = keptFile();
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(kept)}\n`);
}

/**
 * Ends what was kept: stops the private server (and removes its directory), or deletes the kept
 * keys from REDIS_URL. Says what it did, or undefined when nothing was kept.
 */
export async function releaseKept(): Promise<string | undefined> {
  const kept = readKept();
  if (!kept) return undefined;
  rmSync(keptFile(), { force: true });
  if (kept.kind === "private") {
    if (kept.pid !== undefined) await killGroup(kept.pid);
    if (kept.dir) rmSync(kept.dir, { recursive: true, force: true });
    return `Stopped the kept redis-server on port ${kept.port}.`;
  }
  const raw = process.env.REDIS_URL?.trim();
  if (!kept.prefix) return undefined;
  if (!raw) return `REDIS_URL is not set: the kept keys ${kept.prefix}* were left where they are.`;
  const removed = await deletePrefixedKeys(redisUrlFrom(raw), kept.prefix, 5000);
  return `Deleted the ${removed} kept keys ${kept.prefix}* from REDIS_URL.`;
}
