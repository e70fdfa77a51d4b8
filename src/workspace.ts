import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
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
 * Restores the starter. The replaced code is kept beside it (exercise.ts.bak), so a reset by
 * mistake loses nothing.
 */
export function resetLearnerCopy(
  lesson: Lesson,
  env: NodeJS.ProcessEnv = process.env,
): { file: string; backup?: string } {
  const file = learnerFile(lesson, env);
  mkdirSync(dirname(file), { recursive: true });
  let backup: string | undefined;
  if (existsSync(file)) {
    const current = readFileSync(file, "utf8");
    if (current !== readFileSync(lesson.starter, "utf8")) {
      backup = `${file}.bak`;
      writeFileSync(backup, current);
    }
  }
  copyFileSync(lesson.starter, file);
  return { file, backup };
}
