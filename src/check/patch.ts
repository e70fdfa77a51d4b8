/**
 * Applies a unified diff (`diff -u`) to a text, with jsdiff. Mistakes are stored as diffs
 * against the solution: each file shows exactly the one thing that is wrong, and a mistake that
 * no longer applies after the solution changes fails loudly instead of testing stale code.
 */
import { applyPatch as apply, parsePatch } from "diff";

export class PatchError extends Error {
  override name = "PatchError";
}

export function applyPatch(source: string, diff: string): string {
  let patch: ReturnType<typeof parsePatch>[number] | undefined;
  try {
    [patch] = parsePatch(diff);
  } catch (error) {
    throw new PatchError(`the diff is malformed (${(error as Error).message})`);
  }
  const first = patch?.hunks[0];
  if (!patch || !first) throw new PatchError("the diff has no hunks");
  const result = apply(source, patch);
  if (result === false) {
    throw new PatchError(
      `a hunk (the first is at line ${first.oldStart}) no longer matches the solution: regenerate the diff`,
    );
  }
  return result;
}
