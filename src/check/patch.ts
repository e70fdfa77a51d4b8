/**
 * Applies a unified diff (`diff -u`) to a text. Mistakes are stored as diffs against the
 * solution: each file shows exactly the one thing that is wrong, and a mistake that no longer
 * applies after the solution changes fails loudly instead of testing stale code.
 */
interface Hunk {
  oldStart: number;
  lines: string[];
}

function parseHunks(diff: string): Hunk[] {
  const hunks: Hunk[] = [];
  let current: Hunk | undefined;
  for (const line of diff.split("\n")) {
    const header = /^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@/.exec(line);
    if (header) {
      current = { oldStart: Number(header[1]), lines: [] };
      hunks.push(current);
    } else if (current && /^[ +-]/.test(line)) {
      current.lines.push(line);
    } else if (current && line === "") {
      // A blank context line whose leading space an editor trimmed.
      current.lines.push(" ");
    }
  }
  for (const hunk of hunks) {
    while (hunk.lines.at(-1) === " ") hunk.lines.pop();
  }
  return hunks;
}

export class PatchError extends Error {
  override name = "PatchError";
}

export function applyPatch(source: string, diff: string): string {
  const hunks = parseHunks(diff);
  if (hunks.length === 0) throw new PatchError("the diff has no hunks");
  const lines = source.split("\n");
  let offset = 0;
  for (const hunk of hunks) {
    const before = hunk.lines.filter((l) => !l.startsWith("+")).map((l) => l.slice(1));
    const after = hunk.lines.filter((l) => !l.startsWith("-")).map((l) => l.slice(1));
    const at = hunk.oldStart - 1 + offset;
    const matches = (start: number) => before.every((line, i) => lines[start + i] === line);
    if (!matches(at)) {
      throw new PatchError(
        `the hunk at line ${hunk.oldStart} no longer matches the solution: regenerate the diff`,
      );
    }
    lines.splice(at, before.length, ...after);
    offset += after.length - before.length;
  }
  return lines.join("\n");
}
