import { defineConfig } from "vitest/config";
import { BaseSequencer, type TestSpecification } from "vitest/node";

/**
 * The self-verification file runs every lesson's check several times and takes most of the
 * suite's time. Left to the default order (smaller files first on a fresh clone) it started
 * last and ran alone; started first, the other files run beside it.
 */
class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const longest = (spec: TestSpecification) => spec.moduleId.endsWith("test/lessons.test.ts");
    return [...sorted.filter(longest), ...sorted.filter((spec) => !longest(spec))];
  }
}

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
    sequence: { sequencer: LongestFirst },
    watch: false,
  },
});
