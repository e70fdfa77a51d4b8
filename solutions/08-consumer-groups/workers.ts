/**
 * Lesson 08: Consumer groups share the work (reference solution).
 */
import type { RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** One unit of work for a stage: "run OCR on this document". */
export interface Task {
  /** The stream entry's ID: what XACK needs. */
  id: string;
  docId: string;
}

export interface WorkerOptions {
  stream: string;
  group: string;
  /** This worker's name inside the group, different for every worker (e.g. "ocr-1"). */
  consumer: string;
  /** Does the work. Once it resolves the task is done; if it throws, the task is not. */
  handle(task: Task): void | Promise<void>;
  /** The most tasks to take in one read. */
  count: number;
  /** How long one read waits for new tasks, in milliseconds. */
  blockMs: number;
}

export interface Worker {
  /** Finishes the tasks in hand, stops reading and closes what startWorker() opened. */
  stop(): Promise<void>;
}

/** What XREADGROUP returns for each entry in node-redis. */
type StreamMessage = { id: string; message: Record<string, string> };

export async function enqueue(client: Redis, stream: string, docId: string): Promise<string> {
  return client.xAdd(stream, "*", { docId });
}

export async function ensureGroup(client: Redis, stream: string, group: string): Promise<void> {
  try {
    // "0": the group starts before the first entry, so tasks queued before any worker ran are
    // handed out too. MKSTREAM: a stage may start before anything was ever queued.
    await client.xGroupCreate(stream, group, "0", { MKSTREAM: true });
  } catch (error) {
    // Every instance of a service runs this at start-up; all but the first find the group.
    if (!(error instanceof Error && error.message.startsWith("BUSYGROUP"))) throw error;
  }
}

export async function startWorker(client: Redis, options: WorkerOptions): Promise<Worker> {
  const { stream, group, consumer, handle, count, blockMs } = options;
  // Each worker blocks in XREADGROUP; on a shared connection the workers would take turns.
  const connection = client.duplicate();
  connection.on("error", (error: Error) => console.error(`${consumer}: ${error.message}`));
  await connection.connect();
  // The group is gone (XGROUP DESTROY, or the stream deleted), and Redis answers NOGROUP at once:
  // reading again at once would spin, flooding Redis. Report it, and wait a read's time.
  const groupGone = async (error: Error) => {
    if (!error.message.startsWith("NOGROUP")) throw error;
    console.error(`${consumer}: ${error.message}; reading again in ${blockMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, blockMs));
    return null;
  };
  let stopping = false;

  const running = (async () => {
    try {
      while (!stopping) {
        // ">": tasks never delivered to anyone in the group. COUNT keeps one worker from taking
        // everything; a finite BLOCK lets the loop notice stop().
        const read = connection.xReadGroup(
          group,
          consumer,
          { key: stream, id: ">" },
          { COUNT: count, BLOCK: blockMs },
        );
        const reply = await read.catch(groupGone);
        for (const { messages } of reply ?? []) {
          for (const message of messages as StreamMessage[]) {
            try {
              await handle({ id: message.id, docId: message.message.docId ?? "" });
            } catch (error) {
              // Not acknowledged, so it stays pending: lesson 09 picks such tasks up again.
              console.error(`${consumer}: ${message.id} failed: ${(error as Error).message}`);
              continue;
            }
            await connection.xAck(stream, group, message.id);
          }
        }
      }
    } finally {
      await connection.close();
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
