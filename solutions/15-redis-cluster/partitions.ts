/**
 * Lesson 15: the pipeline on Redis Cluster (reference solution).
 *
 * A document belongs to one of N partitions; every key of a partition carries the partition's
 * hash tag, so the hand-off transaction touches one slot on one primary, and its status event
 * goes out on a sharded channel of that slot.
 */
import { createHash } from "node:crypto";
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

export function partitionOf(docId: string, partitions: number): number {
  // A hash of the id alone: every process, today and after a restart, puts a document in the
  // same partition, and ids spread evenly whatever they look like.
  return createHash("sha1").update(docId).digest().readUInt32BE(0) % partitions;
}

export function partitionKeys(base: string, partition: number): PartitionKeys {
  // Redis hashes only the part between the first { and the next }: the tag {p3} puts every key
  // of partition 3 in one slot, and different partitions in different slots.
  const tag = `{p${partition}}`;
  return {
    stream: (stage) => `${base}:${tag}:stage:${stage}`,
    doc: (docId) => `${base}:${tag}:doc:${docId}`,
    channel: `${base}:${tag}:status`,
  };
}

export async function handOff(
  cluster: Cluster,
  keys: PartitionKeys,
  group: string,
  stage: Stage,
  next: Stage | null,
  work: Work,
  result: string,
): Promise<void> {
  const event: StatusEvent = { doc: work.doc, stage, state: "done" };
  // One MULTI on the primary of the partition's slot: the result, the next stage's task, the
  // acknowledgement and the news all happen, or none of them does.
  const tx = cluster.multi().hSet(keys.doc(work.doc), stage, result);
  if (next) tx.xAdd(keys.stream(next), "*", { doc: work.doc });
  tx.xAck(keys.stream(stage), group, work.id);
  tx.sPublish(keys.channel, JSON.stringify(event));
  await tx.exec();
}

export async function workRound(
  cluster: Cluster,
  pipeline: Pipeline,
  stage: Stage,
  next: Stage | null,
  handle: (work: Work) => Promise<string>,
  count = 10,
): Promise<number> {
  let handedOff = 0;
  // One read per partition: their streams live in different slots, often on different primaries,
  // and one XREADGROUP may only name keys of one slot.
  for (let partition = 0; partition < pipeline.partitions; partition++) {
    const keys = partitionKeys(pipeline.base, partition);
    const reply = await cluster.xReadGroup(
      pipeline.group,
      pipeline.consumer,
      { key: keys.stream(stage), id: ">" },
      { COUNT: count },
    );
    for (const entry of reply?.[0]?.messages ?? []) {
      const work = { id: entry.id, doc: String(entry.message.doc) };
      let result: string;
      try {
        result = await handle(work);
      } catch {
        // Left pending: a later claim retries it (lessons 09 and 10).
        continue;
      }
      await handOff(cluster, keys, pipeline.group, stage, next, work, result);
      handedOff++;
    }
  }
  return handedOff;
}
