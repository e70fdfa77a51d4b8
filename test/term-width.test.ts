/** Text on the terminal measured by what it takes on screen: wide characters, emoji, colour. */
import kleur from "kleur";
import { afterAll, expect, test } from "vitest";
import { hardWrap, stripAnsi, truncate, visibleLength, wrapLine } from "../src/ui/term.ts";

const colours = kleur.enabled;
kleur.enabled = true;
afterAll(() => {
  kleur.enabled = colours;
});

const widest = (lines: string[]) => Math.max(0, ...lines.map(visibleLength));

test("a CJK word and an emoji take two columns a character, a colour code none", () => {
  expect(visibleLength("契約書")).toBe(6);
  expect(visibleLength("done 🙂")).toBe(7);
  expect(visibleLength(kleur.red("failed"))).toBe(6);
});

test("wrapping counts them so: no line is wider than asked, and no word is lost", () => {
  const line = `  ${kleur.red("failed")} ${"契約書 🙂 contract ".repeat(6)}`;
  const lines = wrapLine(line, 24, "    ");
  expect(widest(lines)).toBeLessThanOrEqual(24);
  expect(lines.slice(1).every((l) => l.startsWith("    "))).toBe(true);
  expect(stripAnsi(lines.join(" ")).replace(/\s+/g, " ").trim()).toBe(
    stripAnsi(line).replace(/\s+/g, " ").trim(),
  );
  // The colour closes at the end of its word, not at the end of the line.
  expect(lines[0]).toContain(kleur.red("failed"));
});

test("code is cut between wide characters, never through one, and keeps every character", () => {
  const code = `const label = "${"契約".repeat(20)}";`;
  const pieces = hardWrap(code, 21, "↪");
  expect(widest(pieces)).toBeLessThanOrEqual(21);
  expect(pieces.map((p, i) => (i === 0 ? p : p.slice(1))).join("")).toBe(code);
});

test("truncation ends in … within the width, with its colour closed", () => {
  const cut = truncate(`${kleur.green("ok")} 契約書契約書 🙂🙂🙂 more`, 12);
  expect(visibleLength(cut)).toBeLessThanOrEqual(12);
  expect(stripAnsi(cut).endsWith("…")).toBe(true);
  expect(cut.startsWith(kleur.green("ok"))).toBe(true);
  expect(truncate("short", 12)).toBe("short");
});
