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
  /** Lesson id -> when the solution was shown before the check had passed. */
  peeked?: Record<string, string>;
  /** Lesson id -> the last knowledge-check score. */
  quiz?: Record<string, { score: number; total: number; at: string }>;
  /** When the final re-check of every lesson passed. */
  finished?: string;
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
    const isRecord = (value: unknown): value is Record<string, never> =>
      typeof value === "object" && value !== null && !Array.isArray(value);
    if (!isRecord(data)) return emptyProgress();
    // A hand-edited file with a field of the wrong shape loses that field, not everything.
    return {
      ...data,
      done: isRecord(data.done) ? data.done : {},
      hints: isRecord(data.hints) ? data.hints : {},
      current: typeof data.current === "string" ? data.current : undefined,
    };
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

/** The lesson the learner is working on: the one `npm run check` with no number picks. */
export function setCurrent(lessonId: string, env: NodeJS.ProcessEnv = process.env): Progress {
  return updateProgress((p) => {
    p.current = lessonId;
  }, env);
}

/** The learner's own code passed: the lesson is done (since its first pass) and current. */
export function markPassed(lessonId: string, env: NodeJS.ProcessEnv = process.env): Progress {
  return updateProgress((p) => {
    p.done[lessonId] ??= new Date().toISOString();
    p.current = lessonId;
  }, env);
}

/** Hint `level` was shown: only the highest level seen is kept. */
export function markHintSeen(
  lessonId: string,
  level: number,
  env: NodeJS.ProcessEnv = process.env,
): Progress {
  return updateProgress((p) => {
    p.hints[lessonId] = Math.max(p.hints[lessonId] ?? 0, level);
    p.current = lessonId;
  }, env);
}

/** The solution was shown before the check passed. */
export function markPeeked(lessonId: string, env: NodeJS.ProcessEnv = process.env): Progress {
  return updateProgress((p) => {
    p.peeked = { ...p.peeked, [lessonId]: new Date().toISOString() };
  }, env);
}

/** Whether the learner has ever used the workbook here (progress exists). */
export function hasProgress(env: NodeJS.ProcessEnv = process.env): boolean {
  return existsSync(progressFile(env));
}
