import { fileURLToPath } from "node:url";
import { mergeConfig, type Plugin } from "vitest/config";
import checks from "../../checks/vitest.config.ts";

const HARNESS = ["checks/", "src/"].map((dir) =>
  fileURLToPath(new URL(`../../${dir}`, import.meta.url)),
);

/**
 * Every check run is a new process that transforms the kit, the fault kit and the check again:
 * a fifth of its start. Their transforms are kept on disk (keyed by their content) and read back
 * by the next run. Only the harness's own files: the learner's file changes with every save and
 * is transformed afresh, so the cache does not grow with each save or mistake copy.
 */
const harnessOnly: Plugin = {
  name: "workbook:cache-harness-only",
  configureVitest({ experimental_defineCacheKeyGenerator }) {
    experimental_defineCacheKeyGenerator(({ id }) =>
      HARNESS.some((dir) => id.startsWith(dir)) ? undefined : false,
    );
  },
};

const merged = mergeConfig(checks, {
  plugins: [harnessOnly],
  test: {
    experimental: {
      fsModuleCache: true,
      fsModuleCachePath: "node_modules/.cache/workbook/vitest-modules",
    },
  },
});

/**
 * The checks' own configuration, with the claim of a shared test first (./shard-setup.ts: a
 * test another process runs is skipped before any other hook of it runs) and the standby's
 * wait last (./standby-setup.ts).
 */
export default {
  ...merged,
  test: {
    ...merged.test,
    setupFiles: [
      "src/check/shard-setup.ts",
      ...[checks.test?.setupFiles ?? []].flat(),
      "src/check/standby-setup.ts",
    ],
  },
};
