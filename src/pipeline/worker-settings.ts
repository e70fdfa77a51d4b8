import type { BatchSettings } from "./batch-loop.ts";
import type { Stage } from "./keys.ts";
import type { ReplicaWait } from "./replica-wait.ts";
import type { LoopConfig } from "./stage-loop.ts";

/** What the supervisor tells a worker process, as JSON in PIPELINE_WORKER. */
export interface WorkerSettings {
  redisUrl: string;
  prefix: string;
  /** Consumer names are "<stage>-<slot>": a replacement for a killed worker reuses them. */
  slot: string;
  /** Connection names are this plus "<stage>-<slot>". */
  clientName: string;
  stages: Stage[];
  parts: string;
  loop: LoopConfig;
  /** Batched stages (lesson 16); absent: one document at a time with `parts` (lesson 13). */
  batch?: BatchSettings;
  /** On a cluster: WAIT after each hand-off, dead letter and batch commit (replica-wait.ts). */
  replicaWait?: ReplicaWait;
}

/** The line a worker prints once every connection is ready. */
export const READY_LINE = "@@pipeline-worker-ready";
