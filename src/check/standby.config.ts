import { mergeConfig } from "vitest/config";
import checks from "../../checks/vitest.config.ts";

/** The checks' own configuration, with the standby's setup file last (see ./standby.ts). */
export default mergeConfig(checks, {
  test: { setupFiles: ["src/check/standby-setup.ts"] },
});
