/**
 * Recovery made visible: when a worker process dies, the entries its consumers held are read
 * (they can only change hands now), then watched once a second until each has been claimed by a
 * live worker (XAUTOCLAIM raises its delivery count, or hands it to another consumer, or it was
 * acknowledged since) and each of those documents is finished.
 */

import { type PipelineKeys, STAGES, type Stage, stageKeys } from "../keys.ts";
import type { Redis } from "../parts.ts";
import { type DocStatus, isFinished } from "./status.ts";

export interface HeldEntry {
  stage: Stage;
  id: string;
  doc: string;
  deliveries: number;
  consumer: string;
  /** Who has it now ("" once acknowledged), set when it was claimed. */
  claimedBy?: string;
  finished?: boolean;
}

export interface Recovery {
  slot: string;
  pid: number;
  entries: HeldEntry[];
  done: boolean;
}

/**
 * A worker's consumers are "<stage>-<slot>" (src/pipeline/worker-settings.ts): the replacement
 * of a killed worker takes its slot, and so its consumer names.
 */
export function consumerOf(stage: Stage, slot: string): string {
  return `${stage}-${slot}`;
}

/** The entries the consumers of worker `slot` hold, with the document of each. */
export async function heldBy(client: Redis, keys: PipelineKeys, slot: string) {
  const perStage = await Promise.all(
    STAGES.map(async (stage) => {
      const { stream, group } = stageKeys(keys, stage);
      const consumer = consumerOf(stage, slot);
      const pending = await client.xPendingRange(stream, group, "-", "+", 1000, { consumer });
      return Promise.all(
        pending.map(async (p): Promise<HeldEntry> => {
          const [entry] = (await client.xRange(stream, p.id, p.id)) ?? [];
          const doc = String(entry?.message.doc ?? "?");
          return { stage, id: p.id, doc, deliveries: p.deliveriesCounter, consumer };
        }),
      );
    }),
  );
  return perStage.flat();
}

/** How many entries each worker slot holds, over all stages. */
export async function heldPerSlot(
  client: Redis,
  keys: PipelineKeys,
  slots: string[],
): Promise<Map<string, number>> {
  const summaries = await Promise.all(
    STAGES.map((stage) => {
      const { stream, group } = stageKeys(keys, stage);
      return client.xPending(stream, group).then((summary) => ({ stage, summary }));
    }),
  );
  const held = new Map(slots.map((slot) => [slot, 0]));
  for (const { stage, summary } of summaries) {
    for (const { name, deliveriesCounter } of summary.consumers ?? []) {
      const slot = slots.find((s) => consumerOf(stage, s) === name);
      if (slot !== undefined) held.set(slot, (held.get(slot) ?? 0) + Number(deliveriesCounter));
    }
  }
  return held;
}

/** What changed since the last look: entries newly claimed, documents newly finished. */
export async function follow(
  client: Redis,
  keys: PipelineKeys,
  recovery: Recovery,
  docs: Map<string, DocStatus>,
): Promise<{ claimed: HeldEntry[]; finished: HeldEntry[] }> {
  const claimed: HeldEntry[] = [];
  const finished: HeldEntry[] = [];
  const waiting = recovery.entries.filter((e) => e.claimedBy === undefined);
  const now = await Promise.all(
    waiting.map((e) => {
      const { stream, group } = stageKeys(keys, e.stage);
      return client.xPendingRange(stream, group, e.id, e.id, 1);
    }),
  );
  waiting.forEach((entry, i) => {
    const [pending] = now[i] ?? [];
    if (!pending) entry.claimedBy = "";
    else if (pending.deliveriesCounter > entry.deliveries || pending.consumer !== entry.consumer)
      entry.claimedBy = pending.consumer;
    if (entry.claimedBy !== undefined) claimed.push(entry);
  });
  for (const entry of recovery.entries) {
    const status = docs.get(entry.doc);
    if (!entry.finished && entry.claimedBy !== undefined && status && isFinished(status)) {
      entry.finished = true;
      finished.push(entry);
    }
  }
  recovery.done = recovery.entries.every((e) => e.finished);
  return { claimed, finished };
}
