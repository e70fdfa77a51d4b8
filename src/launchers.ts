/**
 * Notices when whatever started this command is gone: `npm run check` killed alone leaves its
 * shell and tsx running, so our parent stays alive and only npm is missing. The launchers are
 * our parent and, under npm, every ancestor up to npm itself (the processes whose environment
 * npm gave `npm_lifecycle_event`, and npm, the first without it).
 */
import { readFileSync } from "node:fs";

interface Launcher {
  pid: number;
  /** Field 22 of /proc/<pid>/stat: tells the process from a later one with the same pid. */
  start: string;
}

function stat(pid: number): { ppid: number; start: string } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "latin1");
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    if (fields[0] === "Z") return undefined;
    return { ppid: Number(fields[1]), start: fields[19] ?? "" };
  } catch {
    return undefined;
  }
}

function startedByNpm(pid: number): boolean {
  try {
    return `\0${readFileSync(`/proc/${pid}/environ`, "latin1")}`.includes("\0npm_lifecycle_event=");
  } catch {
    return false;
  }
}

/** Our launchers, nearest first; empty where there is no /proc. */
export function launchers(): Launcher[] {
  const found: Launcher[] = [];
  const underNpm = process.env.npm_lifecycle_event !== undefined;
  let pid = process.ppid;
  while (pid > 1) {
    const info = stat(pid);
    if (!info) break;
    found.push({ pid, start: info.start });
    if (!underNpm || !startedByNpm(pid)) break;
    pid = info.ppid;
  }
  return found;
}

/** Calls `onGone` once, when a launcher has ended; checks twice a second without keeping us alive. */
export function watchLaunchers(onGone: () => void, everyMs = 500): void {
  const watched = launchers();
  const parent = process.ppid;
  const timer = setInterval(() => {
    const gone =
      process.ppid !== parent || watched.some(({ pid, start }) => stat(pid)?.start !== start);
    if (!gone) return;
    clearInterval(timer);
    onGone();
  }, everyMs);
  timer.unref();
}
