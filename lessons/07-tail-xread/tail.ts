/**
 * Lesson 07: Tailing with XREAD BLOCK.
 *
 * Dashboards, the search indexer and the billing service all follow the platform's status
 * stream. Write startTail() so each of them sees every new entry, in order, and after a restart
 * picks up exactly where it left off. Run `npm run check -- 07` to try it.
 */
import type { RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** One status change of one document, as in lesson 06. */
export interface DocEvent {
  docId: string;
  stage: string;
  status: string;
}

/** An event as the stream holds it, with its ID. */
export interface LogEntry {
  id: string;
  event: DocEvent;
}

export interface TailOptions {
  /** The stream to follow. */
  stream: string;
  /** The key where this reader keeps the ID of the last entry it handled. */
  checkpoint: string;
  /** Called once for each entry, in stream order. */
  onEntry(entry: LogEntry): void | Promise<void>;
  /** How long one XREAD waits for new entries, in milliseconds. */
  blockMs: number;
}

export interface Tail {
  /** Stops reading: resolves once the reader has finished and closed its connection. */
  stop(): Promise<void>;
}

/** What XREAD returns for each entry in node-redis. */
type StreamMessage = { id: string; message: Record<string, string> };

/**
 * Starts following `options.stream` in the background and resolves once it is ready.
 *
 * - The first time a reader runs (no checkpoint yet) it hands over only entries added from now
 *   on: it resolves "$" to a real ID (the stream's newest entry, or "0-0") when it starts and
 *   saves that as its checkpoint at once. After a restart it continues right after the entry
 *   named in the checkpoint: nothing missed while it was down.
 * - Each entry goes to onEntry(), in order; once onEntry() has finished, the checkpoint is
 *   saved. A crash between the two hands that one entry over again after a restart.
 * - If onEntry() throws or rejects, the checkpoint stays before that entry: the reader tries it
 *   again, or stops there (stop() may then report the error).
 * - `client` must stay free for other work while the reader waits for new entries.
 * - stop() ends the loop within about blockMs and closes what startTail() opened.
 */
export async function startTail(client: Redis, options: TailOptions): Promise<Tail> {
  // TODO: a connection of its own for the blocking reads (client.duplicate(), connect()).
  // TODO: the starting ID: the saved checkpoint, or, when there is none, the ID of the
  //       stream's newest entry ("0-0" if it has none), saved as the checkpoint at once.
  // TODO: a loop in the background: XREAD BLOCK blockMs from the current ID; for each entry
  //       call onEntry, move the current ID to it and save the checkpoint. Stop when asked.
  throw new Error("TODO: startTail");
}
