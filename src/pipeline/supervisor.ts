/**
 * Starts, kills and replaces worker processes. Each worker runs in a process group of its own
 * (so a SIGKILL takes all of it) with a pipe on its stdin (so it stops when we do, however we
 * stop). stopAll() and the exit hook (killGroupOnExit) make sure none outlives the pipeline.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { killGroupOnExit } from "../check/cleanup.ts";
import { ROOT } from "../paths.ts";
import { killGroup, signalGroup, stopGroup } from "../process-group.ts";
import { READY_LINE, type WorkerSettings } from "./worker-settings.ts";

const WORKER = join(ROOT, "src", "pipeline", "worker.ts");

export interface WorkerProcess {
  slot: string;
  pid: number;
  child: ChildProcess;
  ready: Promise<boolean>;
  /** True once the worker has connected and started its loops. */
  isReady: boolean;
  /** How the process ended: "SIGKILL", "exit 1", ...; undefined while it runs. */
  ended?: string;
}

export interface SupervisorOptions {
  settings: (slot: string) => WorkerSettings;
  /** Told about every process group started, e.g. the check harness's trackProcess. */
  onSpawn?: (pid: number) => void;
  /** Lines the workers print on stderr: errors from the learner's code end up here. */
  onLog?: (slot: string, line: string) => void;
  /** Start a replacement when a worker is killed by a signal (not when it fails on its own). */
  replace?: boolean;
  /** Told when a worker process starts, is ready, or ends without being asked to (the dashboard). */
  onEvent?: (event: WorkerEvent) => void;
}

export type WorkerEvent =
  | { kind: "started" | "ready"; slot: string; pid: number }
  | { kind: "ended"; slot: string; pid: number; how: string };

export class Supervisor {
  readonly workers = new Map<string, WorkerProcess>();
  /** Processes that ended without being asked to: killed by chaos, crashed, or failed. */
  readonly ended: { slot: string; how: string }[] = [];
  #stopping = false;

  constructor(private readonly options: SupervisorOptions) {}

  start(slot: string): WorkerProcess {
    const child = spawn(process.execPath, ["--import", "tsx", WORKER], {
      cwd: ROOT,
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, PIPELINE_WORKER: JSON.stringify(this.options.settings(slot)) },
    });
    const pid = child.pid;
    if (pid === undefined) throw new Error(`could not start worker ${slot}`);
    const forget = killGroupOnExit(pid);
    this.options.onSpawn?.(pid);
    const worker: WorkerProcess = {
      slot,
      pid,
      child,
      isReady: false,
      ready: new Promise<boolean>((resolve) => {
        let out = "";
        child.stdout?.on("data", (chunk: Buffer) => {
          if (worker.isReady) return;
          out += chunk.toString();
          if (out.includes(READY_LINE)) {
            worker.isReady = true;
            this.options.onEvent?.({ kind: "ready", slot, pid });
            resolve(true);
          }
        });
        child.once("exit", () => resolve(false));
      }),
    };
    let partial = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) if (line.trim()) this.options.onLog?.(slot, line);
    });
    child.once("exit", (code, signal) => {
      worker.ended = signal ?? `exit ${code}`;
      forget();
      // A worker's own children (none today) would die with the group.
      signalGroup(pid, "SIGKILL");
      if (this.#stopping) return;
      this.ended.push({ slot, how: worker.ended });
      this.options.onEvent?.({ kind: "ended", slot, pid, how: worker.ended });
      if (this.options.replace && signal !== null) {
        setTimeout(() => {
          if (!this.#stopping) this.start(slot);
        }, 200);
      }
    });
    this.workers.set(slot, worker);
    this.options.onEvent?.({ kind: "started", slot, pid });
    return worker;
  }

  /** One more worker process, in a slot of its own: the next number after the highest. */
  addWorker(): WorkerProcess {
    const highest = Math.max(0, ...[...this.workers.keys()].map(Number).filter(Number.isFinite));
    return this.start(String(highest + 1));
  }

  alive(): WorkerProcess[] {
    return [...this.workers.values()].filter((w) => w.ended === undefined);
  }

  /** SIGKILL: no finally blocks, no goodbye to Redis, like a node losing power. */
  async kill(slot: string): Promise<void> {
    const worker = this.workers.get(slot);
    if (!worker || worker.ended !== undefined) return;
    await killGroup(worker.pid, 5000);
  }

  async stopAll(): Promise<void> {
    this.#stopping = true;
    // stopGroup sends its SIGTERM before its first await: all workers are told at once.
    await Promise.all(this.alive().map((worker) => stopGroup(worker.pid, 4000)));
  }
}
