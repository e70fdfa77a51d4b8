/**
 * Lesson 07: Tailing with XREAD BLOCK (reference solution).
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

/**
 * Where a reader starts: right after the last entry it handled, or, with no history, after the
 * stream's newest entry ("0-0" for an empty or missing stream). "$" is resolved to a real ID
 * here and saved at once: kept as the cursor it would skip whatever arrives between a read that
 * timed out and the next, and a reader restarted before its first entry would lose what
 * arrived meanwhile.
 */
async function startingId(client: Redis, stream: string, checkpoint: string): Promise<string> {
  const saved = await client.get(checkpoint);
  if (saved !== null) return saved;
  const [newest] = (await client.xRevRange(stream, "+", "-", { COUNT: 1 })) ?? [];
  const start = newest?.id ?? "0-0";
  await client.set(checkpoint, start);
  return start;
}

export async function startTail(client: Redis, options: TailOptions): Promise<Tail> {
  const { stream, checkpoint, onEntry, blockMs } = options;
  let cursor = await startingId(client, stream, checkpoint);
  // A blocked XREAD holds its connection until it returns. On the shared client every other
  // command (the API's, the checkpoint's) would queue behind it.
  const reader = client.duplicate();
  reader.on("error", (error: Error) => console.error(`tail ${stream}: ${error.message}`));
  await reader.connect();
  let stopping = false;

  const running = (async () => {
    try {
      while (!stopping) {
        // A finite BLOCK returns null now and then, which is when the loop notices stop().
        const reply = await reader.xRead(
          { key: stream, id: cursor },
          { BLOCK: blockMs, COUNT: 100 },
        );
        for (const { messages } of reply ?? []) {
          for (const message of messages as StreamMessage[]) {
            // The work first, then the checkpoint: a crash between the two hands this entry
            // over again after a restart (at least once) rather than skipping it. If onEntry
            // throws, the loop ends here, unsaved, and stop() reports the error.
            await onEntry(toEntry(message));
            cursor = message.id;
            await client.set(checkpoint, cursor);
          }
        }
      }
    } finally {
      await reader.close();
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
