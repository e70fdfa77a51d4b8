/**
 * A line diff (longest common subsequence) for "your code versus the solution". Exercise files
 * are a few hundred lines at most, so the simple quadratic table is fast enough and exact.
 */
import kleur from "kleur";
import { hardWrap } from "./term.ts";

export type DiffLine = { op: " " | "-" | "+"; text: string; a?: number; b?: number };

export function diffLines(before: string, after: string): DiffLine[] {
  const a = before.replace(/\n$/, "").split("\n");
  const b = after.replace(/\n$/, "").split("\n");
  const n = a.length;
  const m = b.length;
  // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
  const lcs = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    const row = lcs[i] as Uint32Array;
    const below = lcs[i + 1] as Uint32Array;
    for (let j = m - 1; j >= 0; j--) {
      row[j] = a[i] === b[j] ? (below[j + 1] ?? 0) + 1 : Math.max(below[j] ?? 0, row[j + 1] ?? 0);
    }
  }
  const out: DiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      out.push({ op: " ", text: a[i] ?? "", a: i + 1, b: j + 1 });
      i++;
      j++;
    } else if (i < n && (j === m || (lcs[i + 1]?.[j] ?? 0) >= (lcs[i]?.[j + 1] ?? 0))) {
      // Removals before additions, as `diff -u` shows a changed block.
      out.push({ op: "-", text: a[i] ?? "", a: i + 1 });
      i++;
    } else {
      out.push({ op: "+", text: b[j] ?? "", b: j + 1 });
      j++;
    }
  }
  return out;
}

export interface Hunk {
  /** First line of the hunk in `before` and in `after` (1-based). */
  aStart: number;
  bStart: number;
  lines: DiffLine[];
}

/** Groups changes with `context` unchanged lines around each, like `diff -u`. */
export function hunks(lines: DiffLine[], context = 3): Hunk[] {
  const changed = lines.map((line, index) => (line.op === " " ? -1 : index)).filter((i) => i >= 0);
  const result: Hunk[] = [];
  let current: { from: number; to: number } | undefined;
  const ranges: { from: number; to: number }[] = [];
  for (const index of changed) {
    const from = Math.max(index - context, 0);
    const to = Math.min(index + context, lines.length - 1);
    if (current && from <= current.to + 1) current.to = to;
    else {
      current = { from, to };
      ranges.push(current);
    }
  }
  for (const { from, to } of ranges) {
    const slice = lines.slice(from, to + 1);
    const firstA = slice.find((l) => l.a !== undefined)?.a ?? 0;
    const firstB = slice.find((l) => l.b !== undefined)?.b ?? 0;
    result.push({ aStart: firstA, bStart: firstB, lines: slice });
  }
  return result;
}

/** The diff as coloured lines of at most `width` columns; [] when the texts are the same. */
export function renderDiff(
  before: string,
  after: string,
  labels: { before: string; after: string },
  width: number,
): string[] {
  const found = hunks(diffLines(before, after));
  if (found.length === 0) return [];
  const out = [kleur.red(`--- ${labels.before}`), kleur.green(`+++ ${labels.after}`)];
  for (const hunk of found) {
    out.push(kleur.cyan(`@@ your line ${hunk.aStart}, solution line ${hunk.bStart} @@`));
    for (const line of hunk.lines) {
      const style =
        line.op === "-" ? kleur.red : line.op === "+" ? kleur.green : (s: string) => kleur.dim(s);
      for (const piece of hardWrap(`${line.op} ${line.text}`, width, `${line.op} ↪`)) {
        out.push(style(piece));
      }
    }
  }
  return out;
}
