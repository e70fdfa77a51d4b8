/** The runner's pure parts: layout to 80 columns, Markdown, diffs, paging, course decisions. */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import kleur from "kleur";
import { afterAll, describe, expect, test } from "vitest";
import type { Lesson } from "../../src/catalog.ts";
import { loadCatalog } from "../../src/catalog.ts";
import type { Verdict } from "../../src/check/verdict.ts";
import { explainRedisError, satisfies } from "../../src/doctor.ts";
import { ROOT } from "../../src/paths.ts";
import { loadProgress, progressFile } from "../../src/progress.ts";
import { nextHintLevel, suggestedLesson } from "../../src/ui/course.ts";
import { diffLines, renderDiff } from "../../src/ui/diff.ts";
import { lessonText, verdictLines } from "../../src/ui/lesson.ts";
import { renderMarkdown } from "../../src/ui/markdown.ts";
import { scroll } from "../../src/ui/pager.ts";
import { hardWrap, link, stripAnsi, visibleLength, wrapLine } from "../../src/ui/term.ts";
import { Rechecks } from "../../src/ui/watch.ts";
import { scratchDir } from "../support/sandbox.ts";

const colours = kleur.enabled;
kleur.enabled = true;
afterAll(() => {
  kleur.enabled = colours;
});

const widest = (lines: string[]) => Math.max(0, ...lines.map(visibleLength));

describe("fitting text to the terminal", () => {
  test("colour codes and links take no columns", () => {
    const text = `${kleur.red("red")} ${link("here", "https://example.com", true)}`;
    expect(visibleLength(text)).toBe(8);
    expect(stripAnsi(text)).toBe("red here");
  });

  test("wraps at word boundaries with a hanging indent, keeping colours and spacing", () => {
    const line = `  ${kleur.bold("Fix:")}  double ${"word ".repeat(30)}`;
    const lines = wrapLine(line, 40, "       ");
    expect(widest(lines)).toBeLessThanOrEqual(40);
    expect(stripAnsi(lines[0] ?? "")).toMatch(/^ {2}Fix: {2}double word/);
    expect(lines.slice(1).every((l) => l.startsWith("       "))).toBe(true);
    expect(stripAnsi(lines.join(" ")).replace(/\s+/g, " ").trim()).toBe(
      stripAnsi(line).replace(/\s+/g, " ").trim(),
    );
  });

  test("cuts words longer than a line, and code without losing a character", () => {
    const url = `see https://${"x".repeat(100)}.example.com now`;
    expect(widest(wrapLine(url, 30))).toBeLessThanOrEqual(30);
    const code = `    const x = ${"y".repeat(90)};`;
    const pieces = hardWrap(code, 40, "↪");
    expect(widest(pieces)).toBeLessThanOrEqual(40);
    expect(pieces.map((p, i) => (i === 0 ? p : p.slice(1))).join("")).toBe(code);
  });
});

describe("lesson text", () => {
  test("renders headings, lists, code and tables within the width", () => {
    const md = [
      "# Title",
      "",
      "A paragraph with `code`, **bold** and a [link](https://redis.io) that goes on and on and on and on.",
      "",
      "- one\n- two, which is long enough to wrap around the narrow width we give it here\n  - nested",
      "",
      "```ts\nconst client = createClient({ url: process.env.REDIS_URL, name: 'a-very-long-connection-name' });\n```",
      "",
      "| command | what it does |\n| --- | --- |\n| XADD | appends an entry to a stream, creating it when needed |",
    ].join("\n");
    const lines = renderMarkdown(md, 50);
    expect(widest(lines)).toBeLessThanOrEqual(50);
    const plain = lines.map(stripAnsi).join("\n");
    expect(plain).toContain("Title");
    expect(plain).toContain("• one");
    expect(plain).toContain("◦ nested");
    expect(plain).toContain("│ const client");
    expect(plain).toMatch(/XADD\s+│ appends/);
    expect(plain).not.toContain("**");
  });

  test("every lesson's text fits 80 columns", () => {
    for (const lesson of loadCatalog()) {
      const lines = lessonText(lesson, lesson.starter, 80);
      expect(widest(lines), lesson.id).toBeLessThanOrEqual(80);
      expect(lines.map(stripAnsi).join("\n")).toContain(lesson.title);
    }
  });
});

describe("solution diff", () => {
  test("shows removals, then additions, with context", () => {
    const mine = "a\nb\nc\nd\n";
    const theirs = "a\nB\nc\nd\ne\n";
    expect(diffLines(mine, theirs).map((l) => `${l.op}${l.text}`)).toEqual([
      " a",
      "-b",
      "+B",
      " c",
      " d",
      "+e",
    ]);
    const shown = renderDiff(mine, theirs, { before: "yours", after: "solution" }, 80).map(
      stripAnsi,
    );
    expect(shown.slice(0, 2)).toEqual(["--- yours", "+++ solution"]);
    expect(renderDiff(mine, mine, { before: "", after: "" }, 80)).toEqual([]);
  });

  test("compares code, not comments: the starter's doc comments are not shown as removed", () => {
    const mine = [
      "/**",
      " * TODO: publish the event as JSON.",
      " */",
      "export function publish() {",
      '  throw new Error("TODO");',
      "}",
    ].join("\n");
    const theirs = [
      "// Publishes the event.",
      "export function publish() {",
      "  return client.publish(channel, JSON.stringify(event));",
      "}",
    ].join("\n");
    expect(diffLines(mine, theirs).map((l) => `${l.op}${l.text}`)).toEqual([
      " export function publish() {",
      '-  throw new Error("TODO");',
      "+  return client.publish(channel, JSON.stringify(event));",
      " }",
    ]);
    const numbers = diffLines(mine, theirs).map((l) => [l.a, l.b]);
    expect(numbers[0]).toEqual([4, 2]);
  });

  test("uses the width it is given, so a wide terminal shows long lines whole", () => {
    const long = `  const x = ${"y".repeat(100)};`;
    const shown = renderDiff("a\n", `${long}\n`, { before: "a", after: "b" }, 140).map(stripAnsi);
    expect(shown).toContain(`+ ${long}`);
  });
});

describe("paging", () => {
  const key = (name: string, char = "") => ({ name, char, ctrl: false });
  test("space pages, b goes back, q closes, never beyond the ends", () => {
    expect(scroll(0, key("space"), 100, 20)).toBe(19);
    expect(scroll(19, key("b"), 100, 20)).toBe(0);
    expect(scroll(0, key("up"), 100, 20)).toBe(0);
    expect(scroll(75, key("space"), 100, 20)).toBe(80);
    expect(scroll(80, key("space"), 100, 20)).toBeUndefined();
    expect(scroll(10, key("q", "q"), 100, 20)).toBeUndefined();
    expect(scroll(10, key("g", "G"), 100, 20)).toBe(80);
  });
});

describe("course decisions", () => {
  const lessons = ["01-a", "02-b", "03-c"].map((id) => ({ id }) as Lesson);
  test("suggests the lesson in progress, else the next one to do", () => {
    expect(suggestedLesson(lessons, { done: {}, hints: {} })?.id).toBe("01-a");
    expect(suggestedLesson(lessons, { done: {}, hints: {}, current: "02-b" })?.id).toBe("02-b");
    const done = { "01-a": "t", "02-b": "t" };
    expect(suggestedLesson(lessons, { done, hints: {}, current: "02-b" })?.id).toBe("03-c");
    expect(
      suggestedLesson(lessons, { done: { "02-b": "t" }, hints: {}, current: "03-c" })?.id,
    ).toBe("03-c");
  });

  test("hints: first the highest seen, then one tier further, stopping at the last", () => {
    expect(nextHintLevel(0, 0, 3)).toBe(1);
    expect(nextHintLevel(2, 0, 3)).toBe(2);
    expect(nextHintLevel(2, 2, 3)).toBe(3);
    expect(nextHintLevel(3, 3, 3)).toBe(3);
  });

  test("a damaged progress file is a fresh start; a field of the wrong shape is dropped", () => {
    const scratch = scratchDir("progress");
    try {
      const env = { WORKBOOK_WORKSPACE: scratch.dir };
      mkdirSync(scratch.dir, { recursive: true });
      writeFileSync(progressFile(env), "{ not json");
      expect(loadProgress(env)).toEqual({ done: {}, hints: {} });
      writeFileSync(progressFile(env), JSON.stringify({ done: [], hints: { "01-a": 2 } }));
      expect(loadProgress(env)).toMatchObject({ done: {}, hints: { "01-a": 2 } });
    } finally {
      scratch.remove();
    }
  });
});

describe("verdict on the lesson screen", () => {
  test("hint commands become keys and the command line for next steps goes", () => {
    const verdict: Verdict = {
      lesson: "01-connect",
      title: "Connect safely",
      target: "learner",
      file: "/tmp/connect.ts",
      status: "failed",
      reason: "1 of 1 checks failed.",
      tests: [
        {
          name: "connects",
          status: "failed",
          message: "connect() is not written yet.",
          hint: 2,
        },
      ],
      output: [],
      durationMs: 1,
    };
    const text = verdictLines(verdict, 80).map(stripAnsi).join("\n");
    expect(text).toContain("Hint 2: press 2");
    expect(text).not.toContain("npm run");
  });
});

describe("doctor", () => {
  test("reads the engines range of package.json", () => {
    const range = ">=20.17 <21 || >=22.13";
    expect(satisfies("v20.20.2", range)).toBe(true);
    expect(satisfies("20.16.0", range)).toBe(false);
    expect(satisfies("21.7.0", range)).toBe(false);
    expect(satisfies("22.13.0", range)).toBe(true);
    expect(satisfies("24.1.0", range)).toBe(true);
  });

  test("understands caret ranges, and accepts the Node version running the tests", () => {
    const range = "^20.17 || ^22.13 || >=23.5";
    expect(satisfies("20.17.0", range)).toBe(true);
    expect(satisfies("21.0.0", range)).toBe(false);
    expect(satisfies("23.4.0", range)).toBe(false);
    expect(satisfies("23.5.0", range)).toBe(true);
    const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
    expect(satisfies(process.version, pkg.engines.node)).toBe(true);
  });

  test("turns connection errors into the exact fix", () => {
    const local = new URL("redis://127.0.0.1:1");
    const azure = new URL("redis://docs.redis.cache.windows.net:6380");
    expect(explainRedisError({ message: "connect ECONNREFUSED 127.0.0.1:1" }, local).fix).toMatch(
      /6380/,
    );
    expect(
      explainRedisError({ message: "WRONGPASS invalid username-password pair" }, local).fix,
    ).toMatch(/access key/);
    expect(explainRedisError({ message: "getaddrinfo ENOTFOUND x" }, local).problem).toMatch(
      /does not resolve/,
    );
    expect(explainRedisError({ message: "Socket closed unexpectedly" }, azure).fix).toMatch(
      /rediss:\/\//,
    );
    expect(
      explainRedisError({ message: "SSL routines::wrong version number" }, azure).problem,
    ).toMatch(/does not speak TLS/);
    expect(
      explainRedisError({ message: "NOPERM this user has no permissions" }, azure).fix,
    ).toMatch(/ACL SETUSER/);
  });
});

describe("re-checking on save", () => {
  test("ignores saves that change nothing and runs once more after a save mid-check", () => {
    let content = "v1";
    const rechecks = new Rechecks(() => content);
    rechecks.started();
    expect(rechecks.requested()).toBe(false); // saved, unchanged
    expect(rechecks.unchanged()).toBe(true);
    content = "v2";
    expect(rechecks.unchanged()).toBe(false);
    expect(rechecks.requested()).toBe(false); // changed while running: later
    expect(rechecks.finished()).toBe(true); // so run again now
    rechecks.started();
    expect(rechecks.finished()).toBe(false);
    expect(rechecks.requested()).toBe(false); // v2 is what was checked
    expect(rechecks.requested(true)).toBe(true); // the re-run key always checks
  });
});
