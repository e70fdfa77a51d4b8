/**
 * Pure helpers for text on a terminal: visible width, word wrap that keeps colour codes, links
 * and a progress bar. Everything the runner prints goes through wrap() so it fits 80 columns.
 * Widths and wrapping come from string-width and wrap-ansi, which know wide characters (CJK,
 * emoji) and escape codes; what is left here is layout of our own: a hanging indent, a
 * continuation mark for code, truncation with "…".
 */
import { pathToFileURL } from "node:url";
import { stripVTControlCharacters } from "node:util";
import kleur from "kleur";
import stringWidth from "string-width";
import wrapAnsi from "wrap-ansi";

export const MAX_WIDTH = 80;

/** Without colour (SGR) codes and OSC 8 hyperlink brackets: they take no room on screen. */
export function stripAnsi(text: string): string {
  return stripVTControlCharacters(text);
}

/** Columns on screen: a CJK character or an emoji takes two, an escape code none. */
export function visibleLength(text: string): number {
  return stringWidth(text);
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

/** Rows of at most `width` columns: at spaces (words longer than a row are cut), or anywhere. */
function rows(text: string, width: number, words: boolean): string[] {
  return wrapAnsi(text, Math.max(width, 1), { hard: true, wordWrap: words, trim: words }).split(
    "\n",
  );
}

/**
 * Wraps `text` to `width` columns with a first row that starts with `lead` and the others with
 * `hanging`: the first row is cut at its own width, and what follows is wrapped again at the
 * narrower or wider width of the continuation rows.
 */
function hanging(text: string, width: number, lead: string, hang: string, words: boolean) {
  const [first = "", ...rest] = rows(text, width - visibleLength(lead), words);
  if (rest.length === 0) return [lead + first];
  const room = Math.max(width - visibleLength(hang), 10);
  const remainder = rows(rest.join(words ? " " : ""), room, words);
  return [lead + first, ...remainder.map((row) => hang + row)];
}

/**
 * Word-wraps one line to `width` visible columns. Continuation lines start with `indent`
 * (by default the line's own leading spaces), so wrapped list items and messages stay aligned.
 */
export function wrapLine(line: string, width: number, indent?: string): string[] {
  if (visibleLength(line) <= width) return [line];
  const body = line.trimStart();
  const lead = line.slice(0, line.length - body.length);
  return hanging(body, width, lead, indent ?? lead, true).map((row) => row.trimEnd());
}

/**
 * Cuts a line of code into pieces of `width` columns, keeping every space: code cannot be
 * re-flowed like prose. Continuation pieces start with `continuation`.
 */
export function hardWrap(line: string, width: number, continuation = ""): string[] {
  if (visibleLength(line) <= width) return [line];
  return hanging(line, width, "", continuation, false);
}

/** Wraps every line of a block of text. */
export function wrap(text: string, width: number): string[] {
  return text.split("\n").flatMap((line) => wrapLine(line, width));
}

/** Cuts a line at `width` visible columns, ending with "…" when something was cut. */
export function truncate(line: string, width: number): string {
  if (visibleLength(line) <= width) return line;
  return `${rows(line, width - 1, false)[0] ?? ""}…`;
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
