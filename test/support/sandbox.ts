import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "../../src/paths.ts";

/**
 * A scratch directory inside the repository: learner files import `redis`, which only resolves
 * from inside it. .tmp/ is git-ignored.
 */
export function scratchDir(label: string): { dir: string; remove(): void } {
  const parent = join(ROOT, ".tmp");
  mkdirSync(parent, { recursive: true });
  const dir = mkdtempSync(join(parent, `${label}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

// Linux process lookups for "nothing is left running" (the tests run where /proc exists).

/** Every process on the machine, this one included. */
function pids(): number[] {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number);
}

/** A file under /proc/<pid>/, or undefined: the process ended while we looked, or is not ours. */
function procFile(pid: number, name: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/${name}`, "latin1");
  } catch {
    return undefined;
  }
}

/** Processes whose environment contains `needle`: proof that nothing outlived a run. */
export function processesWithEnv(needle: string): number[] {
  return pids().filter(
    (pid) => pid !== process.pid && (procFile(pid, "environ")?.includes(needle) ?? false),
  );
}

function stat(pid: number): { ppid: number; state: string } | undefined {
  const text = procFile(pid, "stat");
  if (text === undefined) return undefined;
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so cut at the last ")".
  const [state = "", ppid = "0"] = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { ppid: Number(ppid), state };
}

/**
 * Running processes whose working directory was inside a check run's scratch directory that
 * has since been removed: what a check started (its own redis-server, say) and nobody stopped.
 * A redis-server overwrites its environment with its title, so processesWithEnv() misses it.
 */
export function processesInRemovedCheckScratch(): string[] {
  const found: string[] = [];
  for (const pid of pids()) {
    let cwd: string;
    try {
      cwd = readlinkSync(`/proc/${pid}/cwd`);
    } catch {
      continue;
    }
    if (/\/workbook-check-[^/ ]+(\/.*)? \(deleted\)$/.test(cwd) && alive(pid)) {
      found.push(`${pid} ${commandOf(pid)} in ${cwd}`);
    }
  }
  return found;
}

/** Running, not just a zombie waiting to be reaped. */
export function alive(pid: number): boolean {
  const info = stat(pid);
  return info !== undefined && info.state !== "Z";
}

export function commandOf(pid: number): string {
  return (procFile(pid, "cmdline") ?? "").replace(/\0/g, " ").trim();
}

/** The processes and all their descendants. */
export function family(roots: number[]): number[] {
  const children = new Map<number, number[]>();
  for (const pid of pids()) {
    const info = stat(pid);
    if (info) children.set(info.ppid, [...(children.get(info.ppid) ?? []), pid]);
  }
  const found = new Set<number>();
  const visit = (pid: number) => {
    if (found.has(pid)) return;
    found.add(pid);
    for (const child of children.get(pid) ?? []) visit(child);
  };
  for (const root of roots) visit(root);
  return [...found];
}

/**
 * A marker for the environment of everything a test starts (children inherit it), and the
 * environment entry that carries it: processesWithEnv(mark) finds whatever is still running.
 */
export function marker(): { mark: string; env: Record<string, string> } {
  const value = Math.random().toString(36).slice(2);
  return { mark: `WORKBOOK_TEST_MARK=${value}`, env: { WORKBOOK_TEST_MARK: value } };
}

/** SIGKILLs whatever carries `mark`: a failed test must not leave its processes to the next. */
export function killMarked(mark: string): void {
  for (const pid of processesWithEnv(mark)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
}

/** What the workbook left in a temporary directory: its own entries (tsx's cache is not ours). */
export function workbookLeftovers(tmp: string): string[] {
  return readdirSync(tmp).filter((name) => !name.startsWith("tsx-"));
}
