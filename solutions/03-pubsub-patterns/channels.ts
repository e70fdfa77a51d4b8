/**
 * Lesson 03: Patterns and channel design (reference solution).
 */
import type { RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** One status event. `stage` is a string: teams add stages ("translation", ...) over time. */
export interface StatusEvent {
  docId: string;
  stage: string;
  at: number;
}

export function stageChannel(prefix: string, stage: string): string {
  // Most general to most specific, colon-separated: one pattern can then select a whole family.
  return `${prefix}docs:status:${stage}`;
}

export function allStagesPattern(prefix: string): string {
  // The prefix is literal: *, ? and [ in it (and the backslash) must not act as wildcards.
  return `${prefix.replace(/[*?[\]\\]/g, "\\$&")}docs:status:*`;
}

export async function watchAllStages(
  subscriber: Redis,
  prefix: string,
  onEvent: (channel: string, event: StatusEvent) => void,
): Promise<() => Promise<void>> {
  const pattern = allStagesPattern(prefix);
  // A pattern listener gets the channel the message was published on, not the pattern.
  const listener = (message: string, channel: string) => {
    // Caught here: node-redis 6.3 drops the rest of a read when a listener throws, so one
    // failing render would also lose the events that arrived with it.
    try {
      onEvent(channel, JSON.parse(message) as StatusEvent);
    } catch (error) {
      const name = subscriber.options?.name ?? "ops console";
      console.error(
        `${name}: could not show ${message} from ${channel}: ${(error as Error).message}`,
      );
    }
  };
  await subscriber.pSubscribe(pattern, listener);
  // The connection is the caller's and may carry other subscriptions: remove only our own.
  return () => subscriber.pUnsubscribe(pattern, listener);
}

export async function countSubscribers(
  client: Redis,
  channels: string[],
): Promise<{ channels: Record<string, number>; patterns: number }> {
  const [numsub, patterns] = await Promise.all([
    client.pubSubNumSub(channels),
    client.pubSubNumPat(),
  ]);
  const counts: Record<string, number> = {};
  for (const channel of channels) counts[channel] = Number(numsub[channel] ?? 0);
  return { channels: counts, patterns };
}
