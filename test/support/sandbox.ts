import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
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

/** Processes whose environment contains `needle` (Linux): proof that nothing outlived a run. */
export function processesWithEnv(needle: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`, "latin1").includes(needle)) {
        found.push(Number(entry));
      }
    } catch {
      // the process ended while we looked, or is not ours to read
    }
  }
  return found;
}
