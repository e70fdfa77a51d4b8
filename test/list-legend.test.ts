/** `npm run list` explains each of its marks, the lesson in progress included. */
import { afterAll, expect, test } from "vitest";
import { loadCatalog } from "../src/catalog.ts";
import { cli } from "./support/cli.ts";
import { scratchDir } from "./support/sandbox.ts";

const scratch = scratchDir("list");
afterAll(() => scratch.remove());

test("the › of the lesson in progress has a legend line, like ✓ and ·", () => {
  const env = { WORKBOOK_WORKSPACE: scratch.dir };
  const lesson = loadCatalog()[0];
  if (!lesson) throw new Error("No lessons in the catalog.");
  // Reading a hint makes the lesson the one in progress.
  expect(cli(["hint", lesson.number, "--json"], env).code).toBe(0);
  const { code, out } = cli(["list"], env);
  expect(code).toBe(0);
  expect(out).toContain(`› ${lesson.number}  ${lesson.title}`);
  expect(out).toContain("✓ done  › in progress, not passed yet  · to do");
});
