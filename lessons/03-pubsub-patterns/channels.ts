/**
 * Lesson 03: Patterns and channel design.
 *
 * Each pipeline stage publishes on its own channel; an ops console follows all of them with one
 * pattern. Fill in the four functions below, then run `npm run check -- 03`.
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

/**
 * The channel a stage publishes on: `<prefix>docs:status:<stage>`,
 * e.g. stageChannel("acme:", "ocr") is "acme:docs:status:ocr".
 */
export function stageChannel(prefix: string, stage: string): string {
  // TODO: build the channel name.
  throw new Error("TODO: stageChannel");
}

/** The pattern that matches every stage channel under `prefix`, and nothing else. */
export function allStagesPattern(prefix: string): string {
  // TODO: a glob-style pattern over the stage channels.
  throw new Error("TODO: allStagesPattern");
}

/**
 * Follows every stage channel under `prefix`, including stages added after this code was
 * written. Calls `onEvent(channel, event)` once per published event, with the channel the event
 * was published on and the parsed event. `onEvent` may throw (a render can fail), and so can
 * JSON.parse (a message typed by hand): either must cost only its own message.
 *
 * `subscriber` is a connected client set aside for subscriptions. It belongs to the caller and
 * may carry other subscriptions. Resolve once the subscription is active; return an unwatch()
 * that removes this subscription only, and leaves the connection open.
 */
export async function watchAllStages(
  subscriber: Redis,
  prefix: string,
  onEvent: (channel: string, event: StatusEvent) => void,
): Promise<() => Promise<void>> {
  // TODO: PSUBSCRIBE to the pattern; the listener gets (message, channel).
  //       unwatch() removes the pattern subscription.
  throw new Error("TODO: watchAllStages");
}

/**
 * How many connections are subscribed to each of `channels` (by name, not by pattern), and how
 * many pattern subscriptions exist on the whole server.
 */
export async function countSubscribers(
  client: Redis,
  channels: string[],
): Promise<{ channels: Record<string, number>; patterns: number }> {
  // TODO: PUBSUB NUMSUB for the channels, PUBSUB NUMPAT for the patterns.
  throw new Error("TODO: countSubscribers");
}
