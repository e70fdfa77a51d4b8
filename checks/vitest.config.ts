import { defineConfig } from "vitest/config";

/** Runs one lesson's check against the file named by WORKBOOK_TARGET (see src/check/run.ts). */
export default defineConfig({
  test: {
    include: ["checks/**/*.check.ts"],
    pool: "forks",
    fileParallelism: false,
    testTimeout: 20_000,
    hookTimeout: 20_000,
    teardownTimeout: 2_000,
    watch: false,
  },
});
