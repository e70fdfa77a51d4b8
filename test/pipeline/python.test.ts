/**
 * The pipeline's names are a protocol: a Python NER worker (lessons/13-capstone-pipeline/
 * ner_worker.py, redis-py) works beside the TypeScript workers, and the audit still finds
 * nothing lost, nothing twice, every result right. Lesson 13's README shows an excerpt of that
 * file, which must not drift from it.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createClient } from "redis";
import { afterAll, expect, test } from "vitest";
import { ROOT } from "../../src/paths.ts";
import { SOLUTION_PARTS } from "../../src/pipeline/parts.ts";
import { DEFAULTS, runPipeline } from "../../src/pipeline/pipeline.ts";
import { findPython, PYTHON_WORKER } from "../../src/pipeline/python.ts";
import { type PrivateServer, startPrivateServer } from "../../src/redis/server.ts";

const python = findPython();
if ("missing" in python) {
  // Printed, never silent: a skipped test here means the Python worker went untested.
  console.warn(`SKIPPED the Python worker test: ${python.missing}`);
}

let server: PrivateServer | undefined;
afterAll(async () => {
  await server?.stop();
});

test.skipIf("missing" in python)(
  "a Python NER worker shares the stage with TypeScript workers: 0 lost, 0 duplicated, results from both",
  async () => {
    server = await startPrivateServer();
    const prefix = "py-test:";
    const report = await runPipeline({
      ...DEFAULTS,
      docs: 40,
      workers: 2,
      pythonWorkers: 1,
      badRequests: false,
      parts: SOLUTION_PARTS,
      prefix,
      redisUrl: server.url,
      stallMs: 15_000,
    });
    const { audit } = report;
    expect(audit.problems, report.workerLog.slice(-10).join("\n")).toEqual([]);
    expect(audit.lost).toBe(0);
    expect(audit.duplicated).toBe(0);
    expect(audit.wrongResults).toBe(0);
    expect(audit.completed).toBe(40);

    const client = createClient({ url: server.url });
    await client.connect();
    try {
      const stats = await client.hGetAll(`${prefix}stats`);
      const byPython = Number(stats["ner:done:python"] ?? 0);
      const byTypeScript = Number(stats["ner:done"] ?? 0) - byPython;
      expect(byPython, "documents the Python worker handed on").toBeGreaterThan(0);
      expect(byTypeScript, "documents the TypeScript workers handed on").toBeGreaterThan(0);
      const consumers = await client.xInfoConsumers(`${prefix}stage:ner`, "ner");
      expect(consumers.map((c) => String(c.name))).toContain("ner-py-1");
    } finally {
      client.destroy();
    }
  },
);

test("lesson 13's README shows the Python worker exactly as the file has it", () => {
  const readme = readFileSync(join(ROOT, "lessons", "13-capstone-pipeline", "README.md"), "utf8");
  const excerpt = /```python\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(excerpt, "a ```python block in lesson 13's README").toBeDefined();
  const file = readFileSync(PYTHON_WORKER, "utf8");
  // The excerpt is whole pieces of the file, separated by a "..." line where lines are left out.
  for (const piece of (excerpt ?? "").split(/^ *(?:# )?\.\.\.\n/m)) {
    expect(file, "this piece of the README's excerpt is not in ner_worker.py").toContain(piece);
  }
});
