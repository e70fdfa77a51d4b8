/**
 * `npm test`: type-check, lint, then every vitest test, ending with one line
 * "N passed, N failed" (each of the first two steps counts as one test).
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "../src/paths.ts";

const bin = (name: string) => join(ROOT, "node_modules", ".bin", name);
let passed = 0;
let failed = 0;

function step(title: string, command: string, args: string[]): void {
  console.log(`\n▶ ${title}`);
  const result = spawnSync(command, args, { cwd: ROOT, stdio: "inherit" });
  if (result.status === 0) {
    passed++;
    console.log(`✓ ${title}`);
  } else {
    failed++;
    console.log(`✗ ${title}`);
  }
}

const only = process.argv.slice(2);
if (only.length === 0) {
  step("type-check (tsc --noEmit)", bin("tsc"), ["--noEmit"]);
  step("lint and format (biome check)", bin("biome"), ["check", "."]);
}

const report = join(ROOT, ".tmp", "vitest-report.json");
mkdirSync(join(ROOT, ".tmp"), { recursive: true });
rmSync(report, { force: true });
console.log("\n▶ tests (vitest)");
spawnSync(
  bin("vitest"),
  ["run", "--reporter=default", "--reporter=json", `--outputFile.json=${report}`, ...only],
  { cwd: ROOT, stdio: "inherit" },
);
if (existsSync(report)) {
  const results = JSON.parse(readFileSync(report, "utf8")) as {
    numPassedTests: number;
    numFailedTests: number;
    numTotalTests: number;
    testResults: { status: string; message?: string }[];
  };
  passed += results.numPassedTests;
  failed += results.numFailedTests;
  // A test file that fails to load reports no tests: count it, so it cannot pass silently.
  failed += results.testResults.filter((file) => file.status === "failed" && file.message).length;
  if (results.numTotalTests === 0) failed++;
} else {
  failed++;
  console.log("✗ vitest wrote no report");
}

console.log(`\n${passed} passed, ${failed} failed`);
process.exitCode = failed > 0 ? 1 : 0;
