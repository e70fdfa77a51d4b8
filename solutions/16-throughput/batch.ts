/**
 * Lesson 16: the capstone's stage, batched (reference solution).
 *
 * The same guarantees as lesson 13 (recovery, the atomic hand-off, the duplicate guard, dead
 * letters, status events), paid once per batch instead of once per document.
 */
import { type RedisClientType, WatchError } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** The names one stage works with: the same as lesson 13's. */
export interface StageKeys {
  stage: "ocr" | "ner" | "classify" | "embed";
  stream: string;
  group: string;
  /** The next stage's stream; null for the last stage. */
  next: string | null;
  dead: string;
  /** The latest-status hash: field = document id, value = its last status event as JSON. */
  status: string;
  channel: string;
  doc(id: string): string;
}

/** One delivery of a stream entry: which document, and how many times it has been delivered. */
export interface Work {
  id: string;
  doc: string;
  deliveries: number;
}

/**
 * What the service made of one document: a result to hand on, or an error. `final` errors are
 * dead-lettered; the others leave the entry pending, so it comes back after the claim threshold.
 */
export type Outcome =
  | { work: Work; result: string }
  | { work: Work; error: string; final: boolean };

/** What one commitBatch() did: document ids handed on, dead-lettered, and found done already. */
export interface Committed {
  handedOff: string[];
  deadLettered: string[];
  duplicates: string[];
}

export interface ReadOptions {
  consumer: string;
  /** Entries per batch: XREADGROUP COUNT, and XAUTOCLAIM COUNT. */
  count: number;
  /** How long readBatch() waits for new work before returning []. */
  blockMs: number;
  /** Entries pending longer than this belong to a worker that is gone. */
  claimIdleMs: number;
}

export async function readBatch(
  client: Redis,
  keys: StageKeys,
  options: ReadOptions,
): Promise<Work[]> {
  const reply = await client.xReadGroup(
    keys.group,
    options.consumer,
    { key: keys.stream, id: ">" },
    { COUNT: options.count, BLOCK: options.blockMs },
  );
  const messages: { id: string; message: Record<string, unknown> }[] = reply?.[0]?.messages ?? [];
  return messages.map((entry) => ({
    id: entry.id,
    doc: String(entry.message.doc),
    deliveries: 1,
  }));
}

/**
 * One step of the recovery sweep: one XAUTOCLAIM from `cursor`, and the cursor to pass next
 * time ("0-0" once the whole pending list has been looked at). Call it once per interval, not
 * once per document: XAUTOCLAIM examines at most COUNT*10 entries per call.
 */
export async function sweep(
  client: Redis,
  keys: StageKeys,
  options: ReadOptions,
  cursor: string,
): Promise<{ works: Work[]; cursor: string }> {
  const claimed = await client.xAutoClaim(
    keys.stream,
    keys.group,
    options.consumer,
    options.claimIdleMs,
    cursor,
    { COUNT: options.count },
  );
  // Entries deleted while pending come back as null; Redis 7 has already dropped them.
  const messages = claimed.messages.filter((m) => m !== null);
  const first = messages[0];
  const last = messages[messages.length - 1];
  if (!first || !last) return { works: [], cursor: claimed.nextId };
  // XAUTOCLAIM does not say how often an entry was delivered: one XPENDING over the claimed
  // range, only this consumer's entries, says it for the whole batch.
  const pending = await client.xPendingRange(
    keys.stream,
    keys.group,
    first.id,
    last.id,
    messages.length + options.count * 10,
    { consumer: options.consumer },
  );
  const counts = new Map(pending.map((p) => [p.id, Number(p.deliveriesCounter)]));
  // An entry another worker claimed or acknowledged since the XAUTOCLAIM is no longer ours: it
  // has no count in this consumer's XPENDING, and it is not this worker's to do.
  return {
    cursor: claimed.nextId,
    works: messages.flatMap((m) => {
      const deliveries = counts.get(m.id);
      return deliveries === undefined ? [] : [{ id: m.id, doc: String(m.message.doc), deliveries }];
    }),
  };
}

/**
 * Runs `task` on every item with at most `limit` running at once, in order of start; the
 * settled results in the items' order. A slow model answers several documents at a time, but
 * a batch of 500 never means 500 requests at once. A limit below 1 would run nothing and
 * settle nothing: it is refused with a RangeError. `items` is left as it is.
 */
export async function inFlight<T, R>(
  items: T[],
  limit: number,
  task: (item: T) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  if (!(limit >= 1)) throw new RangeError(`inFlight(): limit must be 1 or more, not ${limit}`);
  const results: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        results[i] = { status: "fulfilled", value: await task(items[i] as T) };
      } catch (reason) {
        results[i] = { status: "rejected", reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}

function event(doc: string, stage: string, state: string, reason?: string): string {
  return JSON.stringify({ doc, stage, state, at: Date.now(), ...(reason ? { reason } : {}) });
}

/**
 * Hands on, dead-letters and acknowledges a whole batch in one MULTI: one XADD per document
 * to the next stage, ONE XACK with every finished id, the status hash and events. Entries
 * whose error is not final are left pending. WATCH on every document voids the transaction if
 * a competitor commits one of them first; the duplicate guard then acknowledges it only.
 */
export async function commitBatch(
  client: Redis,
  keys: StageKeys,
  outcomes: Outcome[],
): Promise<Committed> {
  const finished = outcomes.filter((o) => "result" in o || o.final);
  for (;;) {
    const committed: Committed = { handedOff: [], deadLettered: [], duplicates: [] };
    if (finished.length === 0) return committed;
    // Issued in the same tick, the WATCH and the reads leave in one write: one round trip.
    const [, ...states] = await Promise.all([
      client.watch(finished.map((o) => keys.doc(o.work.doc))),
      ...finished.map((o) => client.hmGet(keys.doc(o.work.doc), [keys.stage, "dead"])),
    ]);
    const tx = client.multi();
    const seen = new Set<string>();
    finished.forEach((outcome, i) => {
      const { doc } = outcome.work;
      const [result, dead] = states[i] ?? [];
      // Done already (a worker we thought dead), or twice in this batch: acknowledge only.
      if (result != null || dead != null || seen.has(doc)) {
        committed.duplicates.push(doc);
        return;
      }
      seen.add(doc);
      if ("result" in outcome) {
        tx.hSet(keys.doc(doc), keys.stage, outcome.result);
        if (keys.next) tx.xAdd(keys.next, "*", { doc });
        const json = event(doc, keys.stage, "done");
        tx.hSet(keys.status, doc, json);
        tx.publish(keys.channel, json);
        committed.handedOff.push(doc);
      } else {
        tx.hSet(keys.doc(doc), "dead", keys.stage);
        tx.xAdd(keys.dead, "*", {
          doc,
          stage: keys.stage,
          reason: outcome.error,
          entry: outcome.work.id,
          deliveries: String(outcome.work.deliveries),
        });
        const json = event(doc, keys.stage, "dead", outcome.error);
        tx.hSet(keys.status, doc, json);
        tx.publish(keys.channel, json);
        committed.deadLettered.push(doc);
      }
    });
    tx.xAck(
      keys.stream,
      keys.group,
      finished.map((o) => o.work.id),
    );
    try {
      await tx.exec();
      return committed;
    } catch (error) {
      // A competitor changed one of the documents since WATCH: nothing was done; look again.
      if (!(error instanceof WatchError)) throw error;
    }
  }
}

function parseId(id: string): [bigint, bigint] {
  const [ms, seq] = id.split("-");
  return [BigInt(ms ?? 0), BigInt(seq ?? 0)];
}

function lower(a: string, b: string): string {
  const [x, y] = [parseId(a), parseId(b)];
  return x[0] < y[0] || (x[0] === y[0] && x[1] < y[1]) ? a : b;
}

/**
 * Removes what every group of `stream` is finished with: entries below the oldest one still
 * pending in any group, and below what any group has yet to read. Returns how many went.
 */
export async function trim(client: Redis, stream: string): Promise<number> {
  const groups = await client.xInfoGroups(stream);
  if (groups.length === 0) return 0;
  const summaries = await Promise.all(groups.map((g) => client.xPending(stream, String(g.name))));
  let floor: string | undefined;
  groups.forEach((group, i) => {
    const oldest = summaries[i]?.firstId ?? String(group["last-delivered-id"]);
    floor = floor === undefined ? oldest : lower(floor, oldest);
  });
  return client.xTrim(stream, "MINID", floor as string);
}
