/**
 * Lesson 11: Exactly-once effects on at-least-once delivery.
 *
 * The NER stage extracts the entities of each document (a slow AI call, billed per call) and
 * hands the document on to classification. After lessons 09 and 10 a document can be
 * delivered more than once: after a crash, on a retry, or because it was uploaded twice. Make
 * sure it keeps one result, and that every hand-off carries it. Fill in the three functions
 * below and run `npm run check -- 11`.
 */
import type { RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** One delivery of a document to this stage: the stream entry's ID and its fields. */
export interface Delivery {
  id: string;
  docId: string;
  text: string;
}

export interface StageOptions {
  /** This stage's work stream, e.g. "docs:ner", and its consumer group. */
  stream: string;
  group: string;
  /** The next stage's work stream, e.g. "docs:classify". */
  nextStream: string;
  /** The result for document d is kept at `${resultPrefix}${d}`, e.g. "ner:result:doc-17". */
  resultPrefix: string;
  /** The AI call: slow, billed per call, and it may throw. Returns the entities found. */
  extractEntities(doc: Delivery): Promise<string>;
}

/** How long a result is kept: long enough to absorb any redelivery or duplicate upload. */
export const RESULT_TTL_S = 7 * 24 * 3600;

/**
 * The entities of `doc`, stored once per document: the result stored under the
 * document's ID is the idempotency marker. If it is there, return it without calling the
 * service. If not, call the service and store the result with SET NX only after the call
 * succeeded; if another worker stored one first, return theirs, so every delivery of a
 * document hands on the same result.
 */
export async function entitiesOnce(
  client: Redis,
  options: StageOptions,
  doc: Delivery,
): Promise<string> {
  // TODO: GET the result key; call extractEntities only when there is none; SET ... NX EX.
  throw new Error("TODO: entitiesOnce");
}

/**
 * Hands the document on and acknowledges it here in one MULTI: XADD to the next stream (docId,
 * entities) and XACK in this group. A crash can come before or after the EXEC, never between
 * the two, so the document is either still pending here or already queued there.
 */
export async function handOff(
  client: Redis,
  options: StageOptions,
  doc: Delivery,
  entities: string,
): Promise<void> {
  // TODO: client.multi().xAdd(...).xAck(...).exec()
  throw new Error("TODO: handOff");
}

/**
 * Processes one delivery: the entities (once per document), then the hand-off. When the AI
 * call fails it rejects, and the entry stays pending for a retry (lessons 09 and 10).
 */
export async function processDelivery(
  client: Redis,
  options: StageOptions,
  doc: Delivery,
): Promise<void> {
  // TODO: entitiesOnce, then handOff.
  throw new Error("TODO: processDelivery");
}
