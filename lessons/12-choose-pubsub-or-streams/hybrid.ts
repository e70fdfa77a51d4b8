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
  /** The hash of latest states: field = document id, value = "queued" | "processing" | "done". */
  state: string;
}

export type TaskState = "queued" | "processing" | "done";

/** A progress event, published as JSON. */
export interface Progress {
  doc: string;
  state: TaskState;
  worker?: string;
}

/**
 * Creates the consumer group on the task stream, and the stream if needed. Safe to call again:
 * every worker calls it when it starts.
 */
export async function createGroup(client: Redis, keys: HybridKeys): Promise<void> {
  // TODO: XGROUP CREATE ... MKSTREAM; a BUSYGROUP error means it exists already: that is fine.
  throw new Error("TODO: createGroup");
}

/**
 * Queues OCR for `doc`: the task { doc } on the stream, "queued" as its latest state in the hash,
 * and a { doc, state: "queued" } progress event (JSON) on the channel. Returns the entry id.
 */
export async function submitTask(client: Redis, keys: HybridKeys, doc: string): Promise<string> {
  // TODO: XADD, HSET and PUBLISH (a MULTI keeps them together).
  throw new Error("TODO: submitTask");
}

/**
 * One step of worker `consumer`: take one task from the group (waiting at most blockMs; return
 * undefined if none came), mark it "processing" (hash and event, with `worker`), run
 * ocr(doc), then acknowledge it and mark it "done" (hash and event). Returns the document id.
 */
export async function workOnce(
  client: Redis,
  keys: HybridKeys,
  consumer: string,
  ocr: (doc: string) => Promise<void>,
  blockMs: number,
): Promise<string | undefined> {
  // TODO: XREADGROUP with ">", HSET + PUBLISH "processing", await ocr(doc), XACK + HSET + PUBLISH "done".
  throw new Error("TODO: workOnce");
}
