// variant: createClient(client.options) with a name of its own, for(;;) loop, retries a failed entry, COUNT 10
/**
 * Lesson 07, another right answer: a client of its own from createClient(client.options), a
 * for(;;) loop that retries an entry whose onEntry() failed instead of stopping there.
 */
import { createClient, type RedisClientType } from "redis";

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
  let cursor = await client.get(checkpoint);
  if (cursor === null) {
    const newest = await client.xRevRange(stream, "+", "-", { COUNT: 1 });
    cursor = newest?.[0]?.id ?? "0-0";
    await client.set(checkpoint, cursor);
  }
  // A client of its own, built from the same options, under a name of its own.
  const reader = createClient({ ...client.options, name: "tail-own-reader" });
  reader.on("error", () => {});
  await reader.connect();
  let stopping = false;

  async function loop(from: string): Promise<void> {
    let position = from;
    for (;;) {
      if (stopping) break;
      const reply = await reader.xRead(
        { key: stream, id: position },
        { BLOCK: blockMs, COUNT: 10 },
      );
      const messages = (reply?.[0]?.messages ?? []) as StreamMessage[];
      for (const message of messages) {
        try {
          await onEntry(toEntry(message));
        } catch {
          // Keep the position: the same entry is read again after a pause.
          await new Promise((resolve) => setTimeout(resolve, blockMs));
          break;
        }
        position = message.id;
        await client.set(checkpoint, position);
      }
    }
  }
  const running = loop(cursor).finally(() => reader.close());
  running.catch(() => {});

  return {
    async stop() {
      stopping = true;
      await running;
    },
  };
}
