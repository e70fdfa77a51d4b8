import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import type { Lesson } from "./catalog.ts";
import { workspaceDir } from "./paths.ts";

/** The learner's own copy of a lesson's exercise: workspace/NN-slug/<exercise>. */
export function learnerFile(lesson: Lesson, env: NodeJS.ProcessEnv = process.env): string {
  return join(workspaceDir(env), lesson.id, lesson.exercise);
}

/** Makes the learner's copy from the starter on first use; returns its path and whether it is new. */
export function ensureLearnerCopy(
  lesson: Lesson,
  env: NodeJS.ProcessEnv = process.env,
): { file: string; created: boolean } {
  const file = learnerFile(lesson, env);
  if (existsSync(file)) return { file, created: false };
  mkdirSync(dirname(file), { recursive: true });
  copyFileSync(lesson.starter, file);
  return { file, created: true };
}

/**
 * Keeps `file` as file.bak before it is replaced. An earlier .bak is not overwritten but moved
 * to the next free number (.bak.1, .bak.2, ...), so a second reset loses nothing either.
 */
function keepBackup(file: string, current: string): { backup: string; older?: string } {
  const backup = `${file}.bak`;
  let older: string | undefined;
  if (existsSync(backup)) {
    let n = 1;
    while (existsSync(`${backup}.${n}`)) n++;
    older = `${backup}.${n}`;
    renameSync(backup, older);
  }
  writeFileSync(backup, current);
  return { backup, older };
}

/** Restores the starter; the replaced code is kept (see keepBackup), so a reset by mistake loses nothing. */
export function resetLearnerCopy(
  lesson: Lesson,
  env: NodeJS.ProcessEnv = process.env,
): { file: string; backup?: string; older?: string } {
  const file = learnerFile(lesson, env);
  mkdirSync(dirname(file), { recursive: true });
  let kept: { backup?: string; older?: string } = {};
  if (existsSync(file)) {
    const current = readFileSync(file, "utf8");
    if (current !== readFileSync(lesson.starter, "utf8")) kept = keepBackup(file, current);
  }
  copyFileSync(lesson.starter, file);
  return { file, ...kept };
}

/**
 * Whether a file beside an exercise is a module the learner may have split it into (and so part
 * of what a check runs): not an editor's temporary or backup file, nor a reset's .bak copy.
 */
export function isModuleName(name: string): boolean {
  return /^[^.#~].*\.(ts|mts|cts|js|mjs)$/.test(name);
}

/** The exercise file and the modules beside it, exercise first (see isModuleName). */
export function sourcesBeside(file: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dirname(file));
  } catch {
    return [file];
  }
  const own = basename(file);
  const others = names.filter((name) => name !== own && isModuleName(name)).sort();
  return [file, ...others.map((name) => join(dirname(file), name))];
}
