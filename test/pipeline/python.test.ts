/**
 * The pipeline's names are a protocol: a Python NER worker (lessons/13-capstone-pipeline/
 * ner_worker.py, redis-py) works beside the TypeScript workers, and the audit still finds
 * nothing lost, nothing twice, every result right. Lesson 13's README shows an excerpt of that
 * file, which must not drift from it.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createClient } from "redis";
import { afterAll, expect, test } from "vitest";
import { killGroupOnExit } from "../../src/check/cleanup.ts";
import { ROOT } from "../../src/paths.ts";
import { SOLUTION_PARTS } from "../../src/pipeline/parts.ts";
import { DEFAULTS, runPipeline } from "../../src/pipeline/pipeline.ts";
import { findPython, PYTHON_WORKER } from "../../src/pipeline/python.ts";
import { stopGroup } from "../../src/process-group.ts";
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

test.skipIf("missing" in python)(
  "the Python worker recovers stale work behind more than ten busy entries: it carries XAUTOCLAIM's cursor",
  async () => {
    server ??= await startPrivateServer();
    const prefix = "py-cursor:";
    const stream = `${prefix}stage:ner`;
    const client = createClient({ url: server.url });
    await client.connect();
    const python3 = (python as { python: string }).python;
    let worker: ReturnType<typeof spawn> | undefined;
    let forget = () => false;
    const busy: string[] = [];
    const refresh = setInterval(() => {
      // A live worker's entries: claimed again and again, so never idle for long.
      client.xClaimJustId(stream, "ner", "busy", 0, busy).catch(() => {});
    }, 100);
    try {
      await client.xGroupCreate(stream, "ner", "0", { MKSTREAM: true });
      const docs = Array.from({ length: 15 }, (_, i) => `doc-${i + 1}`);
      for (const doc of docs) {
        await client.hSet(
          `${prefix}doc:${doc}`,
          "ocr",
          JSON.stringify({ text: "Dr. Ada Lovelace" }),
        );
        await client.xAdd(stream, "*", { doc });
      }
      // The first twelve go to a busy worker, the last three to one that died.
      await client.xReadGroup("ner", "busy", { key: stream, id: ">" }, { COUNT: 12 });
      busy.push(...((await client.xRange(stream, "-", "+")) ?? []).slice(0, 12).map((e) => e.id));
      await client.xReadGroup("ner", "gone", { key: stream, id: ">" }, { COUNT: 3 });
      worker = spawn(
        python3,
        [PYTHON_WORKER, "--url", server.url, "--prefix", prefix, "--claim-idle-ms", "400"],
        { detached: true, stdio: ["ignore", "ignore", "inherit"] },
      );
      if (worker.pid) forget = killGroupOnExit(worker.pid);
      const recovered = async () => {
        const done = await Promise.all(
          docs.slice(12).map((doc) => client.hExists(`${prefix}doc:${doc}`, "ner")),
        );
        return done.every(Boolean);
      };
      const deadline = Date.now() + 8000;
      while (!(await recovered()) && Date.now() < deadline) await sleep(100);
      expect(
        await recovered(),
        "doc-13 to doc-15 still wait: a scan that restarts from 0-0 with COUNT 1 never gets past the first ten pending entries",
      ).toBe(true);
    } finally {
      clearInterval(refresh);
      if (worker?.pid) await stopGroup(worker.pid, 3000);
      forget();
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
