/**
 * "Your code versus the solution", as code: lines that are only comments are left out of both
 * sides, because the starter's doc comments and the solution's notes differ everywhere and would
 * bury the few lines of code that matter. The diff itself is jsdiff's (Myers), not ours.
 */
import { diffArrays } from "diff";
import kleur from "kleur";
import { hardWrap } from "./term.ts";

export type DiffLine = { op: " " | "-" | "+"; text: string; a?: number; b?: number };

interface Numbered {
  text: string;
  line: number;
}

const COMMENT_ONLY = /^\s*(\/\/|\/\*|\*\/|\*(\s|$))/;

/** The code lines of a source file with their line numbers: comment-only lines dropped. */
export function codeLines(source: string): Numbered[] {
  return source
    .replace(/\n$/, "")
    .split("\n")
    .map((text, i) => ({ text, line: i + 1 }))
    .filter(({ text }) => !COMMENT_ONLY.test(text));
}

export function diffLines(before: string, after: string): DiffLine[] {
  const a = codeLines(before);
  const b = codeLines(after);
  const changes = diffArrays(a, b, { comparator: (x, y) => x.text === y.text });
  const out: DiffLine[] = [];
  let i = 0;
  let j = 0;
  for (const change of changes) {
    for (const _ of change.value) {
      if (change.removed) out.push({ op: "-", text: a[i]?.text ?? "", a: a[i++]?.line });
      else if (change.added) out.push({ op: "+", text: b[j]?.text ?? "", b: b[j++]?.line });
      else out.push({ op: " ", text: a[i]?.text ?? "", a: a[i++]?.line, b: b[j++]?.line });
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
