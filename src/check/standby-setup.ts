/**
 * The last setup file of a check's test process (see ./standby.ts). It loads what the check
 * file imports (node-redis, the kit, the fault kit...) while nobody is waiting yet, then holds
 * the run until the harness writes the go file. Only after that does vitest import the check
 * file, and with it the learner's module: a check always runs the file as it is at go time, in
 * a process no other run has used.
 */
import { existsSync, type FSWatcher, readFileSync, rmSync, watch, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { pathToFileURL } from "node:url";

/**
 * The check file's relative imports, in their order: importing them in that order evaluates
 * them (and registers their hooks) as the check file's own imports would have.
 */
function helpersOf(checkFile: string): string[] {
  const source = readFileSync(checkFile, "utf8");
  const found = [...source.matchAll(/^import\s[^;]*?from\s+"(\.\.?\/[^"]+)"/gm)];
  return found.map((m) => pathToFileURL(resolve(dirname(checkFile), m[1] ?? "")).href);
}

function goSignal(file: string): Promise<void> {
  return new Promise((done) => {
    let watcher: FSWatcher | undefined;
    const look = () => {
      if (!existsSync(file)) return;
      watcher?.close();
      clearInterval(poll);
      done();
    };
    try {
      watcher = watch(dirname(file), look);
      watcher.on("error", () => watcher?.close());
    } catch {
      // No change events here: the poll below still sees the file.
    }
    const poll = setInterval(look, 50);
    look();
  });
}

const go = process.env.WORKBOOK_GO;
const checkFile = process.env.WORKBOOK_CHECK_FILE;
if (go && checkFile) {
  await import("redis");
  for (const helper of helpersOf(checkFile)) await import(helper);
  // For the latency benchmark: from here on a save pays only for its own run.
  writeFileSync(`${go}.waiting`, "");
  await goSignal(go);
  rmSync(`${go}.waiting`, { force: true });
}
