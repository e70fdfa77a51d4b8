/**
 * Lesson 13: the document analysis pipeline.
 *
 * Every stage worker of the pipeline (OCR, NER, classification, embedding) runs the same loop,
 * and calls the four functions in this file for everything that touches Redis:
 *
 *   work = nextWork(...)            take work, recovering what crashed workers left behind
 *   result = <the AI service>       the pipeline calls it for you
 *   handOff(..., work, result)      store the result and pass the document on, exactly once
 *   deadLetter(..., work, reason)   or park a document that keeps failing
 *
 * and broadcast() puts a status event into a transaction. Run `npm run check -- 13` after each
 * one, then the whole system with your code:
 *   npm run pipeline -- --parts workspace/13-capstone-pipeline/stage.ts --chaos
 */
import { type RedisClientType, WatchError } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** A transaction being built: what client.multi() returns. */
export type Transaction = ReturnType<Redis["multi"]>;

export type Stage = "ocr" | "ner" | "classify" | "embed";

/** The names one stage works with (the lesson's README lists them all). */
export interface StageKeys {
  stage: Stage;
  /** This stage's work stream. */
  stream: string;
  /** The consumer group every worker of this stage joins. */
  group: string;
  /** The next stage's stream; null for the last stage. */
  next: string | null;
  /** The dead-letter stream. */
  dead: string;
  /** The latest-status hash: field = document id, value = its last StatusEvent as JSON. */
  status: string;
  /** The pub/sub channel for StatusEvents. */
  channel: string;
  /** The key of a document's hash: its upload plus one field per finished stage. */
  doc(id: string): string;
}

export interface StatusEvent {
  doc: string;
  stage: "intake" | Stage;
  state: "queued" | "done" | "dead";
  at: number;
  reason?: string;
}

/** One delivery of a stream entry: which document, and how many times it has been delivered. */
export interface Work {
  id: string;
  doc: string;
  deliveries: number;
}

export interface ReadOptions {
  consumer: string;
  /** Entries pending longer than this belong to a worker that is gone. */
  claimIdleMs: number;
  /** How long to wait for new work before returning undefined. */
  blockMs: number;
}

/**
 * Adds two commands to `tx`, and runs nothing itself (the caller runs EXEC):
 * the event as JSON into the latest-status hash (field = the document id), and the same JSON
 * published on the status channel.
 */
export function broadcast(
  tx: Transaction,
  keys: Pick<StageKeys, "status" | "channel">,
  event: StatusEvent,
): void {
  // TODO: tx.hSet(...) and tx.publish(...) with JSON.stringify(event).
  throw new Error("TODO: broadcast");
}

/**
 * The next piece of work for `options.consumer`, or undefined when there is none:
 * 1. an entry some worker has left pending for longer than claimIdleMs (it crashed, or its
 *    service failed): claim it, and report how many times it has now been delivered. It may
 *    sit behind many entries live workers are busy with: one XAUTOCLAIM looks at no more than
 *    COUNT*10 of them, so follow its cursor;
 * 2. otherwise a new entry, waiting at most blockMs for one (deliveries: 1).
 * Entries carry one field, `doc`: the document id. An error from Redis (NOGROUP, a dropped
 * connection) rejects: it is not "no work".
 */
export async function nextWork(
  client: Redis,
  keys: StageKeys,
  options: ReadOptions,
): Promise<Work | undefined> {
  // TODO: XAUTOCLAIM from "0-0" along its cursor (and XPENDING for the delivery count), then
  // XREADGROUP with ">".
  throw new Error("TODO: nextWork");
}

/**
 * Finishes `work` at this stage, all or nothing, and only once per document:
 * - the result in the document's hash, under the stage's name;
 * - { doc } added to the next stage's stream (unless this is the last stage);
 * - the entry acknowledged;
 * - a { stage, state: "done" } status event broadcast.
 * If the document already has this stage's result or a "dead" mark (another worker finished
 * the same entry), only acknowledge the entry and return false; if another worker commits
 * while this one is on its way (WATCH), return false too. Return true when this call handed
 * it on.
 */
export async function handOff(
  client: Redis,
  keys: StageKeys,
  work: Work,
  result: string,
): Promise<boolean> {
  // TODO: WATCH the document, check for the result, then MULTI ... EXEC (WatchError: return false).
  throw new Error("TODO: handOff");
}

/**
 * Parks a document that keeps failing, all or nothing, and only once per document: the field
 * "dead" (= the stage) in the document's hash, which handOff() and deadLetter() look for; an
 * entry on the dead-letter stream with the fields doc, stage, reason, entry (the original entry
 * id) and deliveries; the entry acknowledged; a { stage, state: "dead", reason } status event
 * broadcast.
 */
export async function deadLetter(
  client: Redis,
  keys: StageKeys,
  work: Work,
  reason: string,
): Promise<void> {
  // TODO: the same shape and guard as handOff, with the dead-letter stream and the "dead" mark.
  throw new Error("TODO: deadLetter");
}
