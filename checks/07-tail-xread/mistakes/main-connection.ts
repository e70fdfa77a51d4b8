// mistake: Runs the blocking XREAD on the client it was given instead of a connection of its own.
// expect: needs its own connection
/**
 * Lesson 07: Tailing with XREAD BLOCK.
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

export async function startTail(client: Redis, options: TailOptions): Promise<Tail> {
  const { stream, checkpoint, onEntry, blockMs } = options;
  const reader = client;

  // After a restart, continue right after the last entry handled. A reader with no history
  // starts with what arrives from now on: "$".
  let cursor = (await client.get(checkpoint)) ?? "$";
  let stopping = false;

  const running = (async () => {
    while (!stopping) {
      const reply = await reader.xRead({ key: stream, id: cursor }, { BLOCK: blockMs, COUNT: 100 });
      for (const { messages } of reply ?? []) {
        for (const message of messages as StreamMessage[]) {
          await onEntry(toEntry(message));
          cursor = message.id;
          await client.set(checkpoint, cursor);
        }
      }
    }
  })();
  // stop() reports a failure of the loop; until then it must not count as unhandled.
  running.catch(() => {});

  return {
    async stop() {
      stopping = true;
      await running;
    },
  };
}
