/**
 * Process groups: everything the workbook starts (a check's vitest, a redis-server behind its
 * watchdog shell, a pipeline worker under tsx) runs detached in a group of its own, so that one
 * signal reaches the process and every child it started. Exit-time registration of a group is
 * src/check/cleanup.ts's killGroupOnExit().
 */
import { setTimeout as sleep } from "node:timers/promises";

/** Sends `signal` to every process in group `pid`; false when the group is already gone. */
export function signalGroup(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    return false;
  }
}

export function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits until the kernel reports group `pid` gone; false if it is still there after `ms`. */
export async function waitGroupGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (groupAlive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/** SIGKILLs group `pid` and waits (up to `ms`) until it is gone. */
export async function killGroup(pid: number, ms = 2000): Promise<boolean> {
  signalGroup(pid, "SIGKILL");
  return waitGroupGone(pid, ms);
}

/**
 * SIGTERM, `termMs` to finish cleanly, then SIGKILL and up to `killMs` more. The TERM is sent
 * before the first await, so stopping several groups with Promise.all signals them all at once.
 */
export async function stopGroup(pid: number, termMs: number, killMs = 2000): Promise<boolean> {
  if (!signalGroup(pid, "SIGTERM")) return true;
  if (await waitGroupGone(pid, termMs)) return true;
  return killGroup(pid, killMs);
}
