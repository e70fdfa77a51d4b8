/**
 * Pure helpers for text on a terminal: visible width, word wrap that keeps colour codes, links
 * and a progress bar. Everything the runner prints goes through wrap() so it fits 80 columns.
 */
import { pathToFileURL } from "node:url";
import kleur from "kleur";

/** Colour (SGR) codes and OSC 8 hyperlink brackets: they take no room on screen. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: terminal escape codes start with ESC.
const INVISIBLE = /\x1b\[[0-9;?]*[A-Za-z]|\x1b\]8;[^\x07\x1b]*(?:\x07|\x1b\\)/g;

export const MAX_WIDTH = 80;

export function stripAnsi(text: string): string {
  return text.replace(INVISIBLE, "");
}

export function visibleLength(text: string): number {
  return [...stripAnsi(text)].length;
}

/** The width to render for: the terminal's, but never wider than 80 columns. */
export function screenWidth(stream: { columns?: number } = process.stdout): number {
  const columns = stream.columns && stream.columns > 20 ? stream.columns : MAX_WIDTH;
  return Math.min(columns, MAX_WIDTH);
}

/**
 * The terminal's whole width, for what reads worse wrapped than wide (a diff of code): prose
 * keeps to screenWidth()'s 80 columns.
 */
export function terminalWidth(stream: { columns?: number } = process.stdout): number {
  return stream.columns && stream.columns > 20 ? stream.columns : MAX_WIDTH;
}

export function screenRows(stream: { rows?: number } = process.stdout): number {
  return stream.rows && stream.rows > 5 ? stream.rows : 24;
}

/** Splits text into visible characters, each carrying the invisible codes that precede it. */
function units(text: string): string[] {
  const out: string[] = [];
  let pending = "";
  let last = 0;
  for (const match of text.matchAll(INVISIBLE)) {
    for (const char of text.slice(last, match.index)) {
      out.push(pending + char);
      pending = "";
    }
    pending += match[0];
    last = (match.index ?? 0) + match[0].length;
  }
  for (const char of text.slice(last)) {
    out.push(pending + char);
    pending = "";
  }
  if (pending) out.push(pending);
  return out;
}

/** Cuts a word longer than a line into pieces of at most `width` visible characters. */
function hardSplit(word: string, width: number): string[] {
  const pieces: string[] = [];
  let piece = "";
  let length = 0;
  for (const unit of units(word)) {
    const visible = visibleLength(unit);
    if (length + visible > width && length > 0) {
      pieces.push(piece);
      piece = "";
      length = 0;
    }
    piece += unit;
    length += visible;
  }
  if (piece) pieces.push(piece);
  return pieces;
}

/**
 * Word-wraps one line to `width` visible columns. Continuation lines start with `indent`
 * (by default the line's own leading spaces), so wrapped list items and messages stay aligned.
 */
export function wrapLine(line: string, width: number, indent?: string): string[] {
  if (visibleLength(line) <= width) return [line];
  const lead = /^\s*/.exec(stripAnsi(line))?.[0] ?? "";
  const hanging = indent ?? lead;
  const room = Math.max(width - visibleLength(hanging), 10);
  const body = line.trimStart();
  // Words at even indexes, the spaces between them at odd ones: spacing inside a line is kept.
  const parts = body.split(/( +)/);
  const lines: string[] = [];
  let current = line.slice(0, line.length - body.length);
  let currentLength = visibleLength(current);
  let fresh = true;
  const flush = () => {
    lines.push(current.trimEnd());
    current = hanging;
    currentLength = visibleLength(hanging);
    fresh = true;
  };
  for (let i = 0; i < parts.length; i += 2) {
    const word = parts[i] ?? "";
    if (word === "") continue;
    const gap = fresh ? "" : (parts[i - 1] ?? " ");
    const length = visibleLength(word);
    if (currentLength + gap.length + length <= width) {
      current += gap + word;
      currentLength += gap.length + length;
      fresh = false;
      continue;
    }
    if (!fresh) flush();
    if (length <= width - currentLength) {
      current += word;
      currentLength += length;
      fresh = false;
      continue;
    }
    // Longer than a whole line (a URL, a long command): cut it.
    const pieces = hardSplit(word, Math.max(width - currentLength, 1));
    current += pieces.shift() ?? "";
    for (const piece of hardSplit(pieces.join(""), room)) {
      flush();
      current += piece;
    }
    currentLength = visibleLength(current);
    fresh = false;
  }
  lines.push(current.trimEnd());
  return lines;
}

/**
 * Cuts a line of code into pieces of `width` columns, keeping every space: code cannot be
 * re-flowed like prose. Continuation pieces start with `continuation`.
 */
export function hardWrap(line: string, width: number, continuation = ""): string[] {
  if (visibleLength(line) <= width) return [line];
  const [first = "", ...rest] = hardSplit(line, width);
  const room = Math.max(width - visibleLength(continuation), 1);
  return [first, ...hardSplit(rest.join(""), room).map((piece) => continuation + piece)];
}

/** Wraps every line of a block of text. */
export function wrap(text: string, width: number): string[] {
  return text.split("\n").flatMap((line) => wrapLine(line, width));
}

/** Cuts a line at `width` visible columns, ending with "…" when something was cut. */
export function truncate(line: string, width: number): string {
  if (visibleLength(line) <= width) return line;
  const kept = units(line).reduce(
    (acc, unit) => {
      const length = visibleLength(unit);
      if (acc.length + length <= width - 1) {
        acc.text += unit;
        acc.length += length;
      }
      return acc;
    },
    { text: "", length: 0 },
  );
  return `${kept.text}…${kleur.enabled ? "\x1b[0m" : ""}`;
}

/**
 * An OSC 8 hyperlink: terminals that know it make `text` clickable, the others show `text`.
 * Only written to a terminal, so piped output and logs stay plain.
 */
export function link(text: string, url: string, tty = Boolean(process.stdout.isTTY)): string {
  if (!tty || process.env.TERM === "dumb") return text;
  return `\x1b]8;;${url}\x1b\\${text}\x1b]8;;\x1b\\`;
}

export function fileLink(text: string, file: string, tty?: boolean): string {
  return link(text, pathToFileURL(file).href, tty);
}

/** [██████░░░░░░] 3 of 13 lessons done */
export function progressBar(done: number, total: number, width = 24): string {
  const filled = total === 0 ? 0 : Math.round((done / total) * width);
  const bar = kleur.green("█".repeat(filled)) + kleur.dim("░".repeat(width - filled));
  return `${bar} ${done} of ${total} ${total === 1 ? "lesson" : "lessons"} done`;
}

/** Lays out short items ("r run again", ...) on as few lines of `width` as they need. */
export function flow(items: string[], width: number, separator = " · "): string[] {
  const lines: string[] = [];
  let current = "";
  for (const item of items) {
    const joined = current ? `${current}${separator}${item}` : item;
    if (current && visibleLength(joined) > width) {
      lines.push(current);
      current = item;
    } else current = joined;
  }
  if (current) lines.push(current);
  return lines;
}

export function rule(width: number): string {
  return kleur.dim("─".repeat(width));
}
