/**
 * One page for a run of several partitions (`--cluster`): each partition is a whole pipeline
 * with its own keys, channel and workers, so the dashboard opens one RedisSide per partition (a
 * subscriber on each partition's channel) and shows them merged. Document ids are unique across
 * partitions; worker slots are not, so the page names a worker "<tag>/<slot>".
 */
import type { Upload } from "../documents.ts";
import type { PipelineKeys } from "../keys.ts";
import type { Workers } from "./actions.ts";
import type { RedisSide, StageCounters } from "./redis-side.ts";

export interface DashboardPartition {
  /** The partition's hash tag, e.g. "{p0}"; "" for a single-server run. */
  tag: string;
  redisUrl: string;
  keys: PipelineKeys;
  supervisor: Workers;
  /** Uploads a document into this partition's run (counted by its audit); its id. */
  upload(upload: Upload): Promise<string>;
}

/** How the page names worker `slot` of the partition with `tag`. */
export function workerLabel(tag: string, slot: string): string {
  return tag ? `${tag}/${slot}` : slot;
}

/** The stage counters of every partition, added up stage by stage. */
export function addCounters(all: StageCounters[][]): StageCounters[] {
  const [first = [], ...rest] = all;
  return first.map((c, i) =>
    rest.reduce(
      (sum, more) => {
        const m = more[i];
        if (!m) return sum;
        return {
          stage: sum.stage,
          waiting: sum.waiting + m.waiting,
          pending: sum.pending + m.pending,
          retried: sum.retried + m.retried,
          lagMs: Math.max(sum.lagMs, m.lagMs),
        };
      },
      { ...c },
    ),
  );
}

/**
 * The partitions' sides read as one: snapshots and names joined, counters added, dead letters
 * read on from a cursor per partition (the id the page keeps is all of them, as JSON).
 */
export function mergedSide(sides: RedisSide[]): Omit<RedisSide, "reader"> {
  if (sides.length === 1 && sides[0]) return sides[0];
  return {
    async snapshot() {
      return (await Promise.all(sides.map((s) => s.snapshot()))).flat();
    },
    async counters() {
      return addCounters(await Promise.all(sides.map((s) => s.counters())));
    },
    async deadLetters(after) {
      const cursors: string[] = after === "-" ? sides.map(() => "-") : JSON.parse(after);
      const found = await Promise.all(sides.map((s, i) => s.deadLetters(cursors[i] ?? "-")));
      return found.flatMap((letters, i) =>
        letters.map((letter) => {
          cursors[i] = letter.id;
          return { ...letter, id: JSON.stringify(cursors) };
        }),
      );
    },
    async names(ids) {
      const found = await Promise.all(sides.map((s) => s.names(ids)));
      return new Map(found.flatMap((names) => [...names]));
    },
    async drain() {
      await Promise.all(sides.map((s) => s.drain()));
    },
    close() {
      for (const side of sides) side.close();
    },
  };
}
