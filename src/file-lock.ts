/**
 * A lock file for a read-change-write of a small file shared by several processes (the progress
 * a watch, a hint and a check may all update at once). Synchronous, like the writes it guards.
 */
import { randomBytes } from "node:crypto";
import {
  closeSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";

/** A holder that has not let go for this long crashed (a lock is held for milliseconds). */
const STALE_MS = 10_000;
const GIVE_UP_MS = 20_000;

function sleep(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

function readOrUndefined(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

/**
 * Removes the lock if its holder is gone (its process ended, or it has held it too long). It is
 * renamed away first, so of several processes taking over only one succeeds; a lock taken
 * afresh in between is put back.
 */
function takeOverIfStale(lock: string): void {
  const holder = readOrUndefined(lock);
  let age: number;
  try {
    age = Date.now() - statSync(lock).mtimeMs;
  } catch {
    return;
  }
  const pid = Number(holder?.split(":")[0]);
  const gone = Number.isInteger(pid) && pid > 0 && !alive(pid);
  if (!gone && age < STALE_MS) return;
  const aside = `${lock}.${process.pid}.${randomBytes(4).toString("hex")}.stale`;
  try {
    renameSync(lock, aside);
  } catch {
    return;
  }
  if (readOrUndefined(aside) !== holder) {
    try {
      linkSync(aside, lock);
    } catch {
      // Someone holds a newer lock already: theirs stands.
    }
  }
  unlinkSync(aside);
}

/** Runs `work` while holding `lock` (created with O_EXCL), waiting for another holder. */
export function withFileLock<T>(lock: string, work: () => T): T {
  const token = `${process.pid}:${randomBytes(6).toString("hex")}`;
  const deadline = Date.now() + GIVE_UP_MS;
  mkdirSync(dirname(lock), { recursive: true });
  for (;;) {
    try {
      const fd = openSync(lock, "wx");
      try {
        writeSync(fd, token);
      } finally {
        closeSync(fd);
      }
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      takeOverIfStale(lock);
      if (Date.now() > deadline) {
        throw new Error(
          `${lock} stays locked by another workbook command; if none runs, delete it.`,
        );
      }
      sleep(2 + Math.random() * 8);
    }
  }
  try {
    return work();
  } finally {
    // Only our own lock: a holder taken over as stale must not remove its successor's.
    if (readOrUndefined(lock) === token) unlinkSync(lock);
  }
}
