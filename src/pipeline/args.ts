/** `npm run pipeline -- ...` arguments -> settings. Pure: cli.ts does the I/O. */
import { type ParseArgsConfig, parseArgs } from "node:util";
import { nearest } from "../nearest.ts";

export interface PipelineArgs {
  docs: number;
  workers: number;
  /** Python worker processes beside the TypeScript ones. */
  pythonWorkers: number;
  latencyMs: number;
  failureRate: number;
  chaos: boolean;
  json: boolean;
  help: boolean;
  /** Undefined: chaos runs get a few, calm runs none. */
  poison?: number;
  /** Undefined: the reference solution. */
  parts?: string;
  claimIdleMs?: number;
  maxDeliveries?: number;
  /** Serve the live dashboard during the run. */
  dashboard: boolean;
  /** Its port on 127.0.0.1; undefined: a free one. Implies --dashboard. */
  dashboardPort?: number;
  /** Documents per batch; 1: one at a time (lesson 13's loop). Undefined: batched. */
  batch?: number;
  inFlight?: number;
  bulk?: number;
  maxBacklog?: number;
  /** Undefined: lesson 16's reference solution. */
  batchParts?: string;
  /** Run on this server (the user's) instead of a private one; cli.ts falls back to REDIS_URL. */
  redisUrl?: string;
  /** Start a local TLS-only server and connect every process over rediss://. */
  tls: boolean;
  /** Run on a Redis Cluster, one partition per primary: a local six-node one, or the user's. */
  cluster: boolean;
  /** With --cluster: no WAIT after the intake and each hand-off (what a failover can lose). */
  noWait: boolean;
}

const NEEDS_URL = "--redis-url needs a URL, like rediss://:<password>@host:6380.";

export class PipelineUsageError extends Error {
  override name = "PipelineUsageError";
}

export const PIPELINE_USAGE = `Usage: npm run pipeline -- [options]

  --docs N            documents to upload (default 100)
  --workers K         worker processes, each with one worker per stage (default 2)
  --python-workers N  Python worker processes beside them (default 0; on a
                      cluster spread over the partitions)
  --latency MS        average latency of each simulated AI service (default 20)
  --failure-rate P    chance of a transient service failure, 0 to 1 (default 0.02)
  --chaos             kill workers with SIGKILL, restart Redis once, add poison documents
  --poison N          poison documents (default: 0, or 1 in 200 with --chaos)
  --batch N           documents per batch in each stage (default 100); 1 runs
                      lesson 13's one-at-a-time loop
  --in-flight N       service calls in flight per worker and stage (default 32)
  --bulk N            documents per upload request (default 100; 1: one each)
  --max-backlog N     answer uploads 429 while a stage has more waiting (default
                      5000; 0: no limit)
  --parts FILE        your lesson 13 file instead of the reference solution, e.g.
                      --parts workspace/13-capstone-pipeline/stage.ts (implies
                      --batch 1)
  --batch-parts FILE  your lesson 16 file for the batched stages, e.g.
                      --batch-parts workspace/16-throughput/batch.ts
  --claim-idle MS     take over entries pending longer than this (default 1500)
  --max-deliveries N  dead-letter a document whose N-th delivery fails (default 4)
  --redis-url URL     run on your server (default: $REDIS_URL, else a private one),
                      only under a prefix of the run's own, never a global command;
                      rediss:// for TLS (REDIS_CA, REDIS_TLS_SERVERNAME apply)
  --tls               start a local TLS-only redis-server and connect every process
                      over rediss://, verifying its certificate; with --cluster,
                      every node of the local cluster is TLS-only
  --cluster           run on a local six-node Redis Cluster (3 primaries, 3 replicas),
                      one partition per primary (at least one worker each); with
                      --chaos, one primary is also SIGKILLed mid-run and its
                      replica takes over. With --redis-url (or $REDIS_URL): on your
                      cluster, one partition per primary, following a slot that
                      moves; chaos then kills workers only, never a node
  --no-wait           with --cluster: skip WAIT 1 after each write (faster; a
                      failover can then lose what was acknowledged)
  --json              end with the audit as one JSON object on the last line
  --dashboard         serve a live page on 127.0.0.1 (prints its URL); it stops with the run;
                      with --cluster, one page for every partition
  --dashboard-port N  its port (default: a free one); implies --dashboard

Example: npm run pipeline -- --docs 1000 --workers 4 --chaos`;

type NumberOption =
  | "docs"
  | "workers"
  | "pythonWorkers"
  | "latencyMs"
  | "failureRate"
  | "poison"
  | "claimIdleMs"
  | "maxDeliveries"
  | "dashboardPort"
  | "batch"
  | "inFlight"
  | "bulk"
  | "maxBacklog";

/** The number options, with their field and range; every other option is a flag or --parts. */
const NUMBERS: Record<string, { field: NumberOption; min: number; max: number; integer: boolean }> =
  {
    docs: { field: "docs", min: 1, max: 100_000, integer: true },
    workers: { field: "workers", min: 1, max: 32, integer: true },
    "python-workers": { field: "pythonWorkers", min: 0, max: 32, integer: true },
    latency: { field: "latencyMs", min: 0, max: 60_000, integer: true },
    "failure-rate": { field: "failureRate", min: 0, max: 0.9, integer: false },
    poison: { field: "poison", min: 0, max: 100_000, integer: true },
    "claim-idle": { field: "claimIdleMs", min: 50, max: 600_000, integer: true },
    "max-deliveries": { field: "maxDeliveries", min: 1, max: 100, integer: true },
    "dashboard-port": { field: "dashboardPort", min: 1, max: 65_535, integer: true },
    batch: { field: "batch", min: 1, max: 1000, integer: true },
    "in-flight": { field: "inFlight", min: 1, max: 1000, integer: true },
    bulk: { field: "bulk", min: 1, max: 500, integer: true },
    "max-backlog": { field: "maxBacklog", min: 0, max: 10_000_000, integer: true },
  };

const OPTIONS = {
  chaos: { type: "boolean" },
  dashboard: { type: "boolean" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  tls: { type: "boolean" },
  cluster: { type: "boolean" },
  "no-wait": { type: "boolean" },
  parts: { type: "string" },
  "redis-url": { type: "string" },
  "batch-parts": { type: "string" },
  ...Object.fromEntries(Object.keys(NUMBERS).map((name) => [name, { type: "string" }])),
} as const satisfies ParseArgsConfig["options"];

/** Why util.parseArgs refused argv, in one line that names the option. */
function refusal(error: NodeJS.ErrnoException, argv: string[]): string {
  const known = Object.keys(OPTIONS).map((name) => `--${name}`);
  if (error.code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    const given =
      argv
        .find((arg) => /^-/.test(arg) && !known.includes(arg.split("=")[0] ?? "") && arg !== "-h")
        ?.split("=")[0] ?? "";
    const guess = nearest(given, known);
    return `Unknown option ${given}${guess ? `: did you mean ${guess}?` : "."}`;
  }
  if (error.code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL") {
    return `Unexpected argument: ${/'([^']*)'/.exec(error.message)?.[1] ?? "?"} (every setting is an option, like --docs 100).`;
  }
  const name = /'(--[\w-]+)/.exec(error.message)?.[1] ?? "";
  if (name === "--parts" || name === "--batch-parts") return `${name} needs a file name.`;
  if (name === "--redis-url")
    return "--redis-url needs a URL, like rediss://:<password>@host:6380.";
  if (name.slice(2) in NUMBERS) {
    // util.parseArgs will not take "-1" or "--chaos" as a value: judge it as one, to say why.
    const next = argv[argv.indexOf(name) + 1];
    if (next !== undefined) numberOption(name.slice(2), next);
    return `${name} needs a number (got ${next ?? "nothing"}).`;
  }
  return name ? `${name} takes no value.` : error.message;
}

function numberOption(name: string, text: string): number {
  const spec = NUMBERS[name] as (typeof NUMBERS)[string];
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value)) {
    throw new PipelineUsageError(`--${name} needs a number (got ${text || "nothing"}).`);
  }
  if (spec.integer && !Number.isInteger(value)) {
    throw new PipelineUsageError(`--${name} needs a whole number (got ${text}).`);
  }
  if (value < spec.min || value > spec.max) {
    throw new PipelineUsageError(
      `--${name} must be between ${spec.min} and ${spec.max} (got ${text}).`,
    );
  }
  return value;
}

export function parsePipelineArgs(argv: string[]): PipelineArgs {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: OPTIONS,
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    throw new PipelineUsageError(refusal(error as NodeJS.ErrnoException, argv));
  }
  const args: PipelineArgs = {
    docs: 100,
    workers: 2,
    pythonWorkers: 0,
    latencyMs: 20,
    failureRate: 0.02,
    chaos: values.chaos === true,
    json: values.json === true,
    help: values.help === true,
    dashboard: values.dashboard === true,
    tls: values.tls === true,
    cluster: values.cluster === true,
    noWait: values["no-wait"] === true,
  };
  if (typeof values.parts === "string") {
    if (!values.parts) throw new PipelineUsageError("--parts needs a file name.");
    args.parts = values.parts;
  }
  if (typeof values["batch-parts"] === "string") {
    if (!values["batch-parts"]) throw new PipelineUsageError("--batch-parts needs a file name.");
    args.batchParts = values["batch-parts"];
  }
  for (const name of Object.keys(NUMBERS)) {
    const text = values[name];
    if (typeof text === "string")
      args[(NUMBERS[name] as (typeof NUMBERS)[string]).field] = numberOption(name, text);
  }
  if (typeof values["redis-url"] === "string") {
    if (!values["redis-url"].trim()) {
      throw new PipelineUsageError(NEEDS_URL);
    }
    args.redisUrl = values["redis-url"].trim();
  }
  if (args.tls && args.redisUrl) {
    throw new PipelineUsageError(
      "--tls starts a local TLS server; for your own, give a rediss:// URL to --redis-url instead.",
    );
  }
  if (args.noWait && !args.cluster) {
    throw new PipelineUsageError("--no-wait only applies to --cluster runs.");
  }
  if (args.dashboardPort !== undefined) args.dashboard = true;
  if (args.parts && args.batchParts) {
    throw new PipelineUsageError(
      "--parts (lesson 13, one at a time) and --batch-parts (lesson 16) exclude each other.",
    );
  }
  if (args.parts && args.batch !== undefined && args.batch > 1) {
    throw new PipelineUsageError(
      "--parts runs lesson 13's one-at-a-time loop: leave out --batch, or use --batch-parts.",
    );
  }
  return args;
}

/** With --chaos and no --poison: one poison document per 200, at least two. */
export function poisonCount(args: Pick<PipelineArgs, "chaos" | "poison" | "docs">): number {
  if (args.poison !== undefined) return Math.min(args.poison, args.docs);
  return args.chaos ? Math.min(args.docs, Math.max(2, Math.round(args.docs / 200))) : 0;
}
