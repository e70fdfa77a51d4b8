/**
 * Process groups: everything the workbook starts (a check's vitest, a redis-server behind its
 * watchdog shell, a pipeline worker under tsx) runs detached in a group of its own, so that one
 * signal reaches the process and every child it started. Exit-time registration of a group is
 * src/check/cleanup.ts's killGroupOnExit().
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
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

/**
 * Whether a process of group `pid` is still running. A zombie (exited, waiting for its new
 * parent to reap it) does not count: it holds no port or connection, and where PID 1 reaps
 * slowly (some containers and VMs) waiting for it added seconds to every check.
 */
export function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
  } catch {
    return false;
  }
  if (!existsSync("/proc/self/stat")) return true;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "latin1");
      // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(pgrp) === pid && state !== "Z") return true;
    } catch {
      // the process ended while we looked
    }
  }
  return false;
}

/**
 * Waits until the kernel reports group `pid` gone; false if it is still there after `ms`. A
 * SIGKILLed group is usually gone within a few milliseconds, and a verdict waits for it: the
 * first looks come soon, later ones every 20 ms.
 */
export async function waitGroupGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (let pause = 1; groupAlive(pid); pause = Math.min(pause * 2, 20)) {
    if (Date.now() > deadline) return false;
    await sleep(pause);
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

/** Processes (zombies aside) whose environment holds exactly `entry`, e.g. `NAME=value`. */
export function processesWithEnvEntry(entry: string): number[] {
  if (!existsSync("/proc/self/environ")) return [];
  const found: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (!readFileSync(`/proc/${name}/environ`, "latin1").split("\0").includes(entry)) continue;
      const stat = readFileSync(`/proc/${name}/stat`, "latin1");
      if (stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z") {
        found.push(Number(name));
      }
    } catch {
      // ended while we looked, or not ours to read
    }
  }
  return found;
}

/** The process group of `pid`, from /proc; undefined when it is gone or cannot be read. */
function groupOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
    const pgrp = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[2]);
    return pgrp > 0 ? pgrp : undefined;
  } catch {
    return undefined;
  }
}

/**
 * SIGKILLs every process whose environment holds `entry`, however it detached (a new group, a
 * new session, a double fork): children inherit the environment. Each one's process group goes
 * with it: a redis-server overwrites its environment with its title, so the server a check
 * started is found only through the watchdog shell that leads its group (and that, killed
 * alone, would leave the server running). Repeats while new ones appear (a process forking as
 * we kill it), for at most `ms`. Synchronous, so an exit hook can call it.
 */
export function killProcessesWithEnv(entry: string, ms = 1000): void {
  const deadline = Date.now() + ms;
  const ours = groupOf(process.pid);
  for (;;) {
    const found = processesWithEnvEntry(entry);
    if (found.length === 0 || Date.now() > deadline) return;
    for (const pid of found) {
      const group = groupOf(pid);
      if (group !== undefined && group !== ours) signalGroup(group, "SIGKILL");
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }
}
