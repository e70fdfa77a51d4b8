/**
 * `npm run pipeline` from a test, as a user runs it (one node process, colours off, REDIS_URL
 * cleared unless the test sets it), and the proof that a run left no process or port behind.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { afterAll, expect } from "vitest";
import { ROOT } from "../../src/paths.ts";
import { findPython } from "../../src/pipeline/python.ts";
import { signalGroup } from "../../src/process-group.ts";
import { exitOf, TSX } from "../support/cli.ts";
import { listening } from "../support/listening.ts";
import { commandOf, processesWithEnv } from "../support/sandbox.ts";
import { waitFor } from "../support/wait.ts";

const started: ChildProcess[] = [];
afterAll(() => {
  for (const child of started) if (child.pid) signalGroup(child.pid, "SIGKILL");
});

export function runPipeline(args: string[], mark: string, env: Record<string, string> = {}) {
  const child = spawn(process.execPath, [...TSX, "src/pipeline/cli.ts", ...args], {
    cwd: ROOT,
    detached: true,
    env: { ...process.env, REDIS_URL: "", PIPELINE_TEST_MARK: mark, FORCE_COLOR: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  started.push(child);
  const output = { stdout: "", stderr: "" };
  child.stdout?.on("data", (chunk) => {
    output.stdout += chunk;
  });
  child.stderr?.on("data", (chunk) => {
    output.stderr += chunk;
  });
  const exited = exitOf(child);
  return { child, output, exited };
}

/**
 * Waits for the run to end: its exit code, the audit of a --json run (its last line; {} if
 * none), all its output, and the output's tail to explain a failure.
 */
export async function ended(run: ReturnType<typeof runPipeline>) {
  const code = await run.exited;
  const all = `${run.output.stderr}\n${run.output.stdout}`;
  const last = run.output.stdout.trim().split("\n").pop() ?? "";
  let audit: Record<string, unknown> = {};
  try {
    audit = JSON.parse(last) as Record<string, unknown>;
  } catch {
    // no audit: the context shows why
  }
  return { code, audit, all, context: all.slice(-4000) };
}

/** The ports the run printed: "Redis redis[s]://[user:***@]127.0.0.1:<port>   API http://127.0.0.1:<port>". */
export function ports(text: string): number[] {
  const match =
    /rediss?:\/\/(?:[^@\s]*@)?127\.0\.0\.1:(\d+)\s+API http:\/\/127\.0\.0\.1:(\d+)/.exec(text);
  return match ? [Number(match[1]), Number(match[2])] : [];
}

/** `usersRedis`: the run's Redis was not its own, so only the API's port must be closed. */
export async function expectNothingLeft(mark: string, text: string, usersRedis = false) {
  expect(await waitFor(() => processesWithEnv(mark).length === 0, 10_000), "processes left").toBe(
    true,
  );
  const used = ports(text);
  expect(used, "the run should print its ports").toHaveLength(2);
  for (const port of usersRedis ? used.slice(1) : used) {
    expect(await listening(port), `port ${port}`).toBe(false);
  }
}

const python = findPython();

/**
 * `--python-workers N` where python3 with redis-py is installed; else none, and a warning that
 * says the Python workers went untested in this mode (never silently).
 */
export function pythonWorkers(count: number, mode: string): string[] {
  if (!("missing" in python)) return ["--python-workers", String(count)];
  console.warn(`Python workers not tested ${mode}: ${python.missing}`);
  return [];
}

/**
 * Waits until a Python worker of the run is up, then the command line of every process of the
 * run (where `ps` shows them); [] when no Python worker came up in `ms`.
 */
export async function commandLinesWithPython(mark: string, ms: number): Promise<string[]> {
  const lines = () => processesWithEnv(mark).map(commandOf);
  const up = await waitFor(() => lines().some((line) => line.includes("ner_worker.py")), ms);
  return up ? lines() : [];
}
