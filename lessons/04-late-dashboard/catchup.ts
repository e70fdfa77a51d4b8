/**
 * Lesson 04: What pub/sub does not promise.
 *
 * A dashboard that opens late has missed every status published before it subscribed: pub/sub
 * keeps nothing. Keep each document's latest status in a hash, and make a late dashboard catch
 * up from it without losing or repeating anything. Run `npm run check -- 04` as you go.
 */
import type { RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

export type Stage = "uploaded" | "ocr" | "ner" | "classification" | "embedding" | "done";

/**
 * A document's status. `version` goes up by one with every change to that document, so of two
 * statuses for the same document the higher version is the newer one.
 */
export interface DocStatus {
  docId: string;
  stage: Stage;
  version: number;
  at: number;
}

/** Where statuses live: the live channel, and the hash of each document's latest status. */
export interface StatusKeys {
  channel: string;
  latest: string;
}

/**
 * Records `status` as its document's latest (field docId of the hash keys.latest, the status as
 * JSON) and publishes the same JSON on keys.channel. The hash must hold the status no later
 * than the PUBLISH goes out: a dashboard may read it at any moment.
 */
export async function publishStatus(
  client: Redis,
  keys: StatusKeys,
  status: DocStatus,
): Promise<void> {
  // TODO: HSET and PUBLISH inside one MULTI/EXEC.
  throw new Error("TODO: publishStatus");
}

/**
 * Opens a dashboard that may join long after the pipeline started. Calls `onChange` with each
 * status the dashboard shows: first the latest status of every document already known, then
 * every newer status as it is published.
 *
 * - No gap: a status published at any moment, even while the dashboard is joining, must
 *   reach it (through the hash or live).
 * - No repeats, no going back: for each document, onChange sees strictly increasing versions.
 * - onChange may throw (a screen can fail), and so can JSON.parse (a message typed by hand): once
 *   the dashboard is up, that costs only the message at hand; the statuses after it still show.
 * - Resolve once the dashboard is up to date; return a stop() that unsubscribes and closes its
 *   own connection. If it cannot get there (the subscription or the read refused, onChange
 *   throwing), close that connection and reject.
 */
export async function openDashboard(
  client: Redis,
  keys: StatusKeys,
  onChange: (status: DocStatus) => void,
): Promise<() => Promise<void>> {
  // TODO: 1. subscribe on a duplicate connection, buffering live statuses;
  //       2. read the hash (HGETALL) and show each status;
  //       3. show the buffered statuses, then live ones, each only if its version is newer.
  throw new Error("TODO: openDashboard");
}
