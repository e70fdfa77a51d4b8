/**
 * Lesson 06: Streams are an append-only log.
 *
 * The platform keeps an audit trail of every document's progress in a stream: one entry per
 * status change. Fill in the four functions below and run `npm run check -- 06` after each one.
 */
import type { RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** One status change of one document, e.g. { docId: "doc-17", stage: "ocr", status: "done" }. */
export interface DocEvent {
  docId: string;
  stage: string;
  status: string;
}

/** An event as the stream holds it, with the ID Redis gave it. */
export interface LogEntry {
  id: string;
  event: DocEvent;
}

/** What XRANGE and XREVRANGE return for each entry in node-redis. */
type StreamMessage = { id: string; message: Record<string, string> };

/**
 * Appends `event` to the stream, one field per property (docId, stage, status), and returns the
 * ID Redis gave the new entry. Let Redis choose the ID.
 *
 * Keep the log bounded while you append: it should hold roughly the newest `maxLen` entries,
 * never fewer. Cheap, approximate trimming is exactly right here.
 */
export async function appendEvent(
  client: Redis,
  stream: string,
  event: DocEvent,
  maxLen: number,
): Promise<string> {
  // TODO: XADD with an automatic ID, the three fields and MAXLEN ~ maxLen.
  throw new Error("TODO: appendEvent");
}

/**
 * One page of the log, oldest first: up to `count` entries that come strictly after the entry
 * with ID `after`, or from the very beginning when `after` is null.
 *
 * Reading a whole log is a loop: readPage(null), then readPage(<last ID of that page>), ...
 * until a page comes back empty. Every entry must show up exactly once.
 */
export async function readPage(
  client: Redis,
  stream: string,
  after: string | null,
  count: number,
): Promise<LogEntry[]> {
  // TODO: XRANGE from the right start to "+" with COUNT, mapped to LogEntry objects.
  throw new Error("TODO: readPage");
}

/** The `count` newest entries, newest first: a dashboard's "recent activity" panel. */
export async function latest(client: Redis, stream: string, count: number): Promise<LogEntry[]> {
  // TODO: XREVRANGE with COUNT.
  throw new Error("TODO: latest");
}

/**
 * Deletes every entry older than `maxAgeMs` milliseconds (judged by the time inside its ID, also
 * in milliseconds) and returns how many were deleted. This is a retention promise to our customers: no entry older
 * than the limit may survive.
 */
export async function trimOlderThan(
  client: Redis,
  stream: string,
  maxAgeMs: number,
): Promise<number> {
  // TODO: XTRIM with MINID and the right cutoff.
  throw new Error("TODO: trimOlderThan");
}
