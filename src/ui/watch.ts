import { type FSWatcher, readFileSync, unwatchFile, watch, watchFile } from "node:fs";
import { basename, dirname } from "node:path";
import { isModuleName, sourcesBeside } from "../workspace.ts";

/** Editors save in steps (write a temp file, rename it over): wait for the dust to settle. */
const SETTLE_MS = 50;

/**
 * Calls `onChange` shortly after `file`, or a module beside it (a learner may split an exercise
 * into several), is saved. It watches the directory rather than the file,
 * because editors that save by renaming replace the file's inode, and a watch on the old inode
 * goes quiet. A one-second stat poll backs it up where change events never come (some network
 * and container mounts); the runner's re-run key covers the rest. Returns a stop function.
 */
export function watchForSaves(file: string, onChange: () => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  const changed = () => {
    clearTimeout(timer);
    timer = setTimeout(onChange, SETTLE_MS);
  };
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(dirname(file), (_event, name) => {
      if (name === null || name === basename(file) || isModuleName(name)) changed();
    });
    watcher.on("error", () => watcher?.close());
  } catch {
    // No change events here: the poll below still notices saves.
  }
  const poll = (current: { mtimeMs: number }, previous: { mtimeMs: number }) => {
    if (current.mtimeMs !== previous.mtimeMs) changed();
  };
  watchFile(file, { interval: 1000 }, poll);
  return () => {
    clearTimeout(timer);
    watcher?.close();
    unwatchFile(file, poll);
  };
}

/**
 * What a check of `file` runs, as one text: the exercise and the modules beside it, so that a
 * save to either counts as a change. Empty when the exercise cannot be read.
 */
export function readSources(file: string): string {
  return sourcesBeside(file)
    .map((source) => {
      try {
        return `${basename(source)}\n${readFileSync(source, "utf8")}`;
      } catch {
        return "";
      }
    })
    .join("\0");
}

/**
 * When a save should start a check: a save that changes nothing is ignored, and a save (or a
 * re-run key) during a check runs it once more when that check finishes, so the last verdict
 * is always about the file as it is now.
 */
export class Rechecks {
  #running = false;
  #again = false;
  #checked: string | undefined;

  constructor(private readonly read: () => string) {}

  get running(): boolean {
    return this.#running;
  }

  /** A check starts now, on the file's current content. */
  started(): void {
    this.#running = true;
    this.#again = false;
    this.#checked = this.read();
  }

  /** The file is what the last check started on (a save that changed nothing, or our own write). */
  unchanged(): boolean {
    return this.read() === this.#checked;
  }

  /** The learner asked for a check (`force`) or saved: true when one should start now. */
  requested(force = false): boolean {
    if (!force && this.unchanged()) return false;
    if (this.#running) {
      this.#again = true;
      return false;
    }
    return true;
  }

  /** The check finished: true when another should start at once. */
  finished(): boolean {
    this.#running = false;
    return this.#again;
  }
}
