/**
 * The pending entries lesson 09's check builds before a learner's worker starts: documents in a
 * fresh stream and group, entries a "dead" consumer left behind, made stale without waiting.
 */
import { checkClient, fresh, freshKey, learnerClient, type Redis } from "../kit.ts";
import { sent } from "../wire.ts";

export interface Doc {
  id: string;
  docId: string;
}

export interface Queue {
  stream: string;
  group: string;
}

/** A fresh stream and group, so a worker that hard-codes "docs:ocr" or "ocr" finds nothing. */
export async function newQueue(observer: Redis, label: string): Promise<Queue> {
  const queue = { stream: freshKey(`docs:${label}`), group: fresh("ocr") };
  await observer.xGroupCreate(queue.stream, queue.group, "0", { MKSTREAM: true });
  return queue;
}

/** What most tests start from: the check's own connection, a fresh queue, a learner's client. */
export async function scene(label: string): Promise<{ observer: Redis; q: Queue; client: Redis }> {
  const observer = await checkClient();
  const q = await newQueue(observer, label);
  return { observer, q, client: await learnerClient() };
}

export async function addDocs(observer: Redis, q: Queue, from: number, count: number) {
  const docs: Doc[] = [];
  for (let n = from; n < from + count; n++) {
    const docId = `doc-${n}`;
    docs.push({ id: await observer.xAdd(q.stream, "*", { docId }), docId });
  }
  return docs;
}

/** What a worker that crashed right after reading leaves behind: entries pending under its name. */
export async function readAndDie(observer: Redis, q: Queue, consumer: string, count: number) {
  await observer.xReadGroup(q.group, consumer, { key: q.stream, id: ">" }, { COUNT: count });
}

/**
 * Sets the idle time of pending entries as if their last delivery was `idleMs` ago, keeping
 * their owner and delivery count (XCLAIM ... IDLE ... JUSTID): stale at once, no waiting.
 */
export async function ageEntries(
  observer: Redis,
  q: Queue,
  owner: string,
  ids: string[],
  idleMs: number,
) {
  await observer.sendCommand([
    "XCLAIM",
    q.stream,
    q.group,
    owner,
    "0",
    ...ids,
    "IDLE",
    String(idleMs),
    "JUSTID",
  ]);
}

export function names(docs: Doc[]): string {
  return docs.map((d) => d.docId).join(", ");
}

/** The min-idle-times the learner's code asked for when claiming for `consumer`. */
export function claimThresholds(consumer: string): number[] {
  return sent((c) => (c.name === "XAUTOCLAIM" || c.name === "XCLAIM") && c.args[3] === consumer)
    .map((c) => Number(c.args[4]))
    .filter((ms, i, all) => all.indexOf(ms) === i);
}

/** The start IDs of every XAUTOCLAIM the learner's code sent for `consumer`. */
export function autoclaimStarts(consumer: string): string[] {
  return sent((c) => c.name === "XAUTOCLAIM" && c.args[3] === consumer).map((c) => c.args[5] ?? "");
}

/**
 * How many blocking reads `consumer` sent in the middle of a scan: each followed by an
 * XAUTOCLAIM that went on from a cursor, not from 0-0, so stale entries were still waiting.
 */
export function blockedMidScan(consumer: string): number {
  const mine = sent(
    (c) =>
      c.args.includes(consumer) &&
      (c.name === "XAUTOCLAIM" ||
        (c.name === "XREADGROUP" && c.args.some((a) => a.toUpperCase() === "BLOCK"))),
  );
  return mine.filter((c, i) => {
    const next = mine[i + 1];
    return c.name === "XREADGROUP" && next?.name === "XAUTOCLAIM" && next.args[5] !== "0-0";
  }).length;
}
