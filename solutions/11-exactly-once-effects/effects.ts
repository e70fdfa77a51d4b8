/**
 * Lesson 11: Exactly-once effects on at-least-once delivery (reference solution).
 *
 * The NER stage: it extracts the entities of each document (a slow, billed AI call) and hands
 * the document on to classification. Deliveries may repeat; the result and the hand-off must
 * not.
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
  const key = `${options.resultPrefix}${doc.docId}`;
  const stored = await client.get(key);
  if (stored !== null) return stored;
  const entities = await options.extractEntities(doc);
  const written = await client.set(key, entities, {
    condition: "NX",
    expiration: { type: "EX", value: RESULT_TTL_S },
  });
  if (written === null) return (await client.get(key)) ?? entities;
  return entities;
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
  await client
    .multi()
    .xAdd(options.nextStream, "*", { docId: doc.docId, entities })
    .xAck(options.stream, options.group, doc.id)
    .exec();
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
  const entities = await entitiesOnce(client, options, doc);
  await handOff(client, options, doc, entities);
}
