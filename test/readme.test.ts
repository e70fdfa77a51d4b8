/** The README is the front door: its lesson list and commands must tell the truth. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, test } from "vitest";
import { loadCatalog } from "../src/catalog.ts";
import { ROOT } from "../src/paths.ts";

const readme = readFileSync(join(ROOT, "README.md"), "utf8");
const scripts = Object.keys(
  (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { scripts: object }).scripts,
);

test("lists every lesson with its number and title", () => {
  for (const lesson of loadCatalog()) {
    expect(readme).toContain(`| ${lesson.number} | ${lesson.title} |`);
  }
});

test("every `npm run X` it mentions exists", () => {
  const mentioned = [...readme.matchAll(/npm run ([\w-]+)/g)].map((m) => m[1]);
  for (const name of new Set(mentioned)) expect(scripts).toContain(name);
});

test("its test command is the one CI runs", () => {
  const ci = readFileSync(join(ROOT, ".ci", "run"), "utf8");
  expect(readme).toMatch(/^npm test\s+#/m);
  expect(ci.trim().split("\n").pop()).toBe("npm test");
});

const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
  engines: { node: string };
};

test("package-lock.json carries package.json's engines, so npm install leaves a clone clean", () => {
  const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as {
    packages: Record<string, { engines?: { node?: string } }>;
  };
  expect(lock.packages[""]?.engines?.node).toBe(pkg.engines.node);
});

test("says which Node versions it needs exactly as engines does", () => {
  expect(pkg.engines.node).toBe("^20.17 || ^22.13 || >=23.5");
  expect(readme).toContain(
    "Node.js 20.17 or a later 20.x, 22.13 or a later 22.x, or 23.5 and later",
  );
});
