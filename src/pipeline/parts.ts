/**
 * The parts of the pipeline the learner writes in lesson 13 (lessons/13-capstone-pipeline/
 * stage.ts): the system calls them, and runs the reference solution when no other file is given.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { createClient, type RedisClientType } from "redis";
import { ROOT } from "../paths.ts";
import { tlsSocketOptions } from "../redis/tls.ts";
import type { StageKeys, StatusEvent } from "./keys.ts";

export type Redis = RedisClientType<{}, {}, {}, 3, {}>;
export type Transaction = ReturnType<Redis["multi"]>;

export interface Work {
  id: string;
  doc: string;
  deliveries: number;
}

export interface ReadOptions {
  consumer: string;
  claimIdleMs: number;
  blockMs: number;
}

export interface Parts {
  nextWork(client: Redis, keys: StageKeys, options: ReadOptions): Promise<Work | undefined>;
  handOff(client: Redis, keys: StageKeys, work: Work, result: string): Promise<boolean>;
  deadLetter(client: Redis, keys: StageKeys, work: Work, reason: string): Promise<void>;
  broadcast(tx: Transaction, keys: Pick<StageKeys, "status" | "channel">, event: StatusEvent): void;
}

export const PART_NAMES = ["nextWork", "handOff", "deadLetter", "broadcast"] as const;

/** The reference solution: what `npm run pipeline` runs unless told otherwise. */
export const SOLUTION_PARTS = join(ROOT, "solutions", "13-capstone-pipeline", "stage.ts");

/**
 * A connection of the system's own (not the learner's): it keeps reconnecting, so it rides out
 * a Redis restart. `onError` hears the first error of each outage, not every retry's.
 */
export async function connectClient(
  url: string,
  name: string,
  onError?: (error: Error) => void,
): Promise<Redis> {
  const client: Redis = createClient({
    url,
    name,
    socket: {
      reconnectStrategy: (retries: number) => Math.min(100 * (retries + 1), 1000),
      ...tlsSocketOptions(url),
    },
  });
  let reported = false;
  client.on("error", (error: Error) => {
    if (!reported) onError?.(error);
    reported = true;
  });
  client.on("ready", () => {
    reported = false;
  });
  await client.connect();
  return client;
}

export async function loadParts(file: string): Promise<Parts> {
  const path = resolve(file);
  if (!existsSync(path)) throw new Error(`${file} does not exist.`);
  const module = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  const missing = PART_NAMES.filter((name) => typeof module[name] !== "function");
  if (missing.length > 0) {
    throw new Error(`${file} must export ${missing.join(", ")} (see lesson 13).`);
  }
  return module as unknown as Parts;
}
