/**
 * Lesson 08: Consumer groups share the work.
 *
 * Hundreds of documents wait for OCR, and three OCR workers should share them: every document
 * processed once, by exactly one worker. Fill in the three functions below and run
 * `npm run check -- 08` after each one.
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

/** Queues a task for `docId` (one field, docId) and returns the entry's ID. */
export async function enqueue(client: Redis, stream: string, docId: string): Promise<string> {
  // TODO: XADD with an automatic ID.
  throw new Error("TODO: enqueue");
}

/**
 * Makes sure the consumer group exists, creating the stream too if needed. Every worker calls
 * this at start-up, several at the same moment, so calling it when the group already exists is
 * fine and changes nothing; any other error is thrown. A group created now must still hand out
 * the tasks that were queued before it.
 */
export async function ensureGroup(client: Redis, stream: string, group: string): Promise<void> {
  // TODO: XGROUP CREATE with the right start ID and MKSTREAM; ignore only BUSYGROUP errors.
  throw new Error("TODO: ensureGroup");
}

/**
 * Starts a worker in the background and resolves once it is ready. The worker takes tasks
 * nobody in the group has had yet, at most `count` per read, calls handle() for each, and
 * acknowledges each task once handle() has finished with it. A task whose handle() throws or
 * rejects is not acknowledged (it stays pending for lesson 09's recovery), and the worker goes
 * on with the next. The workers of one service run side by side in one process, so `client` is
 * shared by all of them. stop() lets the worker finish the tasks in hand, returns within about
 * blockMs when no task comes, and closes what startWorker() opened. When the group is gone
 * (NOGROUP), it does not read again at once.
 */
export async function startWorker(client: Redis, options: WorkerOptions): Promise<Worker> {
  // TODO: a connection of its own; a loop of XREADGROUP (COUNT, finite BLOCK) -> handle -> XACK;
  //       stop() ends the loop and closes the connection.
  throw new Error("TODO: startWorker");
}
