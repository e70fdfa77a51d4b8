import { fileURLToPath } from "node:url";
import { test } from "vitest";
import {
  CheckFailure,
  call,
  check,
  checkClient,
  ctx,
  fail,
  failIfNotWritten,
  fresh,
  freshKey,
  LEARNER_CLIENT,
  learnerClient,
  loadExercise,
  type Redis,
  restrictedLearnerClient,
  sameValue,
  settled,
  sleep,
  stopQuietly,
  until,
  within,
} from "../kit.ts";
import { expectEndReported, expectPauseAfterDrop } from "../loop-after-drop.ts";
import { expectNoAckWhileHandling } from "../own-timers.ts";
import { pendingCount } from "../streams-support.ts";
import { dropUnder, hearUnhandledRejections, hearUnheardErrors } from "../unheard-errors.ts";
import {
  before,
  connectionOpen,
  dropConnection,
  openLearnerConnections,
  type SentCommand,
  scope,
  scopeTimers,
  sent,
} from "../wire.ts";
import { type ChildEvent, spawnWorker, type WorkerProcess } from "../worker-process.ts";
import {
  expectBoundedDefaultBlock,
  expectNoReadAfterStop,
  expectStopReportsEndedLoop,
  expectStopsCleanly,
  heldUntilReleased,
  startLearnerWorker,
  stopThenRelease,
} from "../worker-stop.ts";
import {
  addDocs,
  ageEntries,
  autoclaimStarts,
  blockedMidScan,
  claimThresholds,
  type Doc,
  names,
  readAndDie,
  scene,
} from "./fixtures.ts";

interface Task {
  id: string;
  fields: Record<string, string>;
}

interface WorkerOptions {
  stream: string;
  group: string;
  consumer: string;
  handle(task: Task): Promise<void>;
  claimIdleMs: number;
  blockMs?: number;
}

interface Worker {
  stop(): Promise<void>;
}

interface StaleClaim {
  tasks: Task[];
  cursor: string;
}

interface Exercise {
  claimStale(
    client: Redis,
    stream: string,
    group: string,
    consumer: string,
    minIdleMs: number,
    cursor?: string,
    count?: number,
  ): Promise<StaleClaim>;
  readOwnPending(client: Redis, stream: string, group: string, consumer: string): Promise<Task[]>;
  removeDeadConsumers(
    client: Redis,
    stream: string,
    group: string,
    idleMs: number,
  ): Promise<string[]>;
  startWorker(client: Redis, options: WorkerOptions): Promise<Worker>;
}

const exercise = await loadExercise<Exercise>(
  "readOwnPending",
  "claimStale",
  "removeDeadConsumers",
  "startWorker",
);

const RUNNER = fileURLToPath(new URL("./worker-runner.ts", import.meta.url));

async function start(client: Redis, options: WorkerOptions): Promise<Worker> {
  // Three reads for new entries prove the loop runs: a startWorker() still unresolved a second
  // later awaits it. Finishing its own pending entries first may take longer, and is right.
  const mark = sent().at(-1)?.seq ?? 0;
  const reads = () =>
    sent(
      (c) =>
        c.seq > mark &&
        c.name === "XREADGROUP" &&
        c.args.includes(options.consumer) &&
        c.args.at(-1) === ">",
    ).length;
  const worker = await startLearnerWorker(
    `startWorker() for ${options.consumer}`,
    () => exercise.startWorker(client, options),
    2,
    () => reads() >= 3,
  );
  check(
    worker && typeof worker.stop === "function",
    "startWorker() must return an object with a stop() method.",
  );
  return worker;
}

/** Resolves once `worker` has ended without the check killing it. */
async function endsOnItsOwn(worker: WorkerProcess, ms: number): Promise<boolean> {
  try {
    await worker.next("(the end)", ms);
  } catch (error) {
    if (error instanceof CheckFailure && error.message.includes("ended")) return true;
    throw error;
  }
  return false;
}

function describeThresholds(consumer: string, claimIdleMs: number): string {
  const asked = claimThresholds(consumer).filter((ms) => ms !== claimIdleMs);
  if (asked.length === 0) return "";
  return ` Your claims for ${consumer} asked for a min-idle-time of ${asked.join(", ")} ms; it must be claimIdleMs (${claimIdleMs}).`;
}

test("a worker killed between its work and its XACK: another worker finishes every task", {
  timeout: 60_000,
}, async () => {
  const { observer, q, client } = await scene("ocr");
  const docs = await addDocs(observer, q, 1, 6);
  const dead = fresh("ocr");

  const first = spawnWorker(RUNNER, {
    WORKER_STREAM: q.stream,
    WORKER_GROUP: q.group,
    WORKER_CONSUMER: dead,
    WORKER_CLAIM_IDLE_MS: "60000",
    WORKER_DIE_BEFORE_XACK: "2",
    WORKER_CLIENT_NAME: `${LEARNER_CLIENT}:child`,
  });
  const ended = await call(
    `startWorker() in worker process ${dead}`,
    () => endsOnItsOwn(first, 25_000),
    30_000,
  );
  if (!ended) fail(`Worker process ${dead} never sent a second XACK within 25 s.`, 2);
  const handled: ChildEvent[] = [];
  for (;;) {
    const event = await first.next("handled", 10).catch(() => undefined);
    if (!event) break;
    handled.push(event);
  }
  const dying = await first.next("dying", 10).catch(() => undefined);
  await first.kill();
  const acked = (dying?.args as string[] | undefined)?.slice(3) ?? [];
  const early = acked.filter((id) => !handled.some((h) => h.id === id));
  check(
    early.length === 0,
    `Worker ${dead} was killed just before its 2nd XACK, which acknowledged ${early.join(", ")}; handle() had not been called for it yet. Acknowledged before the work was done, a crash loses the document: XACK after handle() succeeds.`,
    2,
  );
  const held = await observer.xPendingRange(q.stream, q.group, "-", "+", 100, { consumer: dead });
  const orphaned = docs.filter((d) => held.some((entry) => entry.id === d.id));
  check(
    acked.every((id) => held.some((entry) => entry.id === id)),
    `Worker ${dead} handled ${acked.join(", ")} and died before acknowledging it, yet it is not pending under ${dead}: was it acknowledged earlier?`,
    2,
  );
  // What the dead worker finished and acknowledged is done; the rest is the next worker's.
  const todo = docs.filter((d) => !handled.some((h) => h.id === d.id) || orphaned.includes(d));
  // Uploads keep coming while the dead worker's entries wait to be taken over.
  todo.push(...(await addDocs(observer, q, 7, 2)));

  const heir = fresh("ocr");
  const seen: { id: string; deliveries?: number; owner?: string }[] = [];
  let worker: Worker | undefined;
  try {
    worker = await start(client, {
      ...q,
      consumer: heir,
      claimIdleMs: 300,
      blockMs: 100,
      async handle(task) {
        const [entry] = await observer.xPendingRange(q.stream, q.group, task.id, task.id, 1);
        seen.push({ id: task.id, deliveries: entry?.deliveriesCounter, owner: entry?.consumer });
      },
    });
    const finished = (d: Doc) => seen.some((s) => s.id === d.id);
    if (!(await until(() => todo.every(finished), 8000))) {
      const missing = todo.filter((d) => !finished(d));
      const lost = missing.filter((d) => orphaned.includes(d));
      if (lost.length > 0) {
        fail(
          `Worker ${dead} was killed holding ${names(orphaned)}; ${names(lost)} never finished. They stay pending under ${dead} until a live worker takes them over: ${heir} should claim entries idle for longer than claimIdleMs (XAUTOCLAIM) and handle them.${describeThresholds(heir, 300)}`,
          2,
        );
      }
      fail(
        `${names(missing)} never finished: ${heir} should also read new entries (XREADGROUP ... >) after taking over the stale ones.`,
        2,
      );
    }
    for (const doc of orphaned) {
      const recovered = seen.find((s) => s.id === doc.id);
      check(
        recovered?.owner === heir && recovered.deliveries === 2,
        `While ${heir} worked on ${doc.docId}, XPENDING showed it owned by ${recovered?.owner} with delivery count ${recovered?.deliveries}; a takeover makes ${heir} the owner and counts a second delivery (2). Claim it with XAUTOCLAIM (not JUSTID) before handling it.`,
        2,
      );
    }
    const twice = todo.filter((d) => seen.filter((s) => s.id === d.id).length > 1);
    check(
      twice.length === 0,
      `${heir} handled ${names(twice)} more than once. Acknowledge each task after handling it, and claim only entries idle for longer than claimIdleMs.`,
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
  const left = await pendingCount(observer, q.stream, q.group);
  check(left === 0, `After every task finished, ${left} entries are still pending: XACK each one.`);
});

test("a restarted worker first finishes what it was given before", async () => {
  const { observer, q, client } = await scene("restart");
  const consumer = fresh("ocr");
  const claimIdleMs = 60_000;
  const given = await addDocs(observer, q, 1, 3);
  await readAndDie(observer, q, consumer, 3);
  // The restart comes late: the old entries have been idle for half of claimIdleMs. Not stale
  // yet, so only the worker's own pending read can find them, but a read that is no delivery
  // leaves them aging towards the threshold while they are handled.
  const downMs = claimIdleMs / 2;
  await ageEntries(
    observer,
    q,
    consumer,
    given.map((d) => d.id),
    downMs,
  );
  const later = await addDocs(observer, q, 4, 2);
  const [failing] = given;
  if (!failing) throw new Error("no entries added");

  const order: string[] = [];
  const staleWhileHandled: { docId: string; idle: number }[] = [];
  const rereadAhead = new Set<string>();
  let worker: Worker | undefined;
  try {
    worker = await start(client, {
      ...q,
      consumer,
      claimIdleMs,
      blockMs: 100,
      async handle(task) {
        // What had been handed to handle() before this call: a worker that handles several at
        // once calls handle() for each before any of them looks around.
        const before = [...order];
        order.push(task.id);
        const doc = given.find((d) => d.id === task.id);
        if (!doc) return;
        const [entry] = await observer.xPendingRange(q.stream, q.group, task.id, task.id, 1);
        const idle = entry?.millisecondsSinceLastDelivery ?? 0;
        if (idle >= downMs) staleWhileHandled.push({ docId: doc.docId, idle });
        // Those still to come must not have been re-read yet: a re-read is a delivery, and an
        // entry re-read ahead of its turn ages in the worker's hands (a long backlog is stolen).
        for (const next of given.filter((d) => d !== doc && !before.includes(d.id))) {
          const [ahead] = await observer.xPendingRange(q.stream, q.group, next.id, next.id, 1);
          if ((ahead?.deliveriesCounter ?? 1) > 1) rereadAhead.add(next.docId);
        }
        if (task.id === failing.id) throw new Error(`OCR engine failed on ${doc.docId}`);
      },
    });
    const all = [...given, ...later];
    await until(() => all.every((d) => order.includes(d.id)), 3000);
    const forgotten = given.filter((d) => !order.includes(d.id));
    const unfinished = all.filter((d) => !order.includes(d.id));
    check(
      !order.includes(failing.id) || unfinished.length === 0,
      `handle() threw on ${failing.docId}, one of the entries ${consumer} held before its restart, and the worker never handled ${names(unfinished)} after that. A failed task is skipped (left pending, to be tried again later) and the worker goes on with the next one.`,
      1,
    );
    check(
      forgotten.length === 0,
      `Before its restart, ${consumer} had been given ${names(given)} and never acknowledged them; after the restart it did not re-read ${names(forgotten)}. On start, a worker should first re-read its own pending entries (XREADGROUP ... STREAMS <stream> 0) and finish them.`,
      1,
    );
    check(
      later.every((d) => order.includes(d.id)),
      `After its own pending entries, the worker should read new ones (${names(later)}) with XREADGROUP ... >.`,
      2,
    );
    const firstThree = order.slice(0, given.length);
    check(
      given.every((d) => firstThree.includes(d.id)),
      "The restarted worker handled new entries before the ones it already held. Re-read your own pending entries (id 0) first, then new ones (id >).",
      1,
    );
    check(
      staleWhileHandled.length === 0,
      `While the restarted worker handled ${staleWhileHandled.map((s) => `${s.docId} (idle ${Math.round(s.idle / 1000)} s)`).join(", ")}, XPENDING still showed them idle since before the restart: reading them did not count as a delivery, so they kept aging, and once idle past claimIdleMs (${claimIdleMs} ms) any other worker's XAUTOCLAIM takes them over while they are being handled, and those documents are processed twice. Re-read your own pending entries with XREADGROUP ... 0: that read is a delivery and sets their idle time back to 0 (XPENDING and XRANGE do not).`,
      1,
    );
    check(
      rereadAhead.size === 0,
      `When the restarted worker handled its first own pending entry, it had already re-read ${[...rereadAhead].join(", ")} (their delivery count had gone up): a re-read is a delivery and sets the idle time back to 0, so an entry re-read before its turn ages in the worker's hands, and after a crash with a long backlog another worker's XAUTOCLAIM takes it over while it is still waiting, and it is processed twice. Re-read your own pending entries one at a time (XREADGROUP ... COUNT 1 ... after the last ID), handling each before reading the next, as with claims.`,
      1,
    );
    const [kept] = await observer.xPendingRange(q.stream, q.group, failing.id, failing.id, 1);
    check(
      kept?.consumer === consumer,
      `handle() threw on ${failing.docId}, yet it is no longer pending: a failed task must stay pending, so that it is tried again later. XACK only after handle() succeeds.`,
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
});

test("a task whose handler throws stays pending, the worker carries on, and the task comes back", async () => {
  const { observer, q, client } = await scene("failing");
  // The rejecting task first: a loop that catches rejections only dies on the throw after it.
  const [rejected, thrown, healthy] = await addDocs(observer, q, 1, 3);
  if (!thrown || !rejected || !healthy) throw new Error("no entries added");

  const calls = new Map<string, number>();
  let pendingWhenHealthy: string[] | undefined;
  let callsWhenHealthy = new Map<string, number>();
  let worker: Worker | undefined;
  try {
    worker = await start(client, {
      ...q,
      consumer: fresh("ocr"),
      claimIdleMs: 300,
      blockMs: 100,
      // Not async: the first call for `thrown` throws before any promise exists, as a handler
      // that validates its input might.
      handle(task: Task): Promise<void> {
        const n = (calls.get(task.id) ?? 0) + 1;
        calls.set(task.id, n);
        if (task.id === thrown.id && n === 1) throw new Error("OCR service timed out");
        if (task.id === rejected.id && n === 1) {
          return Promise.reject(new Error("OCR service answered 503"));
        }
        if (task.id === healthy.id && pendingWhenHealthy === undefined) {
          callsWhenHealthy = new Map(calls);
          return observer.xPendingRange(q.stream, q.group, "-", "+", 10).then((entries) => {
            pendingWhenHealthy = entries.map((e) => e.id);
          });
        }
        return Promise.resolve();
      },
    });
    const failed = [thrown, rejected];
    const carriedOn = await until(() => pendingWhenHealthy !== undefined, 3000);
    // A loop that survived the rejection and ended at the throw: a .catch() or .then(ok,
    // failed) on what handle() returns never sees a throw that comes before any promise.
    const diedOnThrow = calls.has(rejected.id) && calls.has(thrown.id);
    check(
      carriedOn,
      diedOnThrow
        ? `handle() rejected for ${rejected.docId} and your worker went on; then it threw for ${thrown.docId} without returning a promise (a handler that is not async throws like that, validating its input say), and the worker never handled ${healthy.docId}: a failing task ended its loop. A .catch() or .then(ok, failed) on what handle() returns never sees such a throw: call it inside try { await handle(task) } catch { ... } (or as Promise.resolve().then(() => handle(task))), leave the entry pending, and go on with the next one.`
        : `handle() failed for ${names(failed.filter((d) => calls.has(d.id)))}, and afterwards the worker never handled ${healthy.docId}: a failing task ended its loop. Catch the error of handle(), leave the entry pending, and go on with the next one.`,
      2,
    );
    const ackedAfterFailure = failed.filter((d) => !pendingWhenHealthy?.includes(d.id));
    // Handled again before the next task: not acknowledged while failed, but retried at once.
    const retriedAtOnce = ackedAfterFailure.filter((d) => (callsWhenHealthy.get(d.id) ?? 0) >= 2);
    check(
      retriedAtOnce.length === 0,
      `handle() failed for ${names(retriedAtOnce)}, and the worker tried ${retriedAtOnce.length === 1 ? "it" : "them"} again at once, before it went on to ${healthy.docId}. A failed entry waits until it has been idle for claimIdleMs (300 ms here): claim with that min-idle-time, and re-read your own pending entries (XREADGROUP ... 0) only when the worker starts.`,
      2,
    );
    check(
      ackedAfterFailure.length === 0,
      `handle() failed for ${names(ackedAfterFailure)}, yet the entry was no longer pending when the worker moved on: it was acknowledged although the work failed, and the document is lost. XACK only after handle() succeeds.`,
      2,
    );
    const back = await until(() => failed.every((d) => (calls.get(d.id) ?? 0) >= 2), 5000);
    check(
      back,
      `${names(failed.filter((d) => (calls.get(d.id) ?? 0) < 2))} failed once and never came back. A failed entry stays pending; once idle for claimIdleMs a worker (this one too) claims it and tries again.`,
      2,
    );
    check(
      await until(async () => (await pendingCount(observer, q.stream, q.group)) === 0, 2000),
      "The retried tasks succeeded but are still pending: XACK them after handle() succeeds.",
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
});

/** The largest page readOwnPending() may ask for: a page, not the whole pending list. */
const MAX_PAGE = 1000;

/** The COUNT a command was sent with, NaN without one. */
function countOf(command: SentCommand | undefined): number {
  const args = command?.args ?? [];
  const at = args.findIndex((a) => a.toUpperCase() === "COUNT");
  return at < 0 ? Number.NaN : Number(args[at + 1]);
}

test("a task is acknowledged only once handle() has finished, however long it takes", async () => {
  const { observer, q, client } = await scene("slow-handle");
  const consumer = fresh("ocr");
  const [doc] = await addDocs(observer, q, 1, 1);
  if (!doc) throw new Error("no entry added");
  const { promise: gate, release } = heldUntilReleased();
  let started = false;
  const inScope = scope("worker");
  // The model call is held while every timer the worker's code started fires at once: a
  // handle() raced against a timeout of any length shows, with no wait for it.
  const timers = scopeTimers(inScope, { createdIn: ctx.target });
  const acked = () => sent((c) => c.name === "XACK" && c.args.includes(doc.id)).length > 0;
  let worker: Worker | undefined;
  try {
    worker = await inScope.run(() =>
      startQuietWorker(client, q, consumer, async () => {
        started = true;
        await gate;
      }),
    );
    check(
      await until(() => started, 3000),
      `Worker ${consumer} did not hand ${doc.docId} to handle() within 3 s: read new entries with XREADGROUP ... > and pass each one to handle().`,
      2,
    );
    await expectNoAckWhileHandling(timers, acked, doc.docId, 2);
  } finally {
    release();
    timers.stop();
    await stopQuietly(worker);
  }
});

test("readOwnPending() reads every page and acknowledges what was deleted", async () => {
  const { observer, q, client } = await scene("own-pages");
  const consumer = fresh("ocr");
  // More than one page of 100, with a deleted entry on each page.
  const given = await addDocs(observer, q, 1, 130);
  await readAndDie(observer, q, consumer, 130);
  const deleted = [given[10], given[120]].filter((d): d is Doc => d !== undefined);
  for (const doc of deleted) await observer.xDel(q.stream, doc.id);
  const from = sent().at(-1)?.seq ?? 0;
  const tasks = await call("readOwnPending()", () =>
    exercise.readOwnPending(client, q.stream, q.group, consumer),
  );
  const unbounded = sent(
    (c) =>
      c.seq > from &&
      c.name === "XREADGROUP" &&
      c.args.includes(q.stream) &&
      c.args.at(-1) !== ">" &&
      !(countOf(c) <= MAX_PAGE),
  );
  const large = countOf(unbounded[0]);
  check(
    unbounded.length === 0,
    `readOwnPending() sent XREADGROUP ... ${unbounded[0]?.args.at(-1)} ${Number.isNaN(large) ? "without COUNT" : `with COUNT ${large}, more than ${MAX_PAGE}`}: Redis answers that with every entry the consumer holds in one reply (${given.length} here; a worker that died holding a million gets a million, which fills its memory and holds Redis up while the reply is built). Read page by page: COUNT 100, then again after the last ID returned, until a page comes back empty.`,
    2,
  );
  const expected = given.filter((d) => !deleted.includes(d));
  const missing = expected.filter((d) => !tasks.some((t) => t.id === d.id));
  check(
    missing.length === 0,
    `${consumer} held ${given.length} pending entries; readOwnPending() returned ${tasks.length} tasks and left out ${names(missing.slice(0, 5))}${missing.length > 5 ? ` and ${missing.length - 5} more` : ""}. One XREADGROUP ... 0 returns one page (COUNT): read again after the last ID returned until a page comes back empty.`,
    2,
  );
  check(
    sameValue(
      tasks.map((t) => t.id),
      expected.map((d) => d.id),
    ),
    `readOwnPending() should return each pending entry once, in stream order, without the deleted ones (${names(deleted)}); it returned ${tasks.length} tasks${tasks.some((t) => deleted.some((d) => d.id === t.id)) ? ", deleted ones among them" : ""}.`,
    2,
  );
  // Each task carries its entry's fields, as an object: the raw reply lists them flat.
  const wrong = tasks.find((t) => t.fields?.docId !== expected.find((d) => d.id === t.id)?.docId);
  if (wrong) {
    fail(
      `readOwnPending() returned ${wrong.id} with the fields ${JSON.stringify(wrong.fields)}, but that entry holds { "docId": "${expected.find((d) => d.id === wrong.id)?.docId}" }: the handler would get the wrong document, or none. A raw XREADGROUP reply lists each entry's fields flat, [field, value, field, value, ...]: pair them up into an object, field first.`,
      2,
    );
  }
  const left = await observer.xPendingRange(q.stream, q.group, "-", "+", 200, {
    consumer,
  });
  const stuck = deleted.filter((d) => left.some((p) => p.id === d.id));
  check(
    stuck.length === 0,
    `${names(stuck)} ${stuck.length === 1 ? "was" : "were"} deleted (XDEL) while pending, and after readOwnPending() ${stuck.length === 1 ? "it is" : "they are"} still in the pending entries list. An entry that comes back with null fields has nothing left to do: XACK it in readOwnPending().`,
    2,
  );
  // Each read with an ID is a delivery: pages that overlap deliver their entries again.
  const reread = left.filter((p) => p.deliveriesCounter > 2);
  const worst = reread.reduce((most, p) => Math.max(most, p.deliveriesCounter), 0);
  check(
    reread.length === 0,
    `readOwnPending() delivered ${reread.length} of the entries more than once: they had 1 delivery before, and afterwards XPENDING counts up to ${worst} (first: ${reread[0]?.id}). Every XREADGROUP ... <id> that returns an entry counts a delivery, so your pages overlapped. Read the next page after the LAST ID of the page before, so each entry is read once.`,
    2,
  );
});

test("Redis dropping the connection under a deleted entry's XACK does not end the process", async () => {
  const { observer, q, client } = await scene("dropped-deleted-ack");
  const consumer = fresh("ocr");
  const [doc] = await addDocs(observer, q, 1, 1);
  if (!doc) throw new Error("no entry added");
  await readAndDie(observer, q, consumer, 1);
  await observer.xDel(q.stream, doc.id);
  // The acknowledgement of an entry deleted while pending. Awaited, the rejection reaches
  // readOwnPending()'s caller (which may see it: that is fine); sent without await, nobody.
  const { dropped, unhandled } = await dropUnder(
    (c) => c.name === "XACK" && c.args.includes(doc.id),
    async () => {
      await within(
        exercise
          .readOwnPending(client, q.stream, q.group, consumer)
          .catch((error: unknown) => failIfNotWritten(error)),
        5000,
        "readOwnPending() after the dropped connection",
      );
    },
  );
  // Not acknowledging a deleted entry at all is the readOwnPending() test's failure to report.
  if (!dropped) return;
  check(
    unhandled.length === 0,
    `${doc.docId} was deleted (XDEL) while pending, and the check dropped the connection under the XACK readOwnPending() sent for it (as a Redis restart does); that XACK's rejection (${String(unhandled[0])}) was handled by nobody: Node ends a process on an unhandled rejection. The XACK of a deleted entry was sent without await: await it like any other command (await client.xAck(...)), so a failure reaches the caller.`,
    2,
  );
});

test("entries deleted while pending do not stop the worker", async () => {
  const { observer, q, client } = await scene("deleted");
  const consumer = fresh("ocr");
  const other = fresh("ocr");
  const mine = await addDocs(observer, q, 1, 3);
  await readAndDie(observer, q, consumer, 3);
  const theirs = await addDocs(observer, q, 4, 3);
  await readAndDie(observer, q, other, 3);
  await ageEntries(
    observer,
    q,
    other,
    theirs.map((d) => d.id),
    60_000,
  );
  const deleted = [mine[1], theirs[1]].filter((d): d is Doc => d !== undefined);
  for (const doc of deleted) await observer.xDel(q.stream, doc.id);
  const survivors = [...mine, ...theirs].filter((d) => !deleted.includes(d));

  const handled: Task[] = [];
  let worker: Worker | undefined;
  try {
    worker = await start(client, {
      ...q,
      consumer,
      claimIdleMs: 10_000,
      blockMs: 100,
      async handle(task) {
        handled.push(task);
      },
    });
    await until(() => survivors.every((d) => handled.some((t) => t.id === d.id)), 3000);
    const ghost = handled.find((t) => deleted.some((d) => d.id === t.id) || !t.fields);
    check(
      ghost === undefined,
      `handle() was given entry ${ghost?.id}, which was deleted (XDEL) while pending: there is no document left to work on. Skip entries whose fields come back null.`,
      2,
    );
    const missing = survivors.filter((d) => !handled.some((t) => t.id === d.id));
    if (missing.length > 0) {
      // Is the worker's loop still going? Watch what its connections send for a moment.
      const before = sent().length;
      const running = await until(() => sent().length > before, 500);
      const pending = await observer.xPendingRange(q.stream, q.group, "-", "+", 100);
      const state = missing
        .map((d) => {
          const entry = pending.find((p) => p.id === d.id);
          return entry ? `${d.docId} pending under ${entry.consumer}` : `${d.docId} not pending`;
        })
        .join(", ");
      const cause = running
        ? `the worker is still running but never handled them (${state}).${mine.some((d) => missing.includes(d)) ? " Its own pending entries come from XREADGROUP ... 0, read page by page." : ` The other consumer's entries had been idle for 60 s, past claimIdleMs (10000).${describeThresholds(consumer, 10_000)}`}`
        : `the worker stopped sending commands to Redis: its loop ended (${state}). XREADGROUP ... 0 returns a deleted entry as [id, null], and node-redis 6.3's xReadGroup() throws on it: read with sendCommand, skip the null and XACK it.`;
      fail(
        `${names(deleted)} were deleted (XDEL) while pending; ${names(missing)} were not, and never got handled: ${cause}`,
        2,
      );
    }
  } finally {
    await stopQuietly(worker);
  }
  // Redis 6.2's XAUTOCLAIM keeps a deleted entry in the pending list; 7.0 removes it itself.
  const [major = 0] = ctx.redisVersion.split(".").map(Number);
  const left = await observer.xPendingRange(q.stream, q.group, "-", "+", 100);
  const stuck = left.filter((p) => major >= 7 || p.consumer === consumer);
  const stuckDeleted = deleted.filter((d) => stuck.some((p) => p.id === d.id));
  const stuckOther = stuck.filter((p) => !deleted.some((d) => d.id === p.id));
  check(
    stuckDeleted.length === 0,
    `${names(stuckDeleted)} was deleted (XDEL) while pending and is still in the pending entries list: an entry deleted while pending has nothing left to do. XACK it when XREADGROUP ... 0 returns it with null fields.`,
    2,
  );
  check(
    stuckOther.length === 0,
    `${stuckOther.map((p) => p.id).join(", ")} was handled but is still pending under ${stuckOther[0]?.consumer}: XACK each task after handle() succeeds.`,
    2,
  );
});

test("claiming leaves live work alone, however long it has been running", async () => {
  const { observer, q, client } = await scene("live");
  // Two more wait behind the slow one: a worker reads one new entry at a time, not all three.
  const [slow, ...waiting] = await addDocs(observer, q, 1, 3);
  if (!slow) throw new Error("no entry added");
  const busyOne = fresh("ocr");
  const claimer = fresh("ocr");
  const claimIdleMs = 10_000;

  let release = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let busy = false;
  const takenBySecond: string[] = [];
  const workers: Worker[] = [];
  try {
    workers.push(
      await start(client, {
        ...q,
        consumer: busyOne,
        claimIdleMs,
        blockMs: 100,
        async handle(task) {
          if (task.id !== slow.id) return;
          busy = true;
          await gate;
        },
      }),
    );
    check(
      await until(() => busy, 5000),
      `Worker ${busyOne} never started on ${slow.docId}: it should read new entries with XREADGROUP ... >.`,
      2,
    );
    const inHand = await observer.xPendingRange(q.stream, q.group, "-", "+", 10, {
      consumer: busyOne,
    });
    const aging = waiting.filter((d) => inHand.some((entry) => entry.id === d.id));
    check(
      aging.length === 0,
      `While ${busyOne} worked on ${slow.docId}, it also held ${names(aging)}, read but not started. Entries waiting in a worker's hands age like claimed ones: once idle past claimIdleMs, another worker takes them over while they still wait, and they are processed twice. Read new entries one at a time (XREADGROUP ... > COUNT 1).`,
      2,
    );
    // As if the task had been running for 8 s: close to claimIdleMs, not past it.
    await ageEntries(observer, q, busyOne, [slow.id], claimIdleMs - 2000);
    workers.push(
      await start(await learnerClient(), {
        ...q,
        consumer: claimer,
        claimIdleMs,
        blockMs: 100,
        async handle(task) {
          takenBySecond.push(task.id);
        },
      }),
    );
    // Two waves of new work: the second worker goes round its loop, claims included, between them.
    for (const from of [2, 5]) {
      const wave = await addDocs(observer, q, from, 3);
      check(
        await until(() => wave.every((d) => takenBySecond.includes(d.id)), 5000),
        `Worker ${claimer} did not handle the new entries ${names(wave)}: after looking for stale entries it should read new ones with XREADGROUP ... >.`,
        2,
      );
    }
    const [entry] = await observer.xPendingRange(q.stream, q.group, slow.id, slow.id, 1);
    // The entry sat 2 s short of claimIdleMs; a claim that asks for less than claimIdleMs steals
    // it all the same once it is that close: read what the claims asked for.
    const below = claimThresholds(claimer).filter((ms) => ms < claimIdleMs);
    check(
      below.length === 0,
      `${claimer}'s claims asked for a min-idle-time of ${below.join(", ")} ms, less than claimIdleMs (${claimIdleMs}): an entry a live worker has had for longer than that, but not yet claimIdleMs, is taken away while its worker is still working on it, and processed twice. Pass claimIdleMs itself as the min-idle-time (margins for slow reads or blockMs belong in claimIdleMs, which the caller chooses).`,
      2,
    );
    check(
      !takenBySecond.includes(slow.id) && entry?.consumer !== claimer,
      `${claimer} took over ${slow.docId} while ${busyOne} was still working on it; the entry had been idle about ${claimIdleMs - 2000} ms, less than claimIdleMs (${claimIdleMs}).${describeThresholds(claimer, claimIdleMs) || " Pass claimIdleMs as the claim's min-idle-time."} Only entries idle for longer than that belong to dead workers.`,
      2,
    );
    check(
      entry?.consumer === busyOne,
      `${busyOne} is still working on ${slow.docId}, but the entry is no longer pending: it was acknowledged before the work was done, so a crash now would lose it. XACK after handle() succeeds.`,
      2,
    );
  } finally {
    release();
    for (const worker of workers) await stopQuietly(worker);
  }
});

test("two workers share a backlog of 110 stale entries: each is handled once", {
  timeout: 30_000,
}, async () => {
  const { observer, q } = await scene("backlog");
  const docs = await addDocs(observer, q, 1, 110);
  const dead = fresh("ocr");
  await readAndDie(observer, q, dead, docs.length);
  await ageEntries(
    observer,
    q,
    dead,
    docs.map((d) => d.id),
    60_000,
  );
  const claimIdleMs = 400;
  const [one, two] = [fresh("ocr"), fresh("ocr")];

  const handledBy = new Map<string, string[]>();
  const record = (id: string, who: string) =>
    handledBy.set(id, [...(handledBy.get(id) ?? []), who]);
  const gates: { id: string; release(): void }[] = [];
  const gated = (id: string) =>
    new Promise<void>((resolve) => {
      gates.push({ id, release: resolve });
    });
  let secondsFirst = false;
  // The second worker starts early, but its first claim waits until the check lets it go: then
  // it claims at a known moment, however long its start took.
  const second = scope("second");
  let letSecondClaim = () => {};
  const secondMayClaim = new Promise<void>((resolve) => {
    letSecondClaim = resolve;
  });
  const holdSecond = before(
    (c) => c.scope === second.name && ["XAUTOCLAIM", "XCLAIM", "XPENDING"].includes(c.name),
    () => secondMayClaim,
  );
  const workers: Worker[] = [];
  try {
    workers.push(
      await start(await learnerClient(), {
        ...q,
        consumer: one,
        claimIdleMs,
        blockMs: 100,
        async handle(task) {
          record(task.id, one);
          // The first two tasks are slow: the check says when they are done.
          if (gates.length < 2) await gated(task.id);
        },
      }),
    );
    check(
      await until(() => gates.length === 1, 5000),
      `Worker ${one} took over nothing of 110 entries idle for 60 s (claimIdleMs ${claimIdleMs}).${describeThresholds(one, claimIdleMs)}`,
      2,
    );
    workers.push(
      await second.run(async () =>
        start(await learnerClient(), {
          ...q,
          consumer: two,
          claimIdleMs,
          blockMs: 100,
          async handle(task) {
            record(task.id, two);
            if (!secondsFirst) {
              secondsFirst = true;
              gates[1]?.release();
            }
          },
        }),
      ),
    );
    const inHand = gates[0]?.id ?? "";
    // Hold the first task until it is stale itself: whatever was claimed with it is, too.
    await until(async () => {
      const [entry] = await observer.xPendingRange(q.stream, q.group, inHand, inHand, 1);
      return (entry?.millisecondsSinceLastDelivery ?? 0) > claimIdleMs + 100;
    }, 3000);
    const hoarded = (
      await observer.xPendingRange(q.stream, q.group, "-", "+", 200, { consumer: one })
    ).filter((p) => p.id !== inHand);
    gates[0]?.release();
    check(
      await until(() => gates.length === 2, 5000),
      `After its first task, ${one} handled nothing more although 109 stale entries were waiting.`,
      2,
    );
    // What a very busy machine does now and then, on purpose: one of ${one}'s acknowledgements
    // arrives late, after the entry sat idle past claimIdleMs, and ${two} takes it over with a
    // fair claim and handles it again. At-least-once: that duplicate is no fault of the worker.
    let lateAck = "";
    const delayAck = before(
      (c) => c.name === "XACK" && c.scope !== second.name && (c.args[3] ?? "") !== inHand,
      async (c) => {
        lateAck = c.args[3] ?? "";
        await until(() => (handledBy.get(lateAck)?.length ?? 0) > 1, 5000);
      },
    );
    letSecondClaim();
    const allDone = () => docs.every((d) => handledBy.has(d.id));
    // A worker that blocks mid-scan would take over one entry per blockMs: no use waiting.
    await until(
      async () =>
        blockedMidScan(one) + blockedMidScan(two) > 0 ||
        (allDone() && (await pendingCount(observer, q.stream, q.group)) === 0),
      10_000,
    );
    gates[1]?.release();
    delayAck.cancel();
    const doubled = docs.filter((d) => (handledBy.get(d.id)?.length ?? 0) > 1);
    // Claims that asked for at least claimIdleMs get an entry only once it sat idle that long in
    // the other worker's hands. Here handle() returns at once (but for the two held tasks), so
    // that happens only when this machine is too busy to run the first worker for claimIdleMs:
    // not the learner's doing. A worker that hoards, asks for less, or handles an entry twice
    // itself is still refused.
    const fairClaims = [one, two].every((w) => claimThresholds(w).every((ms) => ms >= claimIdleMs));
    // Handled by both workers: one took it over once it sat idle past claimIdleMs (a late ack,
    // as the one delayed above). Never by the same worker twice.
    const byBoth = (d: { id: string }) => new Set(handledBy.get(d.id)).size > 1;
    const twice = doubled.filter((d) => hoarded.length > 0 || !fairClaims || !byBoth(d));
    if (twice.length > 0) {
      const shown = twice.slice(0, 5).map((d) => `${d.docId} (${handledBy.get(d.id)?.join(", ")})`);
      const more = twice.length > 5 ? ` and ${twice.length - 5} more` : "";
      fail(
        hoarded.length > 0
          ? `${twice.length} documents were handled twice: ${shown.join(", ")}${more}. While ${one} worked on its first task, it already held ${hoarded.length} more entries it had claimed with it; they aged past claimIdleMs (${claimIdleMs}) in its hands, and ${two} took them over as stale. Claim only what you handle now (XAUTOCLAIM ... COUNT 1) and carry the cursor to the next call.`
          : !fairClaims
            ? `${twice.length} documents were handled twice: ${shown.join(", ")}${more}. One worker claimed an entry the other was still working on, less than claimIdleMs (${claimIdleMs}) after it was taken.${describeThresholds(one, claimIdleMs)}${describeThresholds(two, claimIdleMs)}`
            : `${twice.length} documents were handled twice by the same worker: ${shown.join(", ")}${more}. A worker hands each entry it takes to handle() once: it must not claim back, or read again from its own pending entries, what it is still working on.`,
        2,
      );
    }
    const missing = docs.filter((d) => !handledBy.has(d.id));
    const blocked = blockedMidScan(one) + blockedMidScan(two);
    check(
      missing.length === 0,
      blocked > 0
        ? `${missing.length} of the 110 stale entries were not handled yet (first: ${names(missing.slice(0, 3))}): your workers sent ${blocked} XREADGROUP ... BLOCK in the middle of their scans (the next XAUTOCLAIM went on from a cursor, not from 0-0), and with no new entries each of those waited blockMs (100 ms) before the next claim. Read new entries without BLOCK while the scan goes on; BLOCK only once a claim took nothing and the cursor is back at 0-0.`
        : `${missing.length} of the 110 stale entries were never handled (first: ${names(missing.slice(0, 3))}). Keep claiming until XAUTOCLAIM's cursor comes back to 0-0.`,
      2,
    );
  } finally {
    holdSecond.cancel();
    letSecondClaim();
    for (const gate of gates) gate.release();
    for (const worker of workers) await stopQuietly(worker);
  }
});

test("stale entries behind 30 that a live worker holds are still found", async () => {
  const { observer, q } = await scene("cursor");
  const live = await addDocs(observer, q, 1, 30);
  await readAndDie(observer, q, fresh("ocr"), 30);
  const stale = await addDocs(observer, q, 31, 5);
  const dead = fresh("ocr");
  await readAndDie(observer, q, dead, 5);
  await ageEntries(
    observer,
    q,
    dead,
    stale.map((d) => d.id),
    60_000,
  );
  // Uploads queued meanwhile: taking over stale entries must not wait until they are all done.
  const queued = await addDocs(observer, q, 36, 15);

  const consumer = fresh("ocr");
  const handled: string[] = [];
  const isBlockingRead = (c: { name: string; args: string[] }) =>
    c.name === "XREADGROUP" &&
    c.args.includes(consumer) &&
    c.args.some((a) => a.toUpperCase() === "BLOCK");
  let blockedWhileScanning: number | undefined;
  // How many XAUTOCLAIMs the worker had sent when it handled each stale entry.
  const claimsAtStale: number[] = [];
  let worker: Worker | undefined;
  try {
    worker = await start(await learnerClient(), {
      ...q,
      consumer,
      claimIdleMs: 10_000,
      blockMs: 100,
      async handle(task) {
        handled.push(task.id);
        if (stale.some((d) => d.id === task.id))
          claimsAtStale.push(autoclaimStarts(consumer).length);
        if (blockedWhileScanning === undefined && stale.every((d) => handled.includes(d.id))) {
          blockedWhileScanning = sent(isBlockingRead).length;
        }
      },
    });
    await until(() => [...stale, ...queued].every((d) => handled.includes(d.id)), 5000);
    const stolen = live.filter((d) => handled.includes(d.id));
    check(
      stolen.length === 0,
      `${consumer} took over ${names(stolen)}, which a live worker had been given moments before (claimIdleMs 10000).${describeThresholds(consumer, 10_000)}`,
      2,
    );
    const missing = stale.filter((d) => !handled.includes(d.id));
    const starts = autoclaimStarts(consumer);
    check(
      missing.length === 0,
      `The pending entries list starts with 30 entries a live worker holds; behind them, ${names(missing)} had been idle for 60 s and were never taken over. One XAUTOCLAIM looks at no more than COUNT * 10 entries and returns a cursor to go on from.${starts.length > 0 && starts.every((s) => s === "0-0") ? ` Every XAUTOCLAIM your worker sent (${starts.length}) started again at 0-0: pass the returned cursor to the next call.` : ""}`,
      2,
    );
    // With COUNT 1 a claim stops at the entry it takes, and its cursor points at the next one:
    // from the first stale entry to the last, no XAUTOCLAIM needs to start at 0-0 again.
    const between = starts.slice(claimsAtStale[0] ?? 0, claimsAtStale.at(-1) ?? 0);
    const restarts = between.filter((s) => s === "0-0").length;
    check(
      restarts === 0,
      `After taking over the first of the ${stale.length} stale entries, ${consumer} started ${restarts} of its next ${between.length} XAUTOCLAIMs at 0-0 again, though the cursor each claim returned pointed on, at the next stale entry: every restart scans the 30 live entries in front once more (${starts.length} XAUTOCLAIMs in all), and with thousands pending a backlog is taken over at a crawl. Pass the returned cursor to the next call after a claim too; start at 0-0 only when the cursor comes back as 0-0.`,
      2,
    );
    const firstStale = Math.min(...stale.map((d) => handled.indexOf(d.id)));
    const lastQueued = Math.max(...queued.map((d) => handled.indexOf(d.id)));
    check(
      firstStale < lastQueued,
      `${stale.length} stale entries waited to be taken over while ${queued.length} new entries were queued, and ${consumer} handled every new one first. A worker that looks for stale entries only when no new entry comes leaves a dead worker's documents behind for as long as uploads keep coming: claim one stale entry on every round of the loop, then read one new one.`,
      2,
    );
    check(
      !blockedWhileScanning,
      `${consumer} sent ${blockedWhileScanning} XREADGROUP ... BLOCK while its scan of the pending entries was still going on (stale entries were left to take over). When no new entry comes, each of those reads waits blockMs before the next claim, so a backlog of stale entries is taken over one per blockMs. Read new entries without BLOCK while a claim takes something or the cursor is not back at 0-0; BLOCK only once the scan found nothing more.`,
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
});

test("claimStale() takes at most count entries per call, and its cursor leads past live ones", async () => {
  const { observer, q, client } = await scene("claim");
  await addDocs(observer, q, 1, 25);
  await readAndDie(observer, q, fresh("ocr"), 25);
  const stale = await addDocs(observer, q, 26, 3);
  const dead = fresh("ocr");
  await readAndDie(observer, q, dead, 3);
  await ageEntries(
    observer,
    q,
    dead,
    stale.map((d) => d.id),
    60_000,
  );
  const consumer = fresh("ocr");
  const got: Task[] = [];
  let cursor = "0-0";
  for (let calls = 1; calls <= 40; calls++) {
    const claim = await call("claimStale()", () =>
      exercise.claimStale(client, q.stream, q.group, consumer, 10_000, cursor, 1),
    );
    check(
      Array.isArray(claim?.tasks) && typeof claim.cursor === "string",
      `claimStale() should return { tasks, cursor }; it returned ${JSON.stringify(claim)}.`,
      2,
    );
    check(
      claim.tasks.length <= 1,
      `claimStale(..., cursor, 1) took ${claim.tasks.length} entries in one call; with count 1 it should take at most one, the one you handle now.`,
      2,
    );
    got.push(...claim.tasks);
    cursor = claim.cursor;
    if (cursor === "0-0") break;
  }
  const missing = stale.filter((d) => !got.some((t) => t.id === d.id));
  check(
    missing.length === 0 && got.length === stale.length,
    `Calling claimStale() with count 1 and each returned cursor until it came back as "0-0" took ${got.length} entries; the 3 stale ones behind 25 fresh ones (${names(stale)}) should each come back once${missing.length > 0 ? `, and ${names(missing)} never did` : ""}. Return XAUTOCLAIM's next cursor.`,
    2,
  );
  check(
    got.every((t) => stale.some((d) => d.id === t.id && sameValue(t.fields, { docId: d.docId }))),
    `claimStale() should return each claimed entry as { id, fields } with the entry's own fields ({ docId }); it returned ${JSON.stringify(got.slice(0, 2))}.`,
    2,
  );
});

test("claimStale() with a count above 1 returns every entry it claimed, each with all its fields", async () => {
  const { observer, q, client } = await scene("claim-three");
  const dead = fresh("ocr");
  // Entries with more than one field: a handler needs all of them, not the first pair.
  const docs: Doc[] = [];
  for (const n of [1, 2, 3]) {
    const docId = `doc-${n}`;
    docs.push({
      id: await observer.xAdd(q.stream, "*", { docId, lang: "de", pages: String(n) }),
      docId,
    });
  }
  await readAndDie(observer, q, dead, 3);
  await ageEntries(
    observer,
    q,
    dead,
    docs.map((d) => d.id),
    60_000,
  );
  const consumer = fresh("ocr");
  const claim = await call("claimStale()", () =>
    exercise.claimStale(client, q.stream, q.group, consumer, 10_000, "0-0", 3),
  );
  const got = Array.isArray(claim?.tasks) ? claim.tasks : [];
  const owned = (await observer.xPendingRange(q.stream, q.group, "-", "+", 10, { consumer }))
    .length;
  check(
    got.length === owned,
    `claimStale(..., "0-0", 3) with 3 stale entries claimed ${owned} of them for ${consumer} (XAUTOCLAIM ... COUNT 3) and returned ${got.length}: ${got.length < owned ? "the rest are now pending under this worker, which nobody will hand to a handler until it restarts. Return every entry XAUTOCLAIM gave back, not just the first." : "return only what was claimed."}`,
    2,
  );
  const wrong = got.find(
    (t) =>
      !docs.some(
        (d, i) =>
          d.id === t.id &&
          sameValue(t.fields, { docId: d.docId, lang: "de", pages: String(i + 1) }),
      ),
  );
  check(
    wrong === undefined,
    `claimStale() returned ${wrong?.id} with the fields ${JSON.stringify(wrong?.fields)}; the entry holds three ({ docId, lang, pages }). Return each entry's fields whole.`,
    2,
  );
});

test("readOwnPending() returns every field of an entry", async () => {
  const { observer, q, client } = await scene("own-fields");
  const consumer = fresh("ocr");
  const fields = { docId: "doc-1", lang: "de", pages: "3" };
  const id = await observer.xAdd(q.stream, "*", fields);
  await readAndDie(observer, q, consumer, 1);
  const tasks = await call("readOwnPending()", () =>
    exercise.readOwnPending(client, q.stream, q.group, consumer),
  );
  const task = Array.isArray(tasks) ? tasks.find((t) => t.id === id) : undefined;
  check(
    task !== undefined && sameValue(task.fields, fields),
    `${consumer} held one pending entry with the fields ${JSON.stringify(fields)}; readOwnPending() returned ${JSON.stringify(tasks)}. A raw XREADGROUP reply lists an entry's fields flat, [field, value, field, value, ...]: pair up all of them, not only the first.`,
    2,
  );
});

test("two workers starting at once on a stream without the group both create it and run", async () => {
  const observer = await checkClient();
  const stream = freshKey("docs:new-group");
  const group = fresh("ocr");
  const waiting = await addDocs(observer, { stream, group }, 1, 2);
  const handled: string[] = [];
  const workers: Worker[] = [];
  // One client for both: a deploy starts every worker of a process at once, and on one
  // connection whatever each sends to look for the group reaches Redis before either creates it.
  const client = await learnerClient();
  const options = (consumer: string): WorkerOptions => ({
    stream,
    group,
    consumer,
    claimIdleMs: 10_000,
    blockMs: 100,
    async handle(task) {
      handled.push(task.id);
    },
  });
  try {
    const started = await Promise.allSettled([
      start(client, options(fresh("ocr"))),
      start(client, options(fresh("ocr"))),
    ]);
    for (const result of started) if (result.status === "fulfilled") workers.push(result.value);
    const refused = started.find((r) => r.status === "rejected");
    if (refused) {
      const why = (refused.reason as Error)?.message ?? String(refused.reason);
      // Only an error the learner's startWorker() threw is this race's; others tell their own.
      if (!why.includes("threw an error")) throw refused.reason;
      fail(
        `Two workers of the same group started at once on a stream without the group, and one of them failed to start: ${why}. Both find no group and both create it; the second XGROUP CREATE answers BUSYGROUP, which only means the group is there now. Create it and ignore BUSYGROUP, rather than checking first whether it exists.`,
        2,
      );
    }
    const done = await until(() => waiting.every((d) => handled.includes(d.id)), 3000);
    check(
      done,
      `The stream held ${names(waiting)} before the group existed, and the workers never handled ${names(waiting.filter((d) => !handled.includes(d.id)))}. Create the group at ID 0 (XGROUP CREATE <stream> <group> 0 MKSTREAM): "$" starts after the last entry, and what was uploaded before the first worker started is never read.`,
      2,
    );
    const twice = waiting.filter((d) => handled.filter((id) => id === d.id).length > 1);
    check(
      twice.length === 0,
      `${names(twice)} ${twice.length === 1 ? "was" : "were"} handled twice by two workers starting at once: was the group created twice (XGROUP DESTROY, or SETID back to 0)? Create it once and let a BUSYGROUP error tell the second worker it exists.`,
      2,
    );
    // A deploy stops one worker of the process; the other goes on.
    const [first, second] = workers;
    await stopQuietly(first);
    workers.splice(0, 1);
    const [late] = await addDocs(observer, { stream, group }, 3, 1);
    if (!late || !second) throw new Error("no worker or entry");
    check(
      await until(() => handled.includes(late.id), 3000),
      `Two workers ran in one process; after stop() of the first, the second never handled ${late.docId}, added after that stop: stopping one worker stopped the other too. Keep the stop flag (and whatever else a worker needs) inside startWorker(), one per worker, not in a variable of the module that every worker shares.`,
      2,
    );
  } finally {
    for (const worker of workers) await stopQuietly(worker);
  }
});

test("a worker starts on a stream nothing was ever queued on", async () => {
  const observer = await checkClient();
  // A stage deployed before its first upload: no stream key at all.
  const stream = freshKey("docs:empty");
  const group = fresh("ocr");
  const handled: string[] = [];
  const worker = await start(await learnerClient(), {
    stream,
    group,
    consumer: fresh("ocr"),
    claimIdleMs: 10_000,
    blockMs: 100,
    async handle(task) {
      handled.push(task.id);
    },
  }).catch((error: Error) => {
    if (!error.message.includes("threw an error")) throw error;
    return fail(
      `startWorker() on a stream nothing was queued on yet (no key at all, as for a stage deployed before its first upload) failed: ${error.message} XGROUP CREATE refuses a missing stream unless you add MKSTREAM: XGROUP CREATE <stream> <group> 0 MKSTREAM.`,
      2,
    );
  });
  try {
    const [doc] = await addDocs(observer, { stream, group }, 1, 1);
    if (!doc) throw new Error("no entry");
    check(
      await until(() => handled.includes(doc.id), 3000),
      `The worker started on a stream that did not exist yet, and never handled ${doc.docId}, added after it started.`,
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
});

test("a worker whose start Redis refuses (the stream key holds a string) rejects and leaves nothing open", async () => {
  const { observer, q, client } = await scene("taken");
  await observer.set(q.stream, "not a stream");
  const before = openLearnerConnections();
  const outcome = await within(
    Promise.resolve()
      .then(() =>
        exercise.startWorker(client, {
          ...q,
          consumer: fresh("ocr"),
          claimIdleMs: 10_000,
          blockMs: 100,
          handle: async () => {},
        }),
      )
      .then(
        async (worker) => {
          await worker?.stop?.().catch(() => undefined);
          return "resolved";
        },
        (error: unknown) => {
          failIfNotWritten(error);
          return "rejected";
        },
      ),
    5000,
    "startWorker() on a key that holds a string",
  ).catch((error: unknown) => {
    failIfNotWritten(error);
    return "hung";
  });
  check(
    outcome !== "hung",
    "startWorker() on a stream key that holds a string (Redis refuses its group with WRONGTYPE) neither rejected nor let stop() return within 5 s.",
    2,
  );
  check(
    outcome === "rejected",
    "startWorker() on a stream key that holds a string resolved, although Redis refused its group (WRONGTYPE): the caller is told the worker runs while it cannot work, and only stop() could say why. Await the group's creation in startWorker() (letting every error but BUSYGROUP through), so that a start that cannot work rejects.",
    2,
  );
  check(
    await until(() => openLearnerConnections() <= before, 1000),
    `startWorker() on a stream key that holds a string could not create its group (WRONGTYPE), and left ${openLearnerConnections() - before} connection(s) open that it had opened: a start that fails halfway must close what it opened. Create the group before opening the reader, or close the reader when the start fails.`,
    2,
  );
});

test("a worker started without blockMs still waits a bounded time per read", async () => {
  const { observer, q, client } = await scene("default-block");
  await expectBoundedDefaultBlock({
    stream: q.stream,
    start: () =>
      exercise.startWorker(client, {
        ...q,
        consumer: fresh("ocr"),
        claimIdleMs: 10_000,
        handle: async () => {},
      }),
    wake: () => observer.xAdd(q.stream, "*", { docId: "wake-up" }),
    hint: 2,
    atLeastMs: 100,
  });
});

test("the blocking read has a connection of its own", async () => {
  const { q, client } = await scene("own-reader");
  const blockMs = 600;
  const from = sent().at(-1)?.seq ?? 0;
  let worker: Worker | undefined;
  try {
    worker = await start(client, {
      ...q,
      consumer: fresh("ocr"),
      claimIdleMs: 10_000,
      blockMs,
      async handle() {},
    });
    const blocking = (c: { seq: number; name: string; args: string[] }) =>
      c.seq > from && c.name === "XREADGROUP" && c.args.some((a) => a.toUpperCase() === "BLOCK");
    await until(() => sent().some(blocking), 2000);
    const first = sent(blocking)[0];
    const blockArg = first
      ? Number(first.args[first.args.findIndex((a) => /^BLOCK$/i.test(a)) + 1])
      : blockMs;
    check(
      blockArg >= blockMs / 4,
      `On a quiet stream your worker waited for new entries with BLOCK ${blockArg}, given blockMs ${blockMs}. BLOCK counts milliseconds, like blockMs: BLOCK ${blockArg} gives up after ${blockArg} ms, and the worker goes round, sending an XAUTOCLAIM and an XREADGROUP, hundreds of times a second while nothing happens. Pass blockMs as it is (BLOCK: blockMs).`,
      2,
    );
    // The rest of the application shares the client it handed to the worker.
    const asked = Date.now();
    await client.ping();
    const waited = Date.now() - asked;
    check(
      waited < blockMs / 2,
      `While the worker waited for new entries, a PING on the client it was given took ${waited} ms: the blocking XREADGROUP (BLOCK ${blockMs}) was sent on that client, and every other command of the application waits behind it. Send the blocking reads on a connection of the worker's own (client.duplicate()), and close it in stop().`,
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
});

/**
 * A worker that takes nothing over and reads with a short BLOCK; its tasks succeed at once
 * unless the test gives a `handle` of its own.
 */
function startQuietWorker(
  client: Redis,
  q: { stream: string; group: string },
  consumer: string,
  handle: (task: Task) => Promise<void> = async () => {},
): Promise<Worker> {
  return start(client, { ...q, consumer, claimIdleMs: 10_000, blockMs: 100, handle });
}

test("Redis dropping the worker's blocking read does not end the process", async () => {
  const { q, client } = await scene("dropped");
  const consumer = fresh("ocr");
  const rejections = hearUnhandledRejections();
  const errors = hearUnheardErrors(() => true);
  let dropped = false;
  let droppedAt = 0;
  let worker: Worker | undefined;
  const within = scope("worker");
  const timers = scopeTimers(within, { createdIn: ctx.target });
  try {
    // The read a worker spends its time in: the connection under it goes away before it reaches
    // Redis, as in a Redis restart or a network failure, so that read's promise rejects.
    before(
      (c) =>
        c.name === "XREADGROUP" &&
        c.args.includes(consumer) &&
        c.args.some((a) => a.toUpperCase() === "BLOCK"),
      async (c) => {
        droppedAt = c.seq;
        dropConnection(c.conn);
        dropped = true;
      },
    );
    worker = await within.run(() => startQuietWorker(client, q, consumer));
    check(
      await until(() => dropped, 3000),
      `Worker ${consumer} sent no blocking XREADGROUP ... BLOCK within 3 s: wait for new entries with BLOCK blockMs once nothing is left to claim.`,
      2,
    );
    // Node reports an unhandled rejection once the microtasks of the tick it happened in ran.
    await sleep(200);
    check(
      errors.heard.length === 0,
      `The check dropped the connection your worker's blocking XREADGROUP was on (as a Redis restart or a network failure does); node-redis reported that as an "error" event on the connection, which had no "error" listener (${String(errors.heard[0])}). Node ends a process on an "error" event nobody listens to. Give the reader you duplicate() an error listener (reader.on("error", ...)).`,
      2,
    );
    check(
      rejections.heard.length === 0,
      `The check dropped the connection your worker's blocking XREADGROUP was on (as a Redis restart or a network failure does). The worker's loop rejected (${String(rejections.heard[0])}) and nothing handled it: Node ends a process on an unhandled rejection, so every worker of yours would die with one Redis restart. The loop runs as a promise nobody awaits until stop(): give it a catch (loop().catch(...): log the error) or catch inside the loop and carry on.`,
      2,
    );
    await expectPauseAfterDrop(droppedAt, 2);
    await expectEndReported(worker, consumer, timers, 2);
  } finally {
    timers.stop();
    errors.stop();
    rejections.stop();
    await stopQuietly(worker);
  }
});

test("Redis dropping the connection under the worker's XACK does not end the process", async () => {
  const { observer, q } = await scene("dropped-ack");
  const [doc] = await addDocs(observer, q, 1, 1);
  if (!doc) throw new Error("no entry added");
  const consumer = fresh("ocr");
  // The acknowledgement of a finished task: a worker that awaits it sees the rejection in its
  // loop (which has a catch); one that sent it without await leaves it unhandled.
  const { unhandled } = await dropUnder(
    (c) => c.name === "XACK" && c.args.includes(doc.id),
    async (dropped) => {
      let worker: Worker | undefined;
      try {
        worker = await startQuietWorker(await learnerClient(), q, consumer);
        check(
          await until(dropped, 3000),
          `Worker ${consumer} never acknowledged ${doc.docId} within 3 s: XACK each task once handle() has succeeded.`,
          2,
        );
      } finally {
        await stopQuietly(worker);
      }
    },
  );
  check(
    unhandled.length === 0,
    `The check dropped the connection under your worker's XACK of ${doc.docId} (as a Redis restart does), and that XACK's rejection (${String(unhandled[0])}) was handled by nobody: Node ends a process on an unhandled rejection. The XACK was sent without await, so its promise was left alone; await it (await client.xAck(...)), so a failure reaches the loop and its catch, and so stop() returns only once the task in hand is acknowledged.`,
    2,
  );
});

test("stop() returns on a quiet stream and finishes the task in hand", async () => {
  const { observer, q, client } = await scene("stop");
  await expectStopsCleanly({
    observer,
    ...q,
    blockMs: 100,
    start: (handle) =>
      start(client, { ...q, consumer: fresh("ocr"), claimIdleMs: 10_000, blockMs: 100, handle }),
    addTask: async () => (await addDocs(observer, q, 1, 1))[0]?.id ?? "",
  });
});

test("stop() of a worker whose loop ended on an error (its group removed) reports it", async () => {
  const { observer, q, client } = await scene("stop-nogroup");
  const consumer = fresh("ocr");
  await expectStopReportsEndedLoop({
    observer,
    ...q,
    consumer,
    within: scope("worker"),
    start: () => startQuietWorker(client, q, consumer),
    hint: 2,
  });
});

test("a worker whose group is removed never hands out again what it had finished", async () => {
  const { observer, q, client } = await scene("regroup");
  const consumer = fresh("ocr");
  const finished = await addDocs(observer, q, 1, 2);
  const ids = new Set(finished.map((d) => d.id));
  const handled: string[] = [];
  const within = scope("worker");
  // A worker that answers NOGROUP with a pause first is judged after its pause, not after 3 s.
  const timers = scopeTimers(within, { createdIn: ctx.target });
  const isOurs = (c: SentCommand) => c.name === "XREADGROUP" && c.args.includes(consumer);
  const blocking = (c: SentCommand) => isOurs(c) && c.args.some((a) => a.toUpperCase() === "BLOCK");
  let removedAt = 0;
  // Once both documents are done, the group goes away under the worker's next blocking read.
  const remove = before(
    (c) => blocking(c) && finished.every((d) => handled.includes(d.id)),
    async (c) => {
      removedAt = c.seq;
      await observer.xGroupDestroy(q.stream, q.group);
    },
  );
  let worker: Worker | undefined;
  try {
    worker = await within.run(() =>
      startQuietWorker(client, q, consumer, async (task) => {
        handled.push(task.id);
      }),
    );
    check(
      await until(() => remove.hasFired(), 3000),
      `Worker ${consumer} handed ${handled.length} of the ${finished.length} documents waiting to handle() and then sent no blocking XREADGROUP ... BLOCK within 3 s: read the new entries, then wait for more with BLOCK blockMs.`,
      2,
    );
    const after = (seq: number) =>
      sent((c) => c.seq > seq && isOurs(c) && c.args.at(-1) === ">").length;
    const recreated = () =>
      sent(
        (c) =>
          c.seq > removedAt &&
          c.name === "XGROUP" &&
          c.args[1]?.toUpperCase() === "CREATE" &&
          c.args.includes(q.stream),
      )[0];
    const readers = () =>
      new Set(sent((c) => c.seq >= removedAt && blocking(c)).map((c) => c.conn));
    const again = () => handled.filter((id) => ids.has(id)).length > finished.length;
    // Judged once the worker has ended (its reader closed), handed a finished document out
    // again, or gone round three times since it created the group anew (or since the removal:
    // asking on, with NOGROUP each time, is another test's business).
    const settledDown = () => {
      if (again() || ![...readers()].some(connectionOpen)) return true;
      const made = recreated();
      return after(made?.seq ?? removedAt) >= 3;
    };
    for (let round = 0; round < 15 && !settledDown(); round++) {
      await timers.fire();
      await until(settledDown, 200);
    }
    // One more turn: a task read just now reaches handle() on the next.
    await new Promise((resolve) => setImmediate(resolve));
    const twice = finished.filter((d) => handled.filter((id) => id === d.id).length > 1);
    const made = recreated();
    check(
      twice.length === 0,
      `The check removed the group (XGROUP DESTROY) under your worker ${consumer}'s blocking read, after it had handled and acknowledged ${names(finished)}. Your worker then ${made ? `created the group again (${made.args.join(" ")}) and ` : ""}handed ${names(twice)} to handle() a second time. A group created from 0 hands out the whole stream again: every document already analysed would be analysed again (hundreds of model calls, results written twice). On NOGROUP let the loop end and stop() report the error: a group removed on purpose stays removed, and the operator decides where a new one starts.`,
      2,
    );
  } finally {
    remove.cancel();
    timers.stop();
    await stopQuietly(worker);
  }
});

test("stop() while a restarted worker works through its own backlog returns after the task in hand", async () => {
  const { observer, q, client } = await scene("stop-backlog");
  const consumer = fresh("ocr");
  const given = await addDocs(observer, q, 1, 4);
  await readAndDie(observer, q, consumer, given.length);
  const handled: string[] = [];
  const { promise: gate, release } = heldUntilReleased();
  let worker: Worker | undefined;
  try {
    const starting = start(client, {
      ...q,
      consumer,
      claimIdleMs: 60_000,
      blockMs: 100,
      async handle(task) {
        handled.push(task.id);
        await gate;
      },
    });
    let refused: unknown;
    starting.then(
      (started) => {
        worker = started;
      },
      (error: unknown) => {
        refused = error;
      },
    );
    const began = await until(() => handled.length > 0 || refused !== undefined, 3000);
    failIfNotWritten(refused);
    check(
      began && handled.length > 0,
      `Worker ${consumer} was restarted holding ${names(given)} and handed none of them to handle() within 3 s: read your own pending entries (XREADGROUP ... 0) first.`,
      2,
    );
    // A startWorker() that finishes its own pending entries before it returns cannot be
    // stopped in the middle of them: there is nothing to test then.
    if (!(await until(() => worker !== undefined, 500))) {
      release();
      await starting;
      return;
    }
    const stopping = worker as Worker;
    worker = undefined;
    await stopThenRelease(stopping, release);
  } finally {
    release();
    await stopQuietly(worker);
  }
  const pending = await observer.xPendingRange(q.stream, q.group, "-", "+", 10, { consumer });
  check(
    handled.length === 1,
    `stop() was called while ${consumer} handled the first of the ${given.length} entries it held before its restart; before stop() returned, the worker handed ${handled.length} of them to handle(). stop() lets the task in hand finish and returns: a worker stopped for a deploy with a backlog of a thousand would otherwise work through all of them first (and be killed halfway). Check the stop flag in the loop over your own pending entries too, before each one.`,
    2,
  );
  check(
    pending.length === given.length - 1,
    `After stop(), ${consumer} should still hold the ${given.length - 1} entries it had not started on (pending, for the next start); it holds ${pending.length}.`,
    2,
  );
});

test("stop() while a claimed task is in hand reads no new entry it would leave unhandled", async () => {
  const { observer, q, client } = await scene("stop-claimed");
  const dead = fresh("ocr");
  const consumer = fresh("ocr");
  const [stale] = await addDocs(observer, q, 1, 1);
  if (!stale) throw new Error("no entry added");
  await readAndDie(observer, q, dead, 1);
  await ageEntries(observer, q, dead, [stale.id], 60_000);
  const [waiting] = await addDocs(observer, q, 2, 1);
  if (!waiting) throw new Error("no entry added");
  await expectNoReadAfterStop({
    observer,
    ...q,
    start: (handle) => start(client, { ...q, consumer, claimIdleMs: 10_000, blockMs: 100, handle }),
    held: stale.id,
    waiting,
    notReached: `${stale.docId} had been idle for a minute under ${dead}, a consumer that died, and worker ${consumer} (claimIdleMs 10000) did not hand it to handle() within 3 s: claim stale entries with XAUTOCLAIM.`,
    doing: `${consumer} handled ${stale.docId}, which it had claimed from ${dead}`,
    advice:
      "Nobody looks at it again until a claim takes it over, claimIdleMs later. Check the stop flag after the claimed tasks too, before reading new entries.",
  });
});

test("stop() leaves a failed task pending for the next start", async () => {
  const { observer, q, client } = await scene("stop-failed");
  const [doc] = await addDocs(observer, q, 1, 1);
  if (!doc) throw new Error("no entries added");
  const consumer = fresh("ocr");
  let failed = false;
  let worker: Worker | undefined;
  try {
    worker = await start(client, {
      ...q,
      consumer,
      claimIdleMs: 10_000,
      blockMs: 100,
      async handle() {
        failed = true;
        throw new Error("OCR service timed out");
      },
    });
    check(
      await until(() => failed, 3000),
      `Worker ${consumer} did not hand ${doc.docId} to handle() within 3 s.`,
      2,
    );
    const stopping = worker;
    worker = undefined;
    await call("worker.stop()", () => stopping.stop(), 5000);
  } finally {
    await stopQuietly(worker);
  }
  const [entry] = await observer.xPendingRange(q.stream, q.group, doc.id, doc.id, 1);
  const deleted = sent((c) => c.name === "XGROUP" && /^DELCONSUMER$/i.test(c.args[1] ?? ""));
  check(
    entry !== undefined,
    `handle() failed for ${doc.docId}, which then waited in the pending entries list for its retry; after stop() it is no longer pending, and the document is lost.${deleted.length > 0 ? ` Your code sent ${deleted[0]?.args.join(" ")}: deleting a consumer deletes the entries it holds. A stopped worker stays in the group; remove consumers only once they hold nothing (removeDeadConsumers()).` : " Leave a failed entry pending: a restart under the same name, or a claim by another worker, brings it back."}`,
    2,
  );
});

// An account that may not run XGROUP DELCONSUMER (ACL SETUSER): only on the workbook's server.
test.skipIf(!ctx.privateServer)(
  "removeDeadConsumers() rejects when Redis refuses XGROUP DELCONSUMER",
  async () => {
    const { observer, q } = await scene("consumers-refused");
    const idle = fresh("ocr-dead");
    await observer.xGroupCreateConsumer(q.stream, q.group, idle);
    // Idle for longer than the threshold of 0 ms: polled, a millisecond or two.
    await until(
      async () =>
        (await observer.xInfoConsumers(q.stream, q.group)).some(
          (c) => c.name === idle && c.idle > 0,
        ),
      2000,
    );
    const client = await restrictedLearnerClient(["-xgroup|delconsumer"]);
    const outcome = await within(
      settled(exercise.removeDeadConsumers(client, q.stream, q.group, 0)),
      5000,
      "removeDeadConsumers() as an account Redis refuses XGROUP DELCONSUMER",
    );
    check(
      "error" in outcome,
      `Redis refused your XGROUP DELCONSUMER for ${idle} (this account may not run it), and removeDeadConsumers() resolved with ${JSON.stringify("value" in outcome ? outcome.value : undefined)}: ${idle} is still in the group, and the caller was told otherwise. Await each DELCONSUMER and let its error reach the caller.`,
      2,
    );
  },
);

test("removing dead consumers keeps the ones that still hold work", async () => {
  const { observer, q, client } = await scene("consumers");
  const [idle, busy, active] = [fresh("ocr-dead"), fresh("ocr-busy"), fresh("ocr-live")];
  // Two dead ones: a loop that returns after the first removal leaves the second behind.
  const gone = fresh("ocr-gone");
  await addDocs(observer, q, 1, 1);
  await observer.xGroupCreateConsumer(q.stream, q.group, idle);
  await observer.xGroupCreateConsumer(q.stream, q.group, gone);
  await readAndDie(observer, q, busy, 1);
  await sleep(600);
  await observer.xGroupCreateConsumer(q.stream, q.group, active);

  const removed = await call("removeDeadConsumers()", () =>
    exercise.removeDeadConsumers(client, q.stream, q.group, 500),
  );
  const left = (await observer.xInfoConsumers(q.stream, q.group)).map((c) => String(c.name));
  check(
    left.includes(busy),
    `${busy} was removed although it still owned 1 pending entry: XGROUP DELCONSUMER drops a consumer's pending entries with it, and that document is lost. Remove only consumers with pending 0.`,
    2,
  );
  check(
    left.includes(active),
    `${active} was removed although it was active a moment ago. Remove only consumers idle for longer than idleMs.`,
    2,
  );
  const stayed = [idle, gone].filter((name) => left.includes(name));
  check(
    stayed.length === 0,
    stayed.length === 1
      ? `${stayed[0]} holds nothing and has been idle past the threshold, but is still in the group${left.includes(idle) === left.includes(gone) ? "" : ` (the other dead one, ${[idle, gone].find((n) => n !== stayed[0])}, was removed: go through every consumer XINFO CONSUMERS lists, do not stop at the first removal)`}: remove it with XGROUP DELCONSUMER.`
      : `${stayed.join(" and ")} hold nothing and have been idle past the threshold, but are still in the group: remove them with XGROUP DELCONSUMER.`,
    2,
  );
  const expected = [idle, gone];
  check(
    Array.isArray(removed) &&
      removed.length === expected.length &&
      expected.every((name) => removed.includes(name)),
    `removeDeadConsumers() should return the names it removed (${JSON.stringify(expected)}); it returned ${JSON.stringify(removed)}.`,
  );
});
