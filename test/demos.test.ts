/** Every lesson's demo runs against the private Redis and ends on its own, leaving nothing. */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { expect, test } from "vitest";
import { loadCatalog } from "../src/catalog.ts";
import { ROOT } from "../src/paths.ts";
import { cliEnv, exitOf, TSX } from "./support/cli.ts";
import { processesWithEnv } from "./support/sandbox.ts";
import { waitFor } from "./support/wait.ts";

const withDemo = loadCatalog().filter((lesson) => lesson.demo);

test("the pub/sub and Streams tracks have demos", () => {
  const numbers = withDemo.map((l) => l.number);
  for (const n of ["02", "03", "04", "08", "09"]) expect(numbers).toContain(n);
});

test.concurrent.each(withDemo.map((l) => [l.number, l] as const))(
  "the demo of lesson %s ends on its own with exit 0",
  async (number) => {
    const mark = randomUUID();
    const child = spawn(process.execPath, [...TSX, "src/cli.ts", "demo", number], {
      cwd: ROOT,
      env: cliEnv({ WORKBOOK_TEST_MARK: mark }),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk) => {
      output += chunk;
    });
    child.stderr.on("data", (chunk) => {
      output += chunk;
    });
    // Bounded: a demo that does not end is a failure, not a hang of the suite.
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    const code = await exitOf(child);
    clearTimeout(timer);
    expect(code, output.slice(-2000)).toBe(0);
    expect(output.trim().length).toBeGreaterThan(0);
    const gone = await waitFor(
      () => processesWithEnv(`WORKBOOK_TEST_MARK=${mark}`).length === 0,
      5000,
    );
    expect(gone, "a process of the demo outlived it").toBe(true);
  },
);
