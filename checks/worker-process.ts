/**
 * Runs a learner's worker as a child process, so a check can kill it with SIGKILL the way a
 * crashed container or an OOM-killed pod dies: no finally blocks, no goodbye to Redis.
 *
 * The child is started as `node --import tsx <runner script>` in a process group of its own (one
 * process: tsx's CLI would start a second one and relay signals to it). The harness is told about the
 * group with trackProcess(), so it is killed even if the check itself hangs or crashes.
 *
 * Runner scripts talk back on stdout with lines `@@workbook {"event": ..., ...}` (see
 * REPORT_PREFIX); anything else the learner's code prints is kept for failure messages.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll } from "vitest";
import { childEnded } from "../src/child-ended.ts";
import { signalGroup, waitGroupGone } from "../src/process-group.ts";
import { CheckFailure, trackProcess } from "./kit.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** The prefix of a line a runner script prints to report an event to the check. */
export const REPORT_PREFIX = "@@workbook ";

/** One event a runner reported, e.g. { event: "handling", id: "1718000000000-0" }. */
export interface ChildEvent {
  event: string;
  [field: string]: unknown;
}

export interface WorkerProcess {
  readonly pid: number;
  /**
   * Waits for the next event named `event` not yet returned by an earlier call. Rejects with the
   * child's own message when it reports an "error" event first (so kit's call() can turn
   * "TODO: ..." into "... is not written yet"), and with a CheckFailure when it exits first or
   * `ms` pass.
   */
  next(event: string, ms: number): Promise<ChildEvent>;
  /** SIGKILLs the whole process group and waits until the child has exited. */
  kill(): Promise<void>;
  /** What the child printed besides its reports: the learner's logs and any stack trace. */
  output(): string;
}

const alive = new Set<WorkerProcess>();

afterAll(async () => {
  await Promise.all([...alive].map((worker) => worker.kill()));
});

/** Starts `script` (a runner in checks/NN-slug/) with the check's environment plus `env`. */
export function spawnWorker(script: string, env: Record<string, string>): WorkerProcess {
  const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", script], {
    cwd: ROOT,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env },
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`Could not start ${script}.`);
  trackProcess(pid);

  const events: ChildEvent[] = [];
  const taken = new Set<ChildEvent>();
  let printed = "";
  let exit: string | undefined;
  const wake = new Set<() => void>();
  const notify = () => {
    for (const resolve of wake) resolve();
  };

  let partial = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    partial += chunk.toString();
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      if (line.startsWith(REPORT_PREFIX)) {
        try {
          events.push(JSON.parse(line.slice(REPORT_PREFIX.length)) as ChildEvent);
        } catch {
          printed += `${line}\n`;
        }
      } else if (printed.length < 20_000) {
        printed += `${line}\n`;
      }
    }
    notify();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    if (printed.length < 20_000) printed += chunk.toString();
  });
  // Judged after the pipes are read: a worker that reports and then ends must not look as if
  // it ended first.
  const exited = childEnded(child, 1_000).then(({ code, signal }) => {
    exit = signal ?? `exit code ${code}`;
    notify();
  });

  const worker: WorkerProcess = {
    pid,
    async next(event, ms) {
      const deadline = Date.now() + ms;
      for (;;) {
        const error = events.find((e) => e.event === "error");
        if (error) throw new Error(String(error.message));
        const found = events.find((e) => e.event === event && !taken.has(e));
        if (found) {
          taken.add(found);
          return found;
        }
        if (exit !== undefined) {
          throw new CheckFailure(
            `The worker process ended (${exit}) before it reported "${event}". What it printed:\n${worker.output() || "(nothing)"}`,
          );
        }
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new CheckFailure(
            `The worker process did not report "${event}" within ${ms / 1000}s. What it printed:\n${worker.output() || "(nothing)"}`,
          );
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, Math.min(left, 200));
          function done() {
            clearTimeout(timer);
            wake.delete(done);
            resolve();
          }
          wake.add(done);
        });
      }
    },
    async kill() {
      alive.delete(worker);
      signalGroup(pid, "SIGKILL");
      await exited;
      // tsx's own child is in the same group; give the kernel a moment to take it down too.
      await waitGroupGone(pid, 1000);
    },
    output() {
      return printed.trim().split("\n").slice(-15).join("\n");
    },
  };
  alive.add(worker);
  return worker;
}
