/**
 * Lesson 12: Choose pub/sub or Streams (reference solution).
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

export function choose(scenario: Scenario): Choice {
  switch (scenario) {
    // Work that must be done once, by one of several workers, and survive their downtime.
    case "page-redaction":
    case "billing-usage":
    case "reindex-after-model-change":
      return "streams";
    // A history to read again, in order: only a stream keeps it.
    case "compliance-replay":
      return "streams";
    // Everyone listening now, nobody later: a missed message is harmless or replaced.
    case "typing-indicator":
    case "reload-prompts":
      return "pubsub";
    // Work that must not be lost, plus people watching it happen.
    case "bulk-upload-progress":
    case "paralegal-inbox":
      return "both";
  }
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

export async function createGroup(client: Redis, keys: HybridKeys): Promise<void> {
  try {
    // From "0": tasks queued before the first worker ever started are work too.
    await client.xGroupCreate(keys.tasks, keys.group, "0", { MKSTREAM: true });
  } catch (error) {
    if (!(error instanceof Error) || !error.message.includes("BUSYGROUP")) throw error;
  }
}

export async function submitTask(client: Redis, keys: HybridKeys, doc: string): Promise<string> {
  const event = progress(doc, "queued");
  // The task and its state together; the news goes out with them.
  const [id] = await client
    .multi()
    .xAdd(keys.tasks, "*", { doc })
    .hSet(keys.state, doc, event)
    .publish(keys.progress, event)
    .exec();
  return String(id);
}

export async function workOnce(
  client: Redis,
  keys: HybridKeys,
  consumer: string,
  ocr: (doc: string) => Promise<void>,
  blockMs: number,
): Promise<string | undefined> {
  const reply = await client.xReadGroup(
    keys.group,
    consumer,
    { key: keys.tasks, id: ">" },
    { COUNT: 1, BLOCK: blockMs },
  );
  const entry = reply?.[0]?.messages[0];
  if (!entry) return undefined;
  const doc = String(entry.message.doc);
  const processing = progress(doc, "processing", consumer);
  await client.multi().hSet(keys.state, doc, processing).publish(keys.progress, processing).exec();
  // If ocr() fails, the error goes to the caller and the task stays pending: nothing is
  // acknowledged or announced as done, and another worker can claim it (lessons 09, 10).
  await ocr(doc);
  const done = progress(doc, "done", consumer);
  await client
    .multi()
    .xAck(keys.tasks, keys.group, entry.id)
    .hSet(keys.state, doc, done)
    .publish(keys.progress, done)
    .exec();
  return doc;
}

/** The event for `doc` entering `state`, as JSON: published, and kept in the hash as it is. */
function progress(doc: string, state: TaskState, worker?: string): string {
  const event: Progress = { doc, state, version: VERSIONS[state], worker };
  return JSON.stringify(event);
}
