import { defineConfig } from "vitest/config";

/** The workbook's own tests (npm test). Lesson checks have their own config in checks/. */
export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    pool: "forks",
    testTimeout: 120_000,
    hookTimeout: 60_000,
    maxWorkers: 2,
    // Each self-verification run starts its own redis-server and check process and spends most
    // of its time waiting on Redis: three at a time keep a 2-core machine busy without starving
    // the checks' own timeouts.
    maxConcurrency: 3,
    watch: false,
  },
});
