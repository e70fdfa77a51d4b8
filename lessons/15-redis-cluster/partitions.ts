/**
 * Lesson 15: the pipeline on Redis Cluster.
 *
 * Each document belongs to one of N partitions. All keys of a partition (its four stage streams,
 * its documents' hashes, its status channel) carry the partition's hash tag, so they live in one
 * slot on one primary: the hand-off transaction works there, and the partitions together spread
 * the documents over every primary. Run `npm run check -- 15` after each function.
 */
import type { RedisClusterType } from "redis";

/** What createCluster() returns with the default options (RESP3). */
export type Cluster = RedisClusterType<{}, {}, {}, 3, {}>;

export type Stage = "ocr" | "ner" | "classify" | "embed";

/** The names of one partition. Every one of them must hash to the same slot. */
export interface PartitionKeys {
  /** A stage's work stream in this partition. */
  stream(stage: Stage): string;
  /** A document's hash: one field per finished stage, the stage's result. */
  doc(docId: string): string;
  /** The sharded pub/sub channel for this partition's status events. */
  channel: string;
}

/** What a stage worker of the pipeline runs as. */
export interface Pipeline {
  /** The start of every key name, e.g. "pipeline". */
  base: string;
  /** How many partitions the documents are spread over. */
  partitions: number;
  /** The consumer group of the stage, on each partition's stream of that stage. */
  group: string;
  /** This worker's consumer name. */
  consumer: string;
}

/** One entry of a stage stream: which document. */
export interface Work {
  id: string;
  doc: string;
}

/** What handOff() publishes, as JSON. */
export interface StatusEvent {
  doc: string;
  stage: Stage;
  state: "done";
}

/**
 * The partition (0 to partitions - 1) of a document: the same answer for the same id in every
 * process, every time, and documents spread evenly over the partitions.
 */
export function partitionOf(docId: string, partitions: number): number {
  // TODO: a hash of docId (node:crypto works), modulo partitions.
  throw new Error("TODO: partitionOf");
}

/**
 * The key and channel names of partition `partition`, each starting with `base`, all sharing
 * the partition's hash tag, and different for every partition.
 */
export function partitionKeys(base: string, partition: number): PartitionKeys {
  // TODO: `${base}:{p${partition}}:stage:${stage}` and so on.
  throw new Error("TODO: partitionKeys");
}

/**
 * Records `result` as `stage`'s field of the document's hash, queues the document on the `next`
 * stage's stream of the same partition (none after the last stage), acknowledges `work` in
 * `group`, and sends a StatusEvent (state "done") on the partition's sharded channel: all of
 * it or none of it.
 */
export async function handOff(
  cluster: Cluster,
  keys: PartitionKeys,
  group: string,
  stage: Stage,
  next: Stage | null,
  work: Work,
  result: string,
): Promise<void> {
  // TODO: cluster.multi() with hSet, xAdd (when next), xAck and sPublish, then exec().
  throw new Error("TODO: handOff");
}

/**
 * One round of a `stage` worker: takes up to `count` new entries (no blocking) from the stage's
 * stream of each partition (count per partition, not in total), calls handle() on each and hands it off with handle()'s result. A
 * document whose handle() fails stays pending and the round goes on. A read or a hand-off that
 * fails (Redis refused it, or the connection dropped) is not the document's fault: catch only
 * handle()'s error and let Redis's reject workRound(), so the caller sees it (what Redis did
 * not apply stays pending). The groups already exist. Returns how many documents it
 * handed off, once every hand-off has been answered.
 */
export async function workRound(
  cluster: Cluster,
  pipeline: Pipeline,
  stage: Stage,
  next: Stage | null,
  handle: (work: Work) => Promise<string>,
  count = 10,
): Promise<number> {
  // TODO: for every partition, XREADGROUP ... STREAMS <its stream> >, then handle and handOff.
  throw new Error("TODO: workRound");
}
