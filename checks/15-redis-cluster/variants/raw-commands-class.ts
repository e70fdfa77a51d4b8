// variant: raw commands through cluster.sendCommand and multi().addCommand, an FNV-1a hash, a class for the names
/**
 * Lesson 15: the pipeline on Redis Cluster (reference solution).
 *
 * A document belongs to one of N partitions; every key of a partition carries the partition's
 * hash tag, so the hand-off transaction touches one slot on one primary, and its status event
 * goes out on a sharded channel of that slot.
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

export function partitionOf(docId: string, partitions: number): number {
  let h = 0x811c9dc5;
  for (const byte of Buffer.from(docId, "utf8")) {
    h ^= byte;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % partitions;
}

class Partition implements PartitionKeys {
  readonly channel: string;
  constructor(
    private readonly base: string,
    private readonly tag: string,
  ) {
    this.channel = `${base}:${tag}:status`;
  }
  stream(stage: Stage): string {
    return `${this.base}:${this.tag}:stage:${stage}`;
  }
  doc(docId: string): string {
    return `${this.base}:${this.tag}:doc:${docId}`;
  }
}

export function partitionKeys(base: string, partition: number): PartitionKeys {
  return new Partition(base, `{part-${partition}}`);
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
  const docKey = keys.doc(work.doc);
  const tx = cluster.multi();
  tx.addCommand(docKey, false, ["HSET", docKey, stage, result]);
  if (next !== null)
    tx.addCommand(docKey, false, ["XADD", keys.stream(next), "*", "doc", work.doc]);
  tx.addCommand(docKey, false, ["XACK", keys.stream(stage), group, work.id]);
  tx.addCommand(docKey, false, [
    "SPUBLISH",
    keys.channel,
    JSON.stringify({ stage, state: "done", doc: work.doc }),
  ]);
  await tx.exec();
}

type RawEntry = [string, string[] | null];

function entriesOf(reply: unknown): RawEntry[] {
  if (reply == null) return [];
  if (reply instanceof Map) return [...reply.values()].flat() as RawEntry[];
  if (Array.isArray(reply)) return (reply as [string, RawEntry[]][]).flatMap((s) => s[1]);
  return Object.values(reply as Record<string, RawEntry[]>).flat();
}

export async function workRound(
  cluster: Cluster,
  pipeline: Pipeline,
  stage: Stage,
  next: Stage | null,
  handle: (work: Work) => Promise<string>,
  count = 10,
): Promise<number> {
  let n = 0;
  for (const partition of Array.from({ length: pipeline.partitions }, (_, i) => i)) {
    const keys = partitionKeys(pipeline.base, partition);
    const stream = keys.stream(stage);
    const reply = await cluster.sendCommand(stream, false, [
      "XREADGROUP",
      "GROUP",
      pipeline.group,
      pipeline.consumer,
      "COUNT",
      String(count),
      "STREAMS",
      stream,
      ">",
    ]);
    for (const [id, fields] of entriesOf(reply)) {
      const f = fields ?? [];
      const doc = String(f[f.indexOf("doc") + 1]);
      const result = await Promise.resolve()
        .then(() => handle({ id, doc }))
        .catch(() => undefined);
      if (result === undefined) continue;
      await handOff(cluster, keys, pipeline.group, stage, next, { id, doc }, result);
      n += 1;
    }
  }
  return n;
}
