import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root, found from this file so commands work from any directory. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

export const LESSONS_DIR = join(ROOT, "lessons");
export const SOLUTIONS_DIR = join(ROOT, "solutions");
export const CHECKS_DIR = join(ROOT, "checks");

/**
 * The learner's own copies live outside the course material so that editing them never breaks
 * the project's tests. Tests point WORKBOOK_WORKSPACE at a temporary directory.
 */
export function workspaceDir(env: NodeJS.ProcessEnv = process.env): string {
  return resolve(env.WORKBOOK_WORKSPACE ?? join(ROOT, "workspace"));
}
