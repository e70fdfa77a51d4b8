/**
 * Python workers for the NER stage (lessons/13-capstone-pipeline/ner_worker.py): the proof that
 * the pipeline's names are a protocol, not a TypeScript API. Each runs in a process group of
 * its own with a pipe on its stdin, like the TypeScript workers, so none outlives the pipeline.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import { killGroupOnExit } from "../check/cleanup.ts";
import { ROOT } from "../paths.ts";
import { stopGroup } from "../process-group.ts";
import type { LoopConfig } from "./stage-loop.ts";
import { READY_LINE } from "./worker-settings.ts";

export const PYTHON_WORKER = join(ROOT, "lessons", "13-capstone-pipeline", "ner_worker.py");

/** Interpreters to try: the one on PATH, then Debian's, where apt's python3-redis goes. */
const CANDIDATES = ["python3", "/usr/bin/python3"];

/**
 * A python3 that can import redis-py, or why there is none (for a test to print when it skips,
 * and for the pipeline to refuse --python-workers with).
 */
export function findPython(): { python: string } | { missing: string } {
  const tried: string[] = [];
  for (const python of CANDIDATES) {
    try {
      execFileSync(python, ["-c", "import redis"], { stdio: "ignore", timeout: 10_000 });
      return { python };
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      tried.push(`${python}: ${code === "ENOENT" ? "not installed" : "cannot import redis"}`);
    }
  }
  return {
    missing: `no python3 with redis-py (${tried.join("; ")}); on Debian: apt-get install python3-redis`,
  };
}

export interface PythonWorkersOptions {
  count: number;
  redisUrl: string;
  prefix: string;
  loop: LoopConfig;
  onSpawn?: (pid: number) => void;
  /** Lines the workers print on stderr. */
  onLog?: (slot: string, line: string) => void;
}

export interface PythonWorkers {
  /** Consumer names in the "ner" group: "ner-py-1", ... */
  consumers: string[];
  /** False when a worker stopped before it was ready. */
  ready: Promise<boolean>;
  stop(): Promise<void>;
}

export function startPythonWorkers(options: PythonWorkersOptions): PythonWorkers {
  if (options.count <= 0)
    return { consumers: [], ready: Promise.resolve(true), stop: async () => {} };
  const found = findPython();
  if ("missing" in found) throw new Error(`cannot start Python workers: ${found.missing}`);
  const children: { pid: number; child: ChildProcess; forget: () => boolean }[] = [];
  const consumers = Array.from({ length: options.count }, (_, i) => `ner-py-${i + 1}`);
  const ready = consumers.map((consumer) => {
    const { loop } = options;
    const child = spawn(
      found.python,
      [
        PYTHON_WORKER,
        ...["--prefix", options.prefix, "--consumer", consumer],
        ...["--claim-idle-ms", String(loop.claimIdleMs), "--block-ms", String(loop.blockMs)],
        ...["--max-deliveries", String(loop.maxDeliveries), "--latency-ms", String(loop.latencyMs)],
        "--stop-on-stdin-eof",
      ],
      // The URL (and its password) in the environment, where `ps` does not show it; REDIS_CA and
      // REDIS_TLS_SERVERNAME come with the rest of it.
      {
        cwd: ROOT,
        detached: true,
        stdio: ["pipe", "pipe", "pipe"],
        env: { ...process.env, PIPELINE_REDIS_URL: options.redisUrl },
      },
    );
    const pid = child.pid;
    if (pid === undefined) throw new Error(`could not start Python worker ${consumer}`);
    children.push({ pid, child, forget: killGroupOnExit(pid) });
    options.onSpawn?.(pid);
    let partial = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) if (line.trim()) options.onLog?.(consumer, line);
    });
    return new Promise<boolean>((resolve) => {
      let out = "";
      child.stdout?.on("data", (chunk: Buffer) => {
        out += chunk.toString();
        if (out.includes(READY_LINE)) resolve(true);
      });
      child.once("exit", () => resolve(false));
    });
  });
  return {
    consumers,
    ready: Promise.all(ready).then((all) => all.every(Boolean)),
    stop: async () => {
      await Promise.all(
        children.map(async ({ pid, forget }) => {
          await stopGroup(pid, 4000);
          forget();
        }),
      );
    },
  };
}
