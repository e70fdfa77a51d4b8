/**
 * Temporary directories the workbook makes (a check's scratch, a private server's data). Each
 * records the process that owns it, so that a later run can remove the ones a killed or
 * timed-out run left behind without ever touching those of a run still alive.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const OWNER_FILE = "workbook-owner";
const OURS = /^workbook-(check|redis)-/;

/**
 * When a process started, from /proc/<pid>/stat (field 22); with the pid it tells our owner
 * from a later process that got the same pid. Undefined where there is no /proc.
 */
export function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, it just is not ours to signal.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A new directory `<tmp>/workbook-<kind>-XXXXXX` owned by this process. */
export function makeScratch(kind: "check" | "redis"): string {
  const dir = mkdtempSync(join(tmpdir(), `workbook-${kind}-`));
  const owner = { pid: process.pid, start: startTime(process.pid) };
  writeFileSync(join(dir, OWNER_FILE), JSON.stringify(owner));
  return dir;
}

/** Makes process `pid` the owner of `dir`: it is swept only once that process is gone. */
export function handOverScratch(dir: string, pid: number): void {
  writeFileSync(join(dir, OWNER_FILE), JSON.stringify({ pid, start: startTime(pid) }));
}

/** Whether the process recorded in `dir` is gone; false when nothing is recorded. */
function ownerGone(dir: string): boolean {
  let owner: { pid?: unknown; start?: unknown };
  try {
    owner = JSON.parse(readFileSync(join(dir, OWNER_FILE), "utf8"));
  } catch {
    // No record (still being made, or not made by a workbook that records it): not ours to judge.
    return false;
  }
  if (typeof owner.pid !== "number") return false;
  if (!running(owner.pid)) return true;
  return owner.start !== undefined && startTime(owner.pid) !== owner.start;
}

/** Removes the workbook-check-* and workbook-redis-* directories of runs that no longer exist. */
export function sweepDeadScratch(parent = tmpdir()): string[] {
  let entries: string[];
  try {
    entries = readdirSync(parent).filter((name) => OURS.test(name));
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of entries) {
    const dir = join(parent, name);
    if (!ownerGone(dir)) continue;
    rmSync(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}

let swept = false;

/** sweepDeadScratch() once per process, before its first scratch directory. */
export function sweepOnce(): void {
  if (swept) return;
  swept = true;
  sweepDeadScratch();
}
