/**
 * Runs the capstone through its own CLI (`npm run pipeline -- ... --json`), so whatever the
 * reference pipeline becomes is what gets measured; its JSON audit gives docs/s and each
 * document's upload-to-done time. A traced run also listens on the run's private Redis from the
 * outside (MONITOR) to count the commands one document costs, those run inside scripts included.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { ROOT } from "../../src/paths.ts";
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

/** The run's own bookkeeping (the CLI's control connection polls every unfinished document). */
const HARNESS = /control$/;

const DOC_ID = /doc-[0-9a-f]{24}/g;

/**
 * What one document costs, from every command MONITOR saw: a command that names one document
 * (its hash, its status, its event, its entry on the next stage) counts for that document, and
 * is averaged over the documents seen from their intake XADD to their embed result, whose whole
 * life was watched; a command for a batch (XREADGROUP, WATCH of N keys, MULTI, EXEC, XACK, a
 * script over N hashes, counters) is shared by every document the run saw.
 */
async function traceCommands(port: number) {
  const lines: { addr: string; name: string; args: string[] }[] = [];
  const monitor = await connectRaw("127.0.0.1", port);
  monitor.onPush((reply) => {
    const parsed = typeof reply === "string" ? parseMonitorLine(reply) : undefined;
    if (parsed) lines.push({ addr: parsed.addr, name: parsed.args[0] ?? "", args: parsed.args });
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
    const perDoc = new Map<string, Map<string, number>>();
    const shared = new Map<string, number>();
    const born = new Set<string>();
    const done = new Set<string>();
    const seen = new Set<string>();
    for (const line of lines) {
      if (harness.has(line.addr)) continue;
      const name = line.name.toUpperCase();
      const ids = new Set(line.args.join(" ").match(DOC_ID) ?? []);
      for (const id of ids) seen.add(id);
      const [id] = ids;
      if (ids.size !== 1 || id === undefined) {
        shared.set(name, (shared.get(name) ?? 0) + 1);
        continue;
      }
      const counts = perDoc.get(id) ?? new Map<string, number>();
      counts.set(name, (counts.get(name) ?? 0) + 1);
      perDoc.set(id, counts);
      if (name === "XADD" && /stage:ocr$/.test(line.args[1] ?? "")) born.add(id);
      if (name === "HSET" && line.args[2] === "embed") done.add(id);
    }
    const whole = [...born].filter((id) => done.has(id));
    if (whole.length === 0 || seen.size === 0) return undefined;
    const cost = new Map<string, number>();
    for (const id of whole) {
      for (const [name, n] of perDoc.get(id) ?? []) {
        cost.set(name, (cost.get(name) ?? 0) + n / whole.length);
      }
    }
    for (const [name, n] of shared) cost.set(name, (cost.get(name) ?? 0) + n / seen.size);
    return cost;
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
  let tracing: Promise<() => Map<string, number> | undefined> | undefined;
  createInterface({ input: child.stderr }).on("line", (line) => {
    stderr.push(line);
    const url = /Redis (redis:\/\/[\d.]+:(\d+))/.exec(line);
    if (trace && url && !tracing) tracing = traceCommands(Number(url[2]));
  });
  const code = await exited;
  const stopTrace = await tracing?.catch(() => undefined);
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
  if (trace && !tracing) {
    throw new Error('the pipeline CLI printed no "Redis redis://..." line on stderr');
  }
  if (trace && !commandsPerDoc?.size) throw new Error("the traced run saw no finished document");
  return { audit, commandsPerDoc };
}
