import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { withFileLock } from "./file-lock.ts";
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

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value);

/** The entries of `value` that `keep` accepts: a hand-edited odd entry is dropped alone. */
function entries<T>(value: unknown, keep: (entry: unknown) => entry is T): Record<string, T> {
  if (!isRecord(value)) return {};
  return Object.fromEntries(
    Object.entries(value).filter((pair): pair is [string, T] => keep(pair[1])),
  );
}

const isText = (value: unknown): value is string => typeof value === "string";
const isLevel = (value: unknown): value is number =>
  typeof value === "number" && Number.isInteger(value) && value >= 1;
const isScore = (value: unknown): value is { score: number; total: number; at: string } =>
  isRecord(value) &&
  typeof value.score === "number" &&
  typeof value.total === "number" &&
  typeof value.at === "string";

/** Progress from parsed JSON, field by field; undefined when it is not an object at all. */
function fromJson(data: unknown): Progress | undefined {
  if (!isRecord(data)) return undefined;
  const progress: Progress = {
    ...data,
    done: entries(data.done, isText),
    hints: entries(data.hints, isLevel),
    current: isText(data.current) ? data.current : undefined,
  };
  if ("peeked" in data) progress.peeked = entries(data.peeked, isText);
  if ("quiz" in data) progress.quiz = entries(data.quiz, isScore);
  if (!isText(data.finished)) delete progress.finished;
  return progress;
}

/** The file's progress; "damaged" when it exists but is not a progress object. */
function readFile(file: string): Progress | "damaged" {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return emptyProgress();
    throw error;
  }
  try {
    return fromJson(JSON.parse(text)) ?? "damaged";
  } catch {
    return "damaged";
  }
}

/**
 * Moves a damaged file aside (.progress.json.damaged, then .damaged.2, ...) and says so: once,
 * since it is done under the lock and the file is gone afterwards.
 */
function setAside(file: string): void {
  let aside = `${file}.damaged`;
  for (let n = 2; existsSync(aside); n++) aside = `${file}.damaged.${n}`;
  renameSync(file, aside);
  const shown = relative(process.cwd(), aside) || aside;
  process.stderr.write(
    `Your progress file could not be read: it is kept as ${shown}, and progress starts afresh.\n`,
  );
}

/** Reads progress; a missing file is a fresh start, a damaged one is kept aside (see setAside). */
export function loadProgress(env: NodeJS.ProcessEnv = process.env): Progress {
  const read = readFile(progressFile(env));
  if (read !== "damaged") return read;
  return withFileLock(`${progressFile(env)}.lock`, () => readUnderLock(env));
}

/** Under the lock: the file may be replaced by another process, but not while we look. */
function readUnderLock(env: NodeJS.ProcessEnv): Progress {
  const file = progressFile(env);
  const read = readFile(file);
  if (read !== "damaged") return read;
  setAside(file);
  return emptyProgress();
}

export function saveProgress(progress: Progress, env: NodeJS.ProcessEnv = process.env): void {
  const file = progressFile(env);
  mkdirSync(workspaceDir(env), { recursive: true });
  // Write then rename, so a crash mid-write never leaves half a file; the name is this write's
  // own, so two processes never rename each other's half-written file.
  const temp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  writeFileSync(temp, `${JSON.stringify(progress, null, 2)}\n`);
  renameSync(temp, file);
}

/**
 * Reads, changes and writes progress under the lock, so updates from several commands at once
 * (a watch and a hint, say) all survive.
 */
export function updateProgress(
  change: (progress: Progress) => void,
  env: NodeJS.ProcessEnv = process.env,
): Progress {
  return withFileLock(`${progressFile(env)}.lock`, () => {
    const progress = readUnderLock(env);
    change(progress);
    saveProgress(progress, env);
    return progress;
  });
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
