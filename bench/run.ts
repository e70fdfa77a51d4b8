/** `npm run bench`: every benchmark in this folder, one after another, each printing a table. */
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "../src/paths.ts";

const dir = join(ROOT, "bench");
const only = process.argv[2];
const benches = readdirSync(dir)
  .filter((f) => f.endsWith(".ts") && !["run.ts", "table.ts"].includes(f))
  .filter((f) => !only || f.includes(only));
let failed = 0;
for (const file of benches) {
  const result = spawnSync(process.execPath, ["--import", "tsx", join(dir, file)], {
    cwd: ROOT,
    stdio: "inherit",
  });
  if (result.status !== 0) failed++;
}
process.exitCode = failed > 0 ? 1 : 0;
