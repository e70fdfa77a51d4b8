/** `npm run pipeline -- ...` arguments -> settings. Pure: cli.ts does the I/O. */
export interface PipelineArgs {
  docs: number;
  workers: number;
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
}

export class PipelineUsageError extends Error {
  override name = "PipelineUsageError";
}

export const PIPELINE_USAGE = `Usage: npm run pipeline -- [options]

  --docs N            documents to upload (default 100)
  --workers K         worker processes, each with one worker per stage (default 2)
  --latency MS        average latency of each simulated AI service (default 20)
  --failure-rate P    chance of a transient service failure, 0 to 1 (default 0.02)
  --chaos             kill workers with SIGKILL, restart Redis once, add poison documents
  --poison N          poison documents (default: 0, or 1 in 200 with --chaos)
  --parts FILE        your lesson 13 file instead of the reference solution, e.g.
                      --parts workspace/13-capstone-pipeline/stage.ts
  --claim-idle MS     take over entries pending longer than this (default 1500)
  --max-deliveries N  dead-letter a document whose N-th delivery fails (default 4)
  --json              end with the audit as one JSON object on the last line

Example: npm run pipeline -- --docs 1000 --workers 4 --chaos`;

type NumberOption =
  | "docs"
  | "workers"
  | "latencyMs"
  | "failureRate"
  | "poison"
  | "claimIdleMs"
  | "maxDeliveries";

const NUMBERS: Record<string, { field: NumberOption; min: number; max: number; integer: boolean }> =
  {
    "--docs": { field: "docs", min: 1, max: 100_000, integer: true },
    "--workers": { field: "workers", min: 1, max: 32, integer: true },
    "--latency": { field: "latencyMs", min: 0, max: 60_000, integer: true },
    "--failure-rate": { field: "failureRate", min: 0, max: 0.9, integer: false },
    "--poison": { field: "poison", min: 0, max: 100_000, integer: true },
    "--claim-idle": { field: "claimIdleMs", min: 50, max: 600_000, integer: true },
    "--max-deliveries": { field: "maxDeliveries", min: 1, max: 100, integer: true },
  };

export function parsePipelineArgs(argv: string[]): PipelineArgs {
  const args: PipelineArgs = {
    docs: 100,
    workers: 2,
    latencyMs: 20,
    failureRate: 0.02,
    chaos: false,
    json: false,
    help: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    const [name = "", inline] = arg.split("=", 2);
    if (name === "--chaos") args.chaos = true;
    else if (name === "--json") args.json = true;
    else if (name === "--help" || name === "-h") args.help = true;
    else if (name === "--parts") {
      const value = inline ?? argv[++i];
      if (!value) throw new PipelineUsageError("--parts needs a file name.");
      args.parts = value;
    } else if (name in NUMBERS) {
      const spec = NUMBERS[name] as (typeof NUMBERS)[string];
      const text = inline ?? argv[++i];
      const value = Number(text);
      if (text === undefined || text === "" || !Number.isFinite(value)) {
        throw new PipelineUsageError(`${name} needs a number (got ${text ?? "nothing"}).`);
      }
      if (spec.integer && !Number.isInteger(value)) {
        throw new PipelineUsageError(`${name} needs a whole number (got ${text}).`);
      }
      if (value < spec.min || value > spec.max) {
        throw new PipelineUsageError(
          `${name} must be between ${spec.min} and ${spec.max} (got ${text}).`,
        );
      }
      args[spec.field] = value;
    } else {
      throw new PipelineUsageError(`Unknown option "${arg}".`);
    }
  }
  return args;
}

/** With --chaos and no --poison: one poison document per 200, at least two. */
export function poisonCount(args: Pick<PipelineArgs, "chaos" | "poison" | "docs">): number {
  if (args.poison !== undefined) return Math.min(args.poison, args.docs);
  return args.chaos ? Math.min(args.docs, Math.max(2, Math.round(args.docs / 200))) : 0;
}
