/**
 * Lesson 02: Broadcast status with pub/sub.
 *
 * Every pipeline stage announces each document's progress; every open dashboard shows it.
 * Fill in the two functions below, then run `npm run check -- 02`.
 */
import type { RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** Where a document is in the pipeline. */
export type Stage = "uploaded" | "ocr" | "ner" | "classification" | "embedding" | "done";

/** One status event: document `docId` reached `stage` at `at` (milliseconds since 1970). */
export interface StatusEvent {
  docId: string;
  stage: Stage;
  at: number;
}

/**
 * Publishes `event` on `channel` as JSON and returns how many subscribers received it
 * (what PUBLISH answers).
 */
export async function publishStatus(
  client: Redis,
  channel: string,
  event: StatusEvent,
): Promise<number> {
  // TODO: this first try publishes "[object Object]": run `npm run check -- 02` and look at
  //       "What your code sent to Redis". Publish the event as a JSON string instead.
  return client.publish(channel, String(event));
}

/**
 * Opens one dashboard: calls `onEvent` with every status event published on `channel`, as a
 * StatusEvent object, in the order they were published.
 *
 * - A subscribed connection belongs to its subscriptions: give the dashboard its own connection
 *   (a duplicate of `client`), so `client` stays free for ordinary commands. duplicate() copies
 *   the connection name: give the dashboard's a name of its own. Listeners are not copied:
 *   listen for "error" on the duplicate too (a dropped connection is reported there).
 * - onEvent can throw (a render fails), and so can JSON.parse (a message typed by hand): catch
 *   around both inside your listener, so one bad message costs only itself.
 * - Resolve only once the subscription is active: an event published after openDashboard()
 *   returns must reach the dashboard.
 * - Return a stop() function that unsubscribes and closes the dashboard's connection.
 * - If Redis refuses the subscription, close that connection and reject: the caller gets no
 *   stop() to close it with.
 */
export async function openDashboard(
  client: Redis,
  channel: string,
  onEvent: (event: StatusEvent) => void,
): Promise<() => Promise<void>> {
  // TODO: duplicate the client, connect it, subscribe to the channel, parse each message;
  //       return an async stop() that unsubscribes and closes the duplicate.
  throw new Error("TODO: openDashboard");
}
