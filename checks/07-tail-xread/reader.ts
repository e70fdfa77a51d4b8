/**
 * Runs the learner's startTail() the way the lesson 07 check needs it: inside a crashable scope
 * (one simulated process, its client included), with what onEntry() received recorded, and
 * onEntry() under the check's control (fail, hold, or die on a given call).
 */

import type { DocEvent, LogEntry, Tail } from "../../lessons/07-tail-xread/tail.ts";
import { call, check, learnerClient, loadExercise, type Redis, sameValue } from "../kit.ts";
import { compareIds, isStreamId } from "../streams-support.ts";
import { type Scope, type SentCommand, scope, sent } from "../wire.ts";

// The exercise's contract is written once, in the starter.
export type { DocEvent, LogEntry, Tail } from "../../lessons/07-tail-xread/tail.ts";

type Exercise = typeof import("../../lessons/07-tail-xread/tail.ts");

export const exercise = await loadExercise<Exercise>("startTail");

/**
 * What onEntry() does with the nth call (1-based) of one reader: finish ("ok"), throw at once,
 * return a rejected promise, or let the check decide (an async function that it awaits).
 */
export type Behaviour = "ok" | "throw" | "reject" | ((entry: LogEntry) => Promise<void>);

export interface Reader {
  scope: Scope;
  client: Redis;
  /** CLIENT ID of `client`, asked before the reader started: a reader may block it. */
  clientId: string;
  tail: Tail;
  /** Every onEntry() call, in order, while this simulated process was alive. */
  calls: LogEntry[];
  /** The IDs whose onEntry() call finished without an error. */
  done: string[];
}

/**
 * Starts the learner's reader as its own simulated process: a client of its own in a fresh
 * scope, so crashing the scope takes the reader, its duplicates and its checkpoint writes along.
 */
export async function startReader(
  stream: string,
  checkpoint: string,
  blockMs: number,
  behaviour: (call: number, entry: LogEntry) => Behaviour = () => "ok",
  /** Another reader of the same process, whose scope and client this one shares. */
  beside?: Reader,
  /** An ACL account (aclAccount()) the reader's client logs in as. */
  login?: { username: string; password: string },
): Promise<Reader> {
  const process = beside?.scope ?? scope("reader");
  const client = beside?.client ?? (await process.run(() => learnerClient(login)));
  const clientId = String(await client.clientId());
  const calls: LogEntry[] = [];
  const done: string[] = [];
  const onEntry = (entry: LogEntry): void | Promise<void> => {
    // A dead process does nothing more; whatever its leftover loop still runs is not seen.
    if (process.crashed()) return new Promise(() => {});
    calls.push(entry);
    const what = behaviour(calls.length, entry);
    if (what === "throw") throw new Error(`the OCR service is down (${entry.id})`);
    if (what === "reject") return Promise.reject(new Error(`the index timed out (${entry.id})`));
    if (what === "ok") {
      done.push(entry.id);
      return;
    }
    return what(entry).then(() => {
      if (!process.crashed()) done.push(entry.id);
    });
  };
  const tail = await process.run(() =>
    call("startTail()", () => exercise.startTail(client, { stream, checkpoint, blockMs, onEntry })),
  );
  check(
    tail && typeof tail.stop === "function",
    "startTail() should resolve to an object with a stop() method.",
    2,
  );
  return { scope: process, client, clientId, tail, calls, done };
}

/** Appends status events; inside one MULTI they arrive together, as one batch for XREAD. */
export async function append(
  observer: Redis,
  stream: string,
  count: number,
  label: string,
  together = false,
  /** With this many documents, each gets several entries: one per status change, in order. */
  docs?: number,
): Promise<{ ids: string[]; events: Map<string, DocEvent> }> {
  const STEPS = ["ocr started", "ocr done", "ner started", "ner done", "classify started"];
  const events = Array.from({ length: count }, (_, n) => {
    if (docs === undefined)
      return { docId: `${label}-${n}`, stage: n % 2 ? "ner" : "ocr", status: "done" };
    const [stage = "", status = ""] = (STEPS[Math.floor(n / docs) % STEPS.length] ?? "").split(" ");
    return { docId: `${label}-${n % docs}`, stage, status };
  });
  let ids: string[];
  if (together) {
    const multi = observer.multi();
    for (const event of events) multi.xAdd(stream, "*", event);
    ids = (await multi.exec()).map(String);
  } else {
    ids = await Promise.all(events.map((event) => observer.xAdd(stream, "*", event)));
  }
  return { ids, events: new Map(ids.map((id, n) => [id, events[n] as DocEvent])) };
}

/** The first entry whose event reached onEntry() different from what the stream holds. */
export function wrongEvent(
  calls: LogEntry[],
  events: Map<string, DocEvent>,
): { got: unknown; want: DocEvent } | undefined {
  for (const entry of calls) {
    const want = events.get(entry.id);
    if (want && !sameValue(entry.event, want)) return { got: entry.event, want };
  }
  return undefined;
}

export function list(ids: string[]): string {
  return ids.length <= 3 ? ids.join(", ") : `${ids.slice(0, 3).join(", ")}, ...`;
}

export function firstDuplicate(ids: string[]): string | undefined {
  return ids.find((id, i) => ids.indexOf(id) !== i);
}

export function inOrder(ids: string[]): boolean {
  return ids.every((id, i) => i === 0 || compareIds(ids[i - 1] ?? "", id) < 0);
}

/** The checkpoint as saved, whatever type of key the learner chose, or undefined. */
export async function savedCheckpoint(observer: Redis, key: string): Promise<string | undefined> {
  const type = String(await observer.type(key));
  if (type === "string") return (await observer.get(key)) ?? undefined;
  if (type === "hash") {
    const values = Object.values(await observer.hGetAll(key)).map(String);
    return values.find((v) => /^\d+-\d+$/.test(v));
  }
  return undefined;
}

/**
 * The cursor of the first XREAD `reader` sent on `stream` that names one of `ids` it never
 * handed to onEntry(): the reader jumped past entries instead of continuing from its last one.
 */
export function jumpedTo(reader: Reader, stream: string, ids: string[]): string | undefined {
  const handed = new Set(reader.calls.map((e) => e.id));
  const reads = sent(
    (c) => c.name === "XREAD" && c.scope === reader.scope.name && c.args.includes(stream),
  );
  return reads.map((c) => c.args.at(-1) ?? "").find((id) => ids.includes(id) && !handed.has(id));
}

/** The seq of the learner's newest command so far: what is sent later has a higher one. */
export function sentMark(): number {
  return sent().at(-1)?.seq ?? 0;
}

/**
 * A test's early way out while it waits for `ids` (all added before `mark`) to reach onEntry():
 * true once `reader` has read past one of them four times over ("$", a cursor at or after it,
 * or another stream) without handing anything over meanwhile. Such a reader never goes back for the entry, so
 * the wait can end and the test's own checks say what went wrong. Each read past takes a BLOCK
 * at least: four of them leave a reader that reads ahead (and hands over what it got before)
 * plenty of time to do so.
 */
export function readsPast(reader: Reader, stream: string, ids: string[], mark: number) {
  let seen: { calls: number; reads: number } | undefined;
  const past = (read: SentCommand, missing: string[]) => {
    if (!read.args.includes(stream)) return true;
    const cursor = read.args.at(-1) ?? "";
    if (cursor === "$") return true;
    return isStreamId(cursor) && missing.some((id) => compareIds(cursor, id) >= 0);
  };
  return (): boolean => {
    const handed = new Set(reader.calls.map((e) => e.id));
    const missing = ids.filter((id) => !handed.has(id));
    if (missing.length === 0) return false;
    const reads = sent(
      (c) =>
        c.name === "XREAD" && c.scope === reader.scope.name && c.seq > mark && past(c, missing),
    ).length;
    if (reads === 0) return false;
    if (seen === undefined || seen.calls !== reader.calls.length) {
      seen = { calls: reader.calls.length, reads };
      return false;
    }
    return reads - seen.reads >= 4;
  };
}
