import { existsSync, readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";
import {
  findLesson,
  lessonDirs,
  loadCatalog,
  parseLessonMeta,
  parseMistakeHeader,
} from "../src/catalog.ts";

const lessons = loadCatalog();

/** The names a module exports: `export function x`, `export const x`, `export type X`, ... */
function exportedNames(source: string): string[] {
  const names = [
    ...source.matchAll(
      /^export\s+(?:async\s+)?(?:function\*?|const|let|class|type|interface|enum)\s+(\w+)/gm,
    ),
  ].map((m) => m[1] ?? "");
  return [...new Set(names)].sort();
}

describe("the catalog", () => {
  test("has lessons numbered 01, 02, ... without gaps", () => {
    expect(lessons.length).toBeGreaterThanOrEqual(2);
    expect(lessons.map((l) => l.number)).toEqual(
      lessons.map((_, i) => String(i + 1).padStart(2, "0")),
    );
  });

  test("has a lesson.json in every lesson directory", () => {
    expect(lessonDirs()).toEqual(lessons.map((l) => l.id));
  });

  test("has unique slugs", () => {
    const slugs = lessons.map((l) => l.slug);
    expect(new Set(slugs).size).toBe(slugs.length);
  });

  test("finds a lesson by number, padded number, id or slug", () => {
    const first = lessons[0];
    expect(first).toBeDefined();
    if (!first) return;
    expect(findLesson(lessons, "1")).toBe(first);
    expect(findLesson(lessons, first.number)).toBe(first);
    expect(findLesson(lessons, first.id)).toBe(first);
    expect(findLesson(lessons, first.slug)).toBe(first);
    expect(findLesson(lessons, "99")).toBeUndefined();
  });

  test("rejects lesson metadata that is not JSON or lacks fields, naming the file", () => {
    expect(() => parseLessonMeta("{", "lessons/x/lesson.json")).toThrow(/lessons\/x\/lesson.json/);
    expect(() => parseLessonMeta('{"title":"t"}', "lessons/x/lesson.json")).toThrow(/summary/);
  });

  test("reads a mistake's description and expected message from its header", () => {
    const header = parseMistakeHeader("// mistake: Forgets XACK.\n// expect: still pending\nx");
    expect(header).toEqual({ description: "Forgets XACK.", expect: "still pending" });
  });
});

describe.each(lessons.map((l) => [l.id, l] as const))("lesson %s", (_id, lesson) => {
  test("has lesson text", () => {
    expect(existsSync(lesson.readme), `${lesson.readme} is missing`).toBe(true);
    expect(readFileSync(lesson.readme, "utf8").length).toBeGreaterThan(500);
  });

  test("has a starter with TODO markers", () => {
    expect(readFileSync(lesson.starter, "utf8")).toMatch(/TODO/);
  });

  test("has a solution with the same exports as the starter and no TODO left", () => {
    const solution = readFileSync(lesson.solution, "utf8");
    expect(solution).not.toMatch(/TODO/);
    expect(exportedNames(solution)).toEqual(exportedNames(readFileSync(lesson.starter, "utf8")));
  });

  test("has a check", () => {
    expect(existsSync(lesson.check), `no *.check.ts in checks/${lesson.id}`).toBe(true);
  });

  test("has at least two tiered hints and what the learner will have learned", () => {
    expect(lesson.hints.length).toBeGreaterThanOrEqual(2);
    for (const hint of lesson.hints) {
      expect(["idea", "api", "answer"]).toContain(hint.level);
      expect(hint.text.length).toBeGreaterThan(20);
    }
    expect(lesson.objectives.length).toBeGreaterThan(0);
  });

  test("has mistakes, each describing itself and naming the message it must get", () => {
    expect(lesson.mistakes.length).toBeGreaterThanOrEqual(1);
    for (const mistake of lesson.mistakes) {
      expect(mistake.description, `${mistake.file} needs "// mistake: ..."`).not.toBe("");
      expect(mistake.expect, `${mistake.file} needs "// expect: ..."`).not.toBe("");
    }
  });

  test("names only tests its check has among those that must run alone", () => {
    const source = readFileSync(lesson.check, "utf8");
    for (const name of lesson.alone ?? []) {
      expect(source.includes(JSON.stringify(name)), `"${name}" in ${lesson.check}`).toBe(true);
    }
    expect(lesson.alone === undefined || (lesson.shards ?? 1) > 1).toBe(true);
  });

  test("describes each right-answer variant it must pass", () => {
    for (const variant of lesson.variants) {
      expect(variant.description, `${variant.file} needs "# variant: ..."`).not.toBe("");
    }
  });
});
