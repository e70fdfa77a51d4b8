/** `npm run lesson -- 08`: the lesson's text, plain when piped. */
import { expect, test } from "vitest";
import { loadLesson } from "../src/catalog.ts";
import { cli } from "./support/cli.ts";

test("prints the lesson's text without terminal codes when piped, ending with what to run next", () => {
  const lesson = loadLesson("08-consumer-groups");
  const run = cli(["lesson", "08"]);
  expect(run.code, run.err).toBe(0);
  expect(run.out).toContain(`08 · ${lesson.title}`);
  expect(run.out).toContain("Try it yourself");
  expect(run.out).toContain("npm run check -- 08");
  expect(run.out).not.toContain("\x1b");
});
