/**
 * The parts of the batched pipeline the learner writes in lesson 16 (lessons/16-throughput/
 * batch.ts): the batched stage loop calls them, and runs the reference solution unless told
 * otherwise.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ROOT } from "../paths.ts";
import type { StageKeys } from "./keys.ts";
import type { Redis, Work } from "./parts.ts";

export type Outcome =
  | { work: Work; result: string }
  | { work: Work; error: string; final: boolean };

export interface Committed {
  handedOff: string[];
  deadLettered: string[];
  duplicates: string[];
}

export interface BatchReadOptions {
  consumer: string;
  count: number;
  blockMs: number;
  claimIdleMs: number;
}

export interface BatchParts {
  readBatch(client: Redis, keys: StageKeys, options: BatchReadOptions): Promise<Work[]>;
  sweep(
    client: Redis,
    keys: StageKeys,
    options: BatchReadOptions,
    cursor: string,
  ): Promise<{ works: Work[]; cursor: string }>;
  inFlight<T, R>(
    items: T[],
    limit: number,
    task: (item: T) => Promise<R>,
  ): Promise<PromiseSettledResult<R>[]>;
  commitBatch(client: Redis, keys: StageKeys, outcomes: Outcome[]): Promise<Committed>;
  trim(client: Redis, stream: string): Promise<number>;
}

export const BATCH_PART_NAMES = ["readBatch", "sweep", "inFlight", "commitBatch", "trim"] as const;

/** The reference solution: what `npm run pipeline` runs unless told otherwise. */
export const SOLUTION_BATCH_PARTS = join(ROOT, "solutions", "16-throughput", "batch.ts");

export async function loadBatchParts(file: string): Promise<BatchParts> {
  const path = resolve(file);
  if (!existsSync(path)) throw new Error(`${file} does not exist.`);
  const module = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  const missing = BATCH_PART_NAMES.filter((name) => typeof module[name] !== "function");
  if (missing.length > 0) {
    throw new Error(`${file} must export ${missing.join(", ")} (see lesson 16).`);
  }
  return module as unknown as BatchParts;
}
