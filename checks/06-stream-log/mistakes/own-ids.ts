// mistake: Builds entry IDs from Date.now() instead of letting Redis choose with "*".
// expect: let Redis choose
/**
 * Lesson 06: Streams are an append-only log.
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

function toEntry({ id, message }: StreamMessage): LogEntry {
  return {
    id,
    event: {
      docId: message.docId ?? "",
      stage: message.stage ?? "",
      status: message.status ?? "",
    },
  };
}

export async function appendEvent(
  client: Redis,
  stream: string,
  event: DocEvent,
  maxLen: number,
): Promise<string> {
  // "*" lets Redis choose an ID larger than every ID before it, even within one millisecond.
  // "~" trims only whole internal nodes: the cheap way to keep a log roughly bounded.
  return client.xAdd(
    stream,
    `${Date.now()}-0`,
    { docId: event.docId, stage: event.stage, status: event.status },
    { TRIM: { strategy: "MAXLEN", strategyModifier: "~", threshold: maxLen } },
  );
}

export async function readPage(
  client: Redis,
  stream: string,
  after: string | null,
  count: number,
): Promise<LogEntry[]> {
  // XRANGE includes its start; "(" makes it exclusive, so the last entry of one page is not
  // the first entry of the next.
  const start = after === null ? "-" : `(${after}`;
  const messages = (await client.xRange(stream, start, "+", { COUNT: count })) ?? [];
  return messages.map(toEntry);
}

export async function latest(client: Redis, stream: string, count: number): Promise<LogEntry[]> {
  const messages = (await client.xRevRange(stream, "+", "-", { COUNT: count })) ?? [];
  return messages.map(toEntry);
}

export async function trimOlderThan(
  client: Redis,
  stream: string,
  maxAgeMs: number,
): Promise<number> {
  // An entry ID starts with its creation time in milliseconds, so "older than" is "ID below".
  // No "~" here: approximate trimming may keep old entries, and a retention promise may not.
  const cutoff = Date.now() - maxAgeMs;
  return client.xTrim(stream, "MINID", cutoff);
}
