/**
 * Everything the dashboard reads from Redis, on two connections of its own: ONE subscriber on
 * the status channel for the whole page (however many tabs), and one for reads. Reads are the
 * latest-status hash (a snapshot per new tab, and again after the subscriber reconnects) and, once
 * a second for all tabs together, the stage counters. Nothing here reads per document, except
 * the names of the few documents the page lists.
 */

import { type PipelineKeys, STAGES, type Stage, stageKeys } from "../keys.ts";
import { connectClient, type Redis } from "../parts.ts";
import { type DocStatus, parseStatus } from "./status.ts";

export interface StageCounters {
  stage: Stage;
  /** Entries not yet delivered to the stage's group (XINFO GROUPS lag). */
  waiting: number;
  /** Delivered and not acknowledged: being worked on, or left by a dead worker. */
  pending: number;
  /** Redeliveries counted by the workers (the stats hash: best effort). */
  retried: number;
  /** How long the oldest waiting entry has waited, in milliseconds (0: none waiting). */
  lagMs: number;
}

export interface RedisSide {
  reader: Redis;
  /** The latest status of every document: HGETALL of the latest-status hash. */
  snapshot(): Promise<DocStatus[]>;
  counters(): Promise<StageCounters[]>;
  /**
   * Dead letters added after entry `after` ("-": all), with the reason each was written with:
   * the page's fallback when a status event carries none (a learner's broadcast may not).
   */
  deadLetters(after: string): Promise<{ id: string; doc: string; reason: string }[]>;
  /** The upload names of these documents, from their hashes. */
  names(ids: string[]): Promise<Map<string, string>>;
  /** Resolves once every status published before it has reached onStatus. */
  drain(): Promise<void>;
  close(): void;
}

export interface RedisSideOptions {
  redisUrl: string;
  keys: PipelineKeys;
  clientName: string;
  onStatus(status: DocStatus): void;
  /** The subscriber is back after a disconnection: statuses were missed, read the hash again. */
  onResubscribed(): void;
  onConnection(up: boolean): void;
}

export async function openRedisSide(options: RedisSideOptions): Promise<RedisSide> {
  const { keys } = options;
  const reader = await connectClient(options.redisUrl, `${options.clientName}reader`, () =>
    options.onConnection(false),
  );
  reader.on("ready", () => options.onConnection(true));
  const subscriber = await connectClient(options.redisUrl, `${options.clientName}subscriber`);
  await subscriber.subscribe(keys.channel, (message) => {
    const status = parseStatus(message);
    try {
      if (status) options.onStatus(status);
    } catch {
      // Caught here: node-redis 6.3 drops the rest of a socket read when a listener throws, so
      // one status the page failed to show would cost every status that came with it. The
      // latest-status hash still has it for the next snapshot.
    }
  });
  // node-redis subscribes again on its own after a reconnection; a PING queued behind that
  // resubscription answers once it is confirmed: only then is the hash worth reading.
  subscriber.on("ready", () => {
    subscriber.ping().then(options.onResubscribed, () => {});
  });

  return {
    reader,
    async snapshot() {
      const all = await reader.hGetAll(keys.status);
      return Object.values(all).flatMap((json) => parseStatus(json) ?? []);
    },
    async counters() {
      const [stats, ...groups] = await Promise.all([
        reader.hGetAll(keys.stats),
        ...STAGES.map((stage) => reader.xInfoGroups(keys.stream(stage))),
      ]);
      return Promise.all(
        STAGES.map(async (stage, i): Promise<StageCounters> => {
          const group = stageKeys(keys, stage).group;
          const info = (groups[i] as unknown as Record<string, unknown>[]).find(
            (g) => String(g.name) === group,
          );
          const waiting = Number(info?.lag ?? 0);
          let lagMs = 0;
          if (waiting > 0) {
            // The next entry the group will be given: its id is the time it was added.
            const [next] =
              (await reader.xRange(
                keys.stream(stage),
                `(${String(info?.["last-delivered-id"] ?? "0-0")}`,
                "+",
                { COUNT: 1 },
              )) ?? [];
            if (next) lagMs = Math.max(0, Date.now() - Number(next.id.split("-")[0]));
          }
          return {
            stage,
            waiting,
            pending: Number(info?.pending ?? 0),
            retried: Number(stats[`${stage}:retried`] ?? 0),
            lagMs,
          };
        }),
      );
    },
    async deadLetters(after) {
      const entries = await reader.xRange(keys.dead, after === "-" ? "-" : `(${after}`, "+", {
        COUNT: 100,
      });
      return (entries ?? []).map((e) => ({
        id: e.id,
        doc: String(e.message.doc ?? ""),
        reason: String(e.message.reason ?? ""),
      }));
    },
    async names(ids) {
      const found = await Promise.all(ids.map((id) => reader.hGet(keys.doc(id), "name")));
      const names = new Map<string, string>();
      ids.forEach((id, i) => {
        const name = found[i];
        if (typeof name === "string") names.set(id, name);
      });
      return names;
    },
    async drain() {
      await subscriber.ping();
    },
    close() {
      subscriber.destroy();
      reader.destroy();
    },
  };
}
