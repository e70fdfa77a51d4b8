// variant: sendCommand XREAD, start from XINFO STREAM last-generated-id, recursion, duplicate({ name })
/**
 * Lesson 07, another right answer: sendCommand for every command, XINFO STREAM for the start,
 * a recursive read loop and a named duplicate for the blocking reads.
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

/** XREAD's reply as sendCommand returns it with RESP3: stream name -> [[id, [field, value, ...]]]. */
type RawReply = Record<string, [string, string[]][]> | null;

function toEvent(fields: string[]): DocEvent {
  const map = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) map.set(fields[i] ?? "", fields[i + 1] ?? "");
  return {
    docId: map.get("docId") ?? "",
    stage: map.get("stage") ?? "",
    status: map.get("status") ?? "",
  };
}

/** The stream's last ID as XINFO STREAM reports it; "0-0" when the stream does not exist yet. */
async function lastId(client: Redis, stream: string): Promise<string> {
  try {
    const info = (await client.sendCommand(["XINFO", "STREAM", stream])) as Record<string, unknown>;
    return String(info["last-generated-id"]);
  } catch (error) {
    if ((error as Error).message.includes("no such key")) return "0-0";
    throw error;
  }
}

export async function startTail(client: Redis, options: TailOptions): Promise<Tail> {
  const { stream, checkpoint, onEntry, blockMs } = options;
  let cursor = await client.sendCommand<string | null>(["GET", checkpoint]);
  if (cursor === null) {
    cursor = await lastId(client, stream);
    await client.sendCommand(["SET", checkpoint, cursor]);
  }
  const reader = client.duplicate({ name: "tail-reader" });
  reader.on("error", () => {});
  await reader.connect();
  let stopping = false;

  const readFrom = async (from: string): Promise<void> => {
    if (stopping) return;
    const reply = await reader.sendCommand<RawReply>([
      "XREAD",
      "BLOCK",
      String(blockMs),
      "COUNT",
      "50",
      "STREAMS",
      stream,
      from,
    ]);
    let last = from;
    for (const [id, fields] of reply?.[stream] ?? []) {
      await onEntry({ id, event: toEvent(fields) });
      last = id;
      await client.sendCommand(["SET", checkpoint, last]);
    }
    return readFrom(last);
  };
  const running = readFrom(cursor).finally(() => reader.close());
  running.catch(() => {});

  return {
    stop: () => {
      stopping = true;
      return running;
    },
  };
}
