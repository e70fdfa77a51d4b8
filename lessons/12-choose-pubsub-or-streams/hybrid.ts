/**
 * Lesson 12: Choose pub/sub or Streams.
 *
 * Part 1: decide, for each situation in SCENARIOS, whether it needs pub/sub, Streams or both.
 * Part 2: build the hybrid every AI pipeline ends up with: the work on a stream shared by a
 * consumer group, the progress on pub/sub, and the latest state of each document in a hash.
 *
 * Run `npm run check -- 12` after each function.
 */
import type { RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

export type Choice = "pubsub" | "streams" | "both";

/** Situations on the document platform, each needing a way to pass messages around. */
export const SCENARIOS = {
  "page-redaction":
    "Every page of an uploaded contract must be redacted (names, account numbers) by one of four redaction workers before anyone may read it.",
  "typing-indicator":
    "Reviewers see that a colleague is annotating the same contract right now. If one update is missed, the next comes a second later.",
  "reload-prompts":
    "Every running classifier instance must reload its prompt templates now. An instance that is down loads them when it starts anyway.",
  "billing-usage":
    "Each processed page is billed exactly once, even when the billing service is down for an hour.",
  "compliance-replay":
    "Auditors replay every change of a document's classification during the last quarter, in order.",
  "bulk-upload-progress":
    "A firm uploads 500 contracts at once: the workers must process every one, and the uploader's browser shows a live progress bar.",
  "reindex-after-model-change":
    "After a new embedding model ships, the worker fleet re-embeds all two million stored documents, resuming where it stopped after a crash.",
  "paralegal-inbox":
    "A new filing must be taken on by one paralegal of the on-call team, and every paralegal's screen should flash the moment it arrives.",
} as const;

export type Scenario = keyof typeof SCENARIOS;

/**
 * Ask of each situation: must every message be handled, once, even if nobody is listening right
 * now (Streams)? Or must everyone listening right now hear it, and a missed one does not matter
 * (pub/sub)? Or both at once?
 */
export function choose(scenario: Scenario): Choice {
  // TODO: return "pubsub", "streams" or "both" for each scenario (a switch works well).
  throw new Error("TODO: choose");
}

export interface HybridKeys {
  /** The stream of OCR tasks. */
  tasks: string;
  /** The OCR workers' consumer group. */
  group: string;
  /** The pub/sub channel progress events are published on. */
  progress: string;
  /** The hash of latest states: field = document id, value = its last progress event, as JSON. */
  state: string;
}

export type TaskState = "queued" | "processing" | "done";

/**
 * Each state's version: a task only moves forward, so its step in the lifecycle orders its
 * events. A dashboard keeps the highest version it has shown and drops any event that is not
 * newer (lesson 04).
 */
export const VERSIONS: Record<TaskState, number> = { queued: 1, processing: 2, done: 3 };

/** A progress event, published as JSON and kept as the document's latest state in the hash. */
export interface Progress {
  doc: string;
  state: TaskState;
  version: number;
  worker?: string;
}

/**
 * Creates the consumer group on the task stream, and the stream if needed. Safe to call again:
 * every worker calls it when it starts. Tasks queued before the first worker started are work
 * for the group too.
 */
export async function createGroup(client: Redis, keys: HybridKeys): Promise<void> {
  // TODO: XGROUP CREATE ... MKSTREAM; a BUSYGROUP error means it exists already: that is fine.
  throw new Error("TODO: createGroup");
}

/**
 * Queues OCR for `doc`, all three or none: the task { doc } on the stream, and the event
 * { doc, state: "queued", version: 1 } as JSON both in the hash (field doc) and published on
 * the channel. Returns the entry id.
 */
export async function submitTask(client: Redis, keys: HybridKeys, doc: string): Promise<string> {
  // TODO: XADD, HSET and PUBLISH in one MULTI: a crash between them must not split them.
  throw new Error("TODO: submitTask");
}

/**
 * One step of worker `consumer`: take one new task from the group (waiting up to blockMs
 * milliseconds for one; return undefined if none came), mark it "processing" (hash, then event, with `worker` and
 * its version), run ocr(doc), and only when ocr succeeded, acknowledge it and mark it "done"
 * (hash and event), all three or none. Returns the document id. If ocr fails, the task stays
 * pending and not done: let the error reach the caller (or return undefined).
 */
export async function workOnce(
  client: Redis,
  keys: HybridKeys,
  consumer: string,
  ocr: (doc: string) => Promise<void>,
  blockMs: number,
): Promise<string | undefined> {
  // TODO: XREADGROUP with ">", HSET + PUBLISH "processing", await ocr(doc),
  // then one MULTI: XACK + HSET + PUBLISH "done".
  throw new Error("TODO: workOnce");
}
