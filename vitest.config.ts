import { defineConfig } from "vitest/config";

/** The workbook's own tests (npm test). Lesson checks have their own config in checks/. */
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    pool: "forks",
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // Each self-verification test starts its own redis-server and check process: two at a time
    // keeps a 2-core machine busy without starving the checks' own timeouts.
    maxWorkers: 2,
    maxConcurrency: 2,
    watch: false,
  },
});
