import { defineConfig } from "vitest/config";

/** Runs one lesson's check against the file named by WORKBOOK_TARGET (see src/check/run.ts). */
export default defineConfig({
  test: {
    include: ["checks/**/*.check.ts"],
    setupFiles: ["checks/test-results.ts"],
    pool: "forks",
    fileParallelism: false,
    // Each test's own limit, well inside the run's (lesson.json timeoutMs): one test that never
    // returns fails by itself and the others still run. Tests of the harness set it lower.
    testTimeout: Number(process.env.WORKBOOK_TEST_TIMEOUT_MS) || 20_000,
    // Tests of the harness run one test of a check by its name, to stay cheap.
    testNamePattern: process.env.WORKBOOK_ONLY_TEST,
    hookTimeout: 20_000,
    teardownTimeout: 2_000,
    watch: false,
  },
});
