/**
 * Lesson 13: the document analysis pipeline (reference solution).
 *
 * The four functions every stage worker of the pipeline calls: read work with recovery, hand a
 * document on to the next stage exactly once, park a poison document, broadcast its status.
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

export function broadcast(
  tx: Transaction,
  keys: Pick<StageKeys, "status" | "channel">,
  event: StatusEvent,
): void {
  const json = JSON.stringify(event);
  // Both in the caller's transaction: the latest state and the news can never disagree, and the
  // event goes out before the next stage can even see the document.
  tx.hSet(keys.status, event.doc, json);
  tx.publish(keys.channel, json);
}

export async function nextWork(
  client: Redis,
  keys: StageKeys,
  options: ReadOptions,
): Promise<Work | undefined> {
  // First, work a crashed worker left behind: pending for longer than any live worker needs.
  // One XAUTOCLAIM looks at no more than COUNT*10 pending entries, so follow its cursor until
  // it comes back to 0-0: a stale entry behind many live ones is found too.
  let cursor = "0-0";
  do {
    const claimed = await client.xAutoClaim(
      keys.stream,
      keys.group,
      options.consumer,
      options.claimIdleMs,
      cursor,
      { COUNT: 1 },
    );
    const stale = claimed.messages.find((message) => message !== null);
    if (stale) {
      const [pending] = await client.xPendingRange(keys.stream, keys.group, stale.id, stale.id, 1);
      return {
        id: stale.id,
        doc: String(stale.message.doc),
        deliveries: Number(pending?.deliveriesCounter ?? 2),
      };
    }
    cursor = claimed.nextId;
  } while (cursor !== "0-0");
  // Then new work, waiting at most blockMs so the worker can notice it should stop.
  const reply = await client.xReadGroup(
    keys.group,
    options.consumer,
    { key: keys.stream, id: ">" },
    { COUNT: 1, BLOCK: options.blockMs },
  );
  const entry = reply?.[0]?.messages[0];
  if (!entry) return undefined;
  return { id: entry.id, doc: String(entry.message.doc), deliveries: 1 };
}

/**
 * Commits `build`'s commands once per document and stage. WATCH makes the transaction fail if
 * another worker changes the document first; the check before it catches one that already has.
 * A document is finished at this stage once its hash holds the stage's result, or the field
 * "dead" that deadLetter() writes: either way there is nothing left to do but XACK.
 */
async function commitOnce(
  client: Redis,
  keys: StageKeys,
  work: Work,
  build: (tx: Transaction) => void,
): Promise<boolean> {
  const docKey = keys.doc(work.doc);
  await client.watch(docKey);
  const [result, dead] = await client.hmGet(docKey, [keys.stage, "dead"]);
  if (result != null || dead != null) {
    // A copy of this work was already committed (by a worker we thought had crashed).
    await client.unwatch();
    await client.xAck(keys.stream, keys.group, work.id);
    return false;
  }
  const tx = client.multi();
  build(tx);
  try {
    await tx.exec();
    return true;
  } catch (error) {
    // Someone touched the document, or the connection dropped, since WATCH: nothing was done.
    // Leave the entry pending: it comes back after claimIdleMs and the check above decides.
    if (error instanceof WatchError) return false;
    throw error;
  }
}

export function handOff(
  client: Redis,
  keys: StageKeys,
  work: Work,
  result: string,
): Promise<boolean> {
  return commitOnce(client, keys, work, (tx) => {
    tx.hSet(keys.doc(work.doc), keys.stage, result);
    if (keys.next) tx.xAdd(keys.next, "*", { doc: work.doc });
    tx.xAck(keys.stream, keys.group, work.id);
    broadcast(tx, keys, { doc: work.doc, stage: keys.stage, state: "done", at: Date.now() });
  });
}

export async function deadLetter(
  client: Redis,
  keys: StageKeys,
  work: Work,
  reason: string,
): Promise<void> {
  await commitOnce(client, keys, work, (tx) => {
    // The marker commitOnce() looks for: a second worker giving up on it writes no second letter.
    tx.hSet(keys.doc(work.doc), "dead", keys.stage);
    tx.xAdd(keys.dead, "*", {
      doc: work.doc,
      stage: keys.stage,
      reason,
      entry: work.id,
      deliveries: String(work.deliveries),
    });
    tx.xAck(keys.stream, keys.group, work.id);
    broadcast(tx, keys, {
      doc: work.doc,
      stage: keys.stage,
      state: "dead",
      at: Date.now(),
      reason,
    });
  });
}
