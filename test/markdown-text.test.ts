/**
 * Lesson text rendered for the terminal loses no words: placeholders such as `<db>` or
 * `<stage>` once vanished because the renderer took them for HTML.
 */
import { readFileSync } from "node:fs";
import { expect, test } from "vitest";
import { loadCatalog } from "../src/catalog.ts";
import { renderMarkdown } from "../src/ui/markdown.ts";

// biome-ignore lint/suspicious/noControlCharactersInRegex: ANSI escape codes are what we strip.
const ANSI = /\x1b\[[0-9;]*m|\x1b\]8;;[^\x07]*\x07/g;

function words(text: string): string[] {
  return text.match(/[A-Za-z0-9]+/g) ?? [];
}

test.each(loadCatalog().map((l) => [l.id, l] as const))(
  "lesson %s: every word of its text and goals is on screen",
  (_id, lesson) => {
    const source = [readFileSync(lesson.readme, "utf8"), ...lesson.objectives].join("\n\n");
    const rendered = renderMarkdown(source, 200).join("\n").replace(ANSI, "");
    const shown = new Map<string, number>();
    for (const w of words(rendered)) shown.set(w, (shown.get(w) ?? 0) + 1);
    // Comments are for authors; a code fence's language tag and a link's definition line are
    // not shown (the link itself shows its address).
    const meant = source
      .replace(/<!--[\s\S]*?-->/g, "")
      .replace(/^(\s*```)\w+/gm, "$1")
      .replace(/^\[[^\]]+\]:\s+\S+$/gm, "");
    // Counted, not just found: a lost "<db>" must not hide behind a "db" elsewhere.
    const lost = words(meant).filter((w) => {
      const left = shown.get(w) ?? 0;
      shown.set(w, left - 1);
      return left <= 0;
    });
    expect([...new Set(lost)]).toEqual([]);
  },
);

test("angle-bracket placeholders are shown as written", () => {
  const out = renderMarkdown("Listen on __keyevent@<db>__:expired for docs:status:<stage>.", 80)
    .join("\n")
    .replace(ANSI, "");
  expect(out).toContain("<db>");
  expect(out).toContain("docs:status:<stage>");
});
