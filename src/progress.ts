import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { workspaceDir } from "./paths.ts";

/** Kept in the learner's workspace; deleting the file only forgets progress. */
export interface Progress {
  /** Lesson id -> when its check first passed (ISO time). */
  done: Record<string, string>;
  /** Lesson id -> the highest hint level shown. */
  hints: Record<string, number>;
  /** The lesson the learner last worked on. */
  current?: string;
}

export function progressFile(env: NodeJS.ProcessEnv = process.env): string {
  return join(workspaceDir(env), ".progress.json");
}

export function emptyProgress(): Progress {
  return { done: {}, hints: {} };
}

/** Reads progress; a missing or damaged file counts as a fresh start rather than an error. */
export function loadProgress(env: NodeJS.ProcessEnv = process.env): Progress {
  const file = progressFile(env);
  if (!existsSync(file)) return emptyProgress();
  try {
    const data = JSON.parse(readFileSync(file, "utf8")) as Partial<Progress>;
    return { ...emptyProgress(), ...data };
  } catch {
    return emptyProgress();
  }
}

export function saveProgress(progress: Progress, env: NodeJS.ProcessEnv = process.env): void {
  const file = progressFile(env);
  mkdirSync(workspaceDir(env), { recursive: true });
  // Write then rename, so a crash mid-write never leaves half a file.
  writeFileSync(`${file}.tmp`, `${JSON.stringify(progress, null, 2)}\n`);
  renameSync(`${file}.tmp`, file);
}

export function updateProgress(
  change: (progress: Progress) => void,
  env: NodeJS.ProcessEnv = process.env,
): Progress {
  const progress = loadProgress(env);
  change(progress);
  saveProgress(progress, env);
  return progress;
}
