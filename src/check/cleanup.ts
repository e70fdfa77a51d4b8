import { rmSync } from "node:fs";
import { killProcessesWithEnv, signalGroup } from "../process-group.ts";

/**
 * What the workbook leaves to tidy if it exits mid-run (Ctrl+C, an error): process groups to
 * kill (a check, a private redis-server, pipeline workers) and scratch directories to remove.
 * `exit` handlers must be synchronous, so this is the last line of defence after the normal
 * finally blocks.
 */
const groups = new Set<number>();
const dirs = new Set<string>();
const runs = new Set<string>();
let installed = false;

/**
 * Kills and removes everything registered, now. The exit hook calls it; so does a process about
 * to die by a signal (src/ui/exit.ts after a hangup), where no exit hook runs.
 */
export function cleanUpNow(): void {
  for (const pid of groups) signalGroup(pid, "SIGKILL");
  for (const id of runs) killProcessesWithEnv(`WORKBOOK_RUN_ID=${id}`, 200);
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  groups.clear();
  runs.clear();
  dirs.clear();
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on("exit", cleanUpNow);
}

/** Kills process group `pid` if we exit before calling the returned function (true the first time). */
export function killGroupOnExit(pid: number): () => boolean {
  install();
  groups.add(pid);
  return () => groups.delete(pid);
}

/** Removes `dir` if we exit before calling the returned function. */
export function removeOnExit(dir: string): () => boolean {
  install();
  dirs.add(dir);
  return () => dirs.delete(dir);
}

/**
 * Kills every process of check run `id` (found by WORKBOOK_RUN_ID in its environment, however it
 * detached) if we exit before calling the returned function.
 */
export function killRunOnExit(id: string): () => boolean {
  install();
  runs.add(id);
  return () => runs.delete(id);
}
