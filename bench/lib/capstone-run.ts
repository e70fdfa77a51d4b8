/**
 * Runs the capstone through its own CLI (`npm run pipeline -- ... --json`), so whatever the
 * reference pipeline becomes is what gets measured; its JSON audit gives docs/s and each
 * document's upload-to-done time. A traced run also listens on the run's private Redis from the
 * outside (MONITOR) to count the commands one document costs.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { createClient } from "redis";
import { ROOT } from "../../src/paths.ts";
import { pipelineKeys, type StatusEvent } from "../../src/pipeline/keys.ts";
import { connectRaw } from "../../src/redis/raw.ts";
import { parseMonitorLine } from "../../src/redis/trace.ts";

/** The part of the CLI's JSON audit the benchmark reads. */
export interface CapstoneAudit {
  ok: boolean;
  completed: number;
  lost: number;
  duplicated: number;
  durationMs: number;
  docsPerSecond: number;
  problems: string[];
  /** Intake "queued" to embed "done", from the events the run itself heard. */
  endToEndMs: { p50: number; p99: number; samples: number };
}

/** How the pipeline is run: the CLI's own options, printed with every figure. */
export interface CapstoneSettings {
  /** Worker processes (--workers), each with one batched loop per stage. */
  workers: number;
  /** Documents per upload request (--bulk): the feeder's POST /documents/batch. */
  bulk: number;
}

export interface CapstoneResult {
  audit: CapstoneAudit;
  /** With `trace`: commands per finished document, by command name, mid-run. */
  commandsPerDoc?: Map<string, number>;
}

const CHANNEL = pipelineKeys("pipeline:").channel;
/** The run's own bookkeeping (the CLI's control connection polls every unfinished document). */
const HARNESS = /control$/;

/**
 * Commands between the 20% and 80% marks of finished documents, divided by the documents
 * finished in between: the steady state, without start-up or the final drain (a run too small
 * to have one is counted whole).
 */
async function traceCommands(port: number, finishedAt: number[], docs: number) {
  const lines: { time: number; addr: string; name: string }[] = [];
  const monitor = await connectRaw("127.0.0.1", port);
  monitor.onPush((reply) => {
    const parsed = typeof reply === "string" ? parseMonitorLine(reply) : undefined;
    if (parsed) lines.push({ time: parsed.time, addr: parsed.addr, name: parsed.args[0] ?? "" });
  });
  await monitor.command(["MONITOR"]);
  const list = await connectRaw("127.0.0.1", port);
  const clients = String(await list.command(["CLIENT", "LIST"]));
  list.close();
  const harness = new Set(
    clients
      .split("\n")
      .filter((line) => HARNESS.test(/ name=(\S*)/.exec(line)?.[1] ?? ""))
      .map((line) => / addr=(\S+)/.exec(line)?.[1]),
  );
  return () => {
    monitor.close();
    const ours = lines.filter((line) => !harness.has(line.addr));
    const lo = Math.floor(docs * 0.2);
    const hi = Math.floor(docs * 0.8);
    let from = finishedAt[lo];
    let to = finishedAt[hi];
    let count = hi - lo;
    // Batched stages finish documents a batch at a time: in a small run the 20% and 80% marks can
    // fall in one batch (one millisecond). Then count the whole traced run instead.
    if (from === undefined || to === undefined || to <= from) {
      from = -Infinity;
      to = finishedAt.at(-1);
      count = finishedAt.length;
    }
    if (to === undefined || count <= 0) return undefined;
    const perDoc = new Map<string, number>();
    for (const line of ours) {
      if (line.time <= from || line.time > to) continue;
      const name = line.name.toUpperCase();
      perDoc.set(name, (perDoc.get(name) ?? 0) + 1 / count);
    }
    return perDoc;
  };
}

/**
 * One run of the CLI. Its upload-to-done times come from its own audit; only a traced run
 * listens from the outside (to mark when documents finish), so an untraced run's CPU is the
 * pipeline's alone, as BullMQ's runs have no listener either.
 */
export async function runCapstone(
  docs: number,
  settings: CapstoneSettings,
  trace = false,
): Promise<CapstoneResult> {
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "src/pipeline/cli.ts",
      ...["--docs", String(docs), "--latency", "0", "--failure-rate", "0"],
      ...["--workers", String(settings.workers), "--bulk", String(settings.bulk)],
      "--json",
    ],
    { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] },
  );
  const exited = new Promise<number | null>((resolve) => child.on("exit", resolve));
  let lastStdout = "";
  createInterface({ input: child.stdout }).on("line", (line) => {
    if (line.trim()) lastStdout = line;
  });
  const stderr: string[] = [];
  const finishedAt: number[] = [];
  let listener: ReturnType<typeof createClient> | undefined;
  let stopTrace: (() => Map<string, number> | undefined) | undefined;
  createInterface({ input: child.stderr }).on("line", async (line) => {
    stderr.push(line);
    const url = /Redis (redis:\/\/[\d.]+:(\d+))/.exec(line);
    if (!trace || !url || listener) return;
    listener = createClient({
      url: url[1],
      name: "bench:events",
      socket: { reconnectStrategy: false },
    });
    listener.on("error", () => {});
    await listener.connect();
    await listener.subscribe(CHANNEL, (message) => {
      const event = JSON.parse(message) as StatusEvent;
      if (event.stage === "embed" && event.state === "done") finishedAt.push(Date.now());
    });
    stopTrace = await traceCommands(Number(url[2]), finishedAt, docs);
  });
  const code = await exited;
  listener?.destroy();
  const commandsPerDoc = stopTrace?.();
  let audit: CapstoneAudit;
  try {
    audit = JSON.parse(lastStdout) as CapstoneAudit;
  } catch {
    throw new Error(
      `the pipeline ended (exit ${code}) without its JSON audit:\n${stderr.slice(-10).join("\n")}`,
    );
  }
  if (!audit.ok) {
    throw new Error(`the pipeline's audit failed: ${audit.problems.slice(0, 3).join("; ")}`);
  }
  if (trace && !listener) {
    throw new Error('the pipeline CLI printed no "Redis redis://..." line on stderr');
  }
  if (trace && !commandsPerDoc?.size) throw new Error("the traced run saw no finished document");
  return { audit, commandsPerDoc };
}
