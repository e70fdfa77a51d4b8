import { test } from "vitest";
import {
  CheckFailure,
  type ConnectionInfo,
  call,
  check,
  checkClient,
  ctx,
  fail,
  fresh,
  freshKey,
  learnerClient,
  learnerConnections,
  loadExercise,
  type Redis,
  sameValue,
  settled,
  sleep,
  stopQuietly,
  until,
  within,
} from "../kit.ts";
import { expectEndReported, expectPauseAfterDrop } from "../loop-after-drop.ts";
import { expectNoAckWhileHandling } from "../own-timers.ts";
import { failIfStarved } from "../starvation.ts";
import { pendingCount } from "../streams-support.ts";
import { hearDropErrors, hearUnhandledRejections } from "../unheard-errors.ts";
import {
  allLearnerAddrs,
  before,
  command,
  dropConnection,
  holdReply,
  nothingInFlight,
  type SentCommand,
  scope,
  scopeTimers,
  sent,
} from "../wire.ts";
import {
  expectBoundedDefaultBlock,
  expectNoReadAfterStop,
  expectStopReportsEndedLoop,
  expectStopsCleanly,
  watchSentAfterStop,
} from "../worker-stop.ts";

interface Task {
  id: string;
  fields: Record<string, string>;
  deliveries: number;
}

interface RetryOptions {
  stream: string;
  group: string;
  consumer: string;
  deadLetterStream: string;
  maxDeliveries: number;
  retryBaseMs: number;
  handle(task: Task): Promise<void>;
  blockMs?: number;
}

interface Worker {
  stop(): Promise<void>;
}

interface Exercise {
  backoffMs(deliveries: number, baseMs: number): number;
  claimDueRetries(client: Redis, options: RetryOptions, limit?: number): Promise<Task[]>;
  deadLetter(client: Redis, options: RetryOptions, task: Task, reason: string): Promise<void>;
  startWorker(client: Redis, options: RetryOptions): Worker;
}

const exercise = await loadExercise<Exercise>(
  "backoffMs",
  "claimDueRetries",
  "deadLetter",
  "startWorker",
);

const MAX_DELIVERIES = 4;
const BASE_MS = 200;
const CORRUPT = "unreadable PDF: page 3 is corrupt";

/** A fresh stream, group and dead-letter stream: a hard-coded "docs:ocr" or "ocr" finds nothing. */
async function setUp(observer: Redis, name: string) {
  const stream = freshKey(name);
  const group = fresh("ocr");
  await observer.xGroupCreate(stream, group, "0", { MKSTREAM: true });
  return { stream, group, deadLetterStream: `${stream}:dead` };
}

/**
 * An entry as if `deliveries` workers had each been given it and died: pending under `owner`
 * with that delivery count, idle for `idleMs`, a minute unless told (XCLAIM ... IDLE ...
 * RETRYCOUNT).
 */
async function deliveredBefore(
  observer: Redis,
  q: { stream: string; group: string },
  owner: string,
  deliveries: number,
  docId: string,
  at = "*",
  idleMs = 60_000,
): Promise<string> {
  const id = await observer.xAdd(q.stream, at, { docId });
  await observer.xReadGroup(q.group, owner, { key: q.stream, id: ">" });
  await observer.xClaim(q.stream, q.group, owner, 0, id, {
    RETRYCOUNT: deliveries,
    IDLE: idleMs,
  });
  return id;
}

/** The most pending entries one XPENDING may ask for: a page, not the whole list. */
const MAX_PENDING_PAGE = 1000;

/**
 * The COUNT of an XPENDING's extended form (XPENDING key group [IDLE ms] start end count
 * [consumer]); undefined for the summary form.
 */
/**
 * When Redis last handed `id` to a consumer, by the server's own clock: TIME less the entry's
 * idle time, read in one step. What the backoff is about is the time between two deliveries; the
 * time handle() was called lags each delivery by however long the machine took to get there, and
 * on a loaded machine that lag shortened the gap of a right worker.
 */
async function deliveredAt(
  observer: Redis,
  stream: string,
  group: string,
  id: string,
): Promise<number | undefined> {
  const script =
    "local t = redis.call('TIME') local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', 0, ARGV[2], ARGV[2], 1) if #p == 0 then return nil end return {t[1], t[2], p[1][3]}";
  const reply = (await observer
    .eval(script, { keys: [stream], arguments: [group, id] })
    .catch(() => null)) as [string | number, string | number, number] | null;
  if (!reply) return undefined;
  const [seconds, micros, idle] = reply.map(Number) as [number, number, number];
  return seconds * 1000 + micros / 1000 - idle;
}

function pendingPageSize(c: SentCommand): number | undefined {
  const rest = c.args.slice(3);
  if (rest[0]?.toUpperCase() === "IDLE") rest.splice(0, 2);
  const count = rest[2];
  return count === undefined ? undefined : Number(count);
}

/** Whether the learner's code sent the dead-letter XADD and the XACK of `id` as one unit. */
function deadLetterUnit(deadLetterStream: string, id: string): string | undefined {
  const log = sent();
  const xadd = log.find((c) => c.name === "XADD" && c.args[1] === deadLetterStream);
  const xack = log.find((c) => c.name === "XACK" && c.args.slice(3).includes(id));
  if (log.some((c) => ["EVAL", "EVALSHA", "EVAL_RO", "FCALL"].includes(c.name))) return undefined;
  if (!xadd || !xack) return undefined;
  if (xadd.multi !== undefined && xadd.multi === xack.multi) return undefined;
  return `your XADD to the dead-letter stream went ${xadd.multi === undefined ? "on its own" : `in the MULTI at #${xadd.multi}`} and the XACK ${xack.multi === undefined ? "on its own" : `in the MULTI at #${xack.multi}`}`;
}

/**
 * What the learner's code sent that names entry `id` (XACK, XCLAIM, XDEL...), after `from`
 * (a seq of sent()): the observed cause of a change to that entry, for a failure message.
 */
function sentFor(id: string, from = 0): string {
  const counts = new Map<string, number>();
  for (const c of sent((c) => c.seq > from && c.name !== "XADD" && c.args.slice(1).includes(id))) {
    const justId = c.name === "XCLAIM" && c.args.some((a) => a.toUpperCase() === "JUSTID");
    const label = c.name === "XCLAIM" ? `XCLAIM ${justId ? "with" : "without"} JUSTID` : c.name;
    counts.set(label, (counts.get(label) ?? 0) + 1);
  }
  if (counts.size === 0) return "your code sent no command naming it";
  const shown = [...counts].map(([label, n]) => `${label} (${n}x)`);
  return `your code sent ${shown.join(", ")} naming it`;
}

/** The connections opened since `before` that are still open once they had a second to close. */
async function leftOpen(observer: Redis, before: Set<string>): Promise<ConnectionInfo[]> {
  let left: ConnectionInfo[] = [];
  await until(async () => {
    left = (await learnerConnections(observer)).filter((c) => !before.has(c.addr));
    return left.length === 0;
  }, 1000);
  return left;
}

/** Fails unless `handed` comes true within 3 s: the worker gave `docId` to handle(). */
async function expectHanded(handed: () => boolean, docId: string): Promise<void> {
  check(await until(handed, 3000), `The worker did not hand ${docId} to handle() within 3 s.`, 2);
}

async function start(client: Redis, options: RetryOptions): Promise<Worker> {
  const worker = await call("startWorker()", () => exercise.startWorker(client, options));
  check(
    worker && typeof worker.stop === "function",
    "startWorker() must return an object with a stop() method.",
  );
  return worker;
}

/** The options every worker of this check runs with, for `consumer` on queue `q`. */
function workerOptions(
  q: { stream: string; group: string; deadLetterStream: string },
  consumer: string,
  handle: (task: Task) => Promise<void>,
  blockMs = 50,
): RetryOptions {
  return {
    ...q,
    consumer,
    maxDeliveries: MAX_DELIVERIES,
    retryBaseMs: BASE_MS,
    blockMs,
    handle,
  };
}

/** A handle() the check holds until release(): when it was first called, and on what. */
function heldHandle() {
  let release = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const held = {
    startedAt: 0,
    release: () => release(),
    async handle() {
      held.startedAt ||= Date.now();
      await gate;
    },
  };
  return held;
}

test("the backoff doubles from the base and is capped at 60 s", async () => {
  const waits = await call("backoffMs()", () =>
    [1, 2, 3, 4, 30, 33].map((deliveries) => exercise.backoffMs(deliveries, 200)),
  );
  check(
    waits[0] === 200 && waits[1] === 400 && waits[2] === 800 && waits[3] === 1600,
    `After deliveries 1, 2, 3, 4 with a base of 200 ms, the waits should be 200, 400, 800, 1600 ms; yours are ${waits.slice(0, 4).join(", ")}.${[200, 400, 800, 1600].every((w, i) => Math.abs(Number(waits[i]) - w) <= w / 4) ? " Close, but not exact: if you added jitter, leave it out of backoffMs(), which is the exact wait the exercise asks for." : ""}`,
    2,
  );
  check(
    waits[4] === 60_000,
    `Waits stop growing at 60000 ms; after 30 deliveries yours is ${waits[4]} ms.`,
    2,
  );
  // A shift (1 << n) wraps at 32 bits: 1 << 32 is 1 again, and the wait drops back to the base.
  check(
    waits[5] === 60_000,
    `After 33 deliveries (a document its workers kept crashing on) the wait should still be 60000 ms; yours is ${waits[5]} ms.${waits[5] === 200 ? " 1 << 32 is 1 in JavaScript (shifts count modulo 32): compute the doubling with 2 ** (deliveries - 1) or a loop, and cap it." : ""}`,
    2,
  );
});

test("one poison document among 20: retried with backoff, then dead-lettered", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:ocr");
  // The poison document is first in line, so a worker that waits for it holds up all others.
  const ids = new Map<string, string>();
  for (let n = 1; n <= 20; n++) {
    const docId = `doc-${String(n).padStart(2, "0")}`;
    ids.set(docId, await observer.xAdd(q.stream, "*", { docId }));
  }
  const poisonId = ids.get("doc-01") ?? "";
  // doc-05 fails once, thrown before any promise exists (a handler that validates its input).
  const flaky = "doc-05";

  const client = await learnerClient();
  const log: string[] = [];
  /** For each entry of log: the last command sent before that document was handed over. */
  const handedAt: number[] = [];
  const attempts: { at: number; deliveries: number; delivered: Promise<number | undefined> }[] = [];
  const flakyDeliveries: number[] = [];
  const finished: string[] = [];
  /** The last command sent before doc-01's latest failure. */
  let failedAfter = 0;
  let worker: Worker | undefined;
  try {
    worker = await start(client, {
      ...q,
      consumer: fresh("ocr"),
      maxDeliveries: MAX_DELIVERIES,
      retryBaseMs: BASE_MS,
      blockMs: 50,
      handle(task: Task): Promise<void> {
        const docId = task.fields.docId ?? "";
        log.push(docId);
        handedAt.push(sent().at(-1)?.seq ?? 0);
        if (docId === "doc-01") {
          attempts.push({
            at: Date.now(),
            deliveries: task.deliveries,
            delivered: deliveredAt(observer, q.stream, q.group, poisonId),
          });
          failedAfter = sent().at(-1)?.seq ?? 0;
          return Promise.reject(new Error(CORRUPT));
        }
        if (docId === flaky) {
          flakyDeliveries.push(task.deliveries);
          if (flakyDeliveries.length === 1) throw new Error("OCR service timed out");
        }
        finished.push(docId);
        return Promise.resolve();
      },
    });
    const deadLettered = async () => (await observer.xLen(q.deadLetterStream)) > 0;
    await until(async () => (await deadLettered()) || attempts.length > MAX_DELIVERIES, 10_000);
    if (!(await deadLettered())) {
      if (attempts.length > MAX_DELIVERIES) {
        fail(
          `doc-01 failed ${attempts.length} times and is still not in the dead-letter stream: it would be retried forever. When delivery number maxDeliveries (${MAX_DELIVERIES}) fails, move it to the dead-letter stream.`,
          1,
        );
      }
      const [poison] = await observer.xPendingRange(q.stream, q.group, poisonId, poisonId, 1);
      const acked = sent((c) => c.name === "XACK" && c.args.slice(3).includes(poisonId));
      check(
        poison !== undefined || acked.length === 0,
        `doc-01 failed ${attempts.length} time(s) (handle() rejected each time), yet your code sent XACK for it ${acked.length} time(s): it is no longer pending, nor in the dead-letter stream, and never came back. Leave a failed entry pending (no XACK), so it is retried after its backoff.`,
        2,
      );
      check(
        poison !== undefined,
        `doc-01 failed ${attempts.length} time(s) and is no longer pending, nor in the dead-letter stream, although your code never acknowledged it (${sentFor(poisonId)}). A failed entry must stay pending in the group until it is retried or dead-lettered.`,
        2,
      );
      const beats = sent(
        (c) =>
          c.seq > failedAfter &&
          c.name === "XCLAIM" &&
          c.args.includes(poisonId) &&
          c.args.some((a) => a.toUpperCase() === "JUSTID"),
      ).length;
      check(
        beats <= 1,
        `doc-01 failed ${attempts.length} time(s), then nothing more happened for 10 s: it was neither retried nor dead-lettered. After handle() rejected, your code went on sending XCLAIM ... JUSTID for it (${beats} times): a heartbeat still running keeps the failed entry's idle time near 0, so it never becomes due. Stop the heartbeat when handle() ends, whether it succeeded or failed (clearInterval in a finally block).`,
        2,
      );
      // A live loop reads every blockMs (50 ms here): none in 300 ms means it has ended.
      const reads = () => sent((c) => c.name === "XREADGROUP" || c.name === "XPENDING").length;
      const readsBefore = reads();
      await sleep(300);
      check(
        reads() > readsBefore,
        `doc-01 failed ${attempts.length} time(s), then nothing more happened for 10 s, and your worker sent no read at all in 300 ms (blockMs 50): its loop has ended.${flakyDeliveries.length > 0 ? ` The last task it was given was ${log.at(-1)}; ${flaky}'s handle() threw before returning a promise (a handler that validates its input does), and ${flaky === log.at(-1) ? "that throw" : "a throw like it"} escapes handle(task).then(..., onError): await handle() inside try/catch, which catches a throw and a rejection alike.` : " A task that fails must not end the loop: catch handle()'s error and go on."}`,
        2,
      );
      fail(
        `doc-01 failed ${attempts.length} time(s), then nothing more happened for 10 s: it was neither retried nor dead-lettered. Retry failed tasks once backoffMs(deliveries) has passed (XPENDING ... IDLE, then XCLAIM), and dead-letter them after ${MAX_DELIVERIES} deliveries.`,
        2,
      );
    }
    const healthy = [...ids.keys()].filter((docId) => docId !== "doc-01");
    await until(() => healthy.every((docId) => finished.includes(docId)), 3000);

    check(
      attempts.length === MAX_DELIVERIES,
      `With maxDeliveries ${MAX_DELIVERIES}, doc-01 should be dead-lettered after exactly ${MAX_DELIVERIES} attempts; yours made ${attempts.length}. Delivery counts start at 1 (the first read), so dead-letter when delivery ${MAX_DELIVERIES} fails.`,
      2,
    );

    const dead = (await observer.xRange(q.deadLetterStream, "-", "+")) ?? [];
    check(
      dead.length === 1,
      `The dead-letter stream should hold one entry (doc-01); it holds ${dead.length}.`,
    );
    const entry = dead[0]?.message ?? {};
    check(
      entry.originalId === poisonId && (entry.reason ?? "").includes(CORRUPT),
      `The dead-letter entry should say which entry failed (originalId: "${poisonId}") and why (reason: "${CORRUPT}"); yours has ${JSON.stringify(entry)}. Without them nobody can find, fix and replay the document.`,
      2,
    );
    check(
      Number(entry.deliveries) === MAX_DELIVERIES,
      `The dead-letter entry should say how often the document was tried (deliveries: ${MAX_DELIVERIES}); yours has ${JSON.stringify(entry)}.`,
      2,
    );
    check(
      entry.docId === "doc-01",
      `Keep the document's own fields in the dead-letter entry (docId: "doc-01"); yours has ${JSON.stringify(entry)}.`,
      2,
    );
    const apart = deadLetterUnit(q.deadLetterStream, poisonId);
    check(
      apart === undefined,
      `The dead-letter entry and the XACK must go as one unit, but ${apart}. A worker that dies between the two leaves the document pending, and it is dead-lettered again. Send both in one MULTI ... EXEC: client.multi()...exec() (execAsPipeline() sends the same commands without MULTI, so they are no transaction).`,
      2,
    );

    const missing = healthy.filter((docId) => !finished.includes(docId));
    check(
      !missing.includes(flaky) || flakyDeliveries.length > 0,
      `${flaky} failed once and never came back. A failed task stays pending and is retried when its backoff is over.`,
      2,
    );
    check(missing.length === 0, `${missing.join(", ")} never finished.`, 2);
    check(
      flakyDeliveries.join(",") === "1,2",
      `${flaky} failed on delivery 1 and should have succeeded on delivery 2; handle() saw it with deliveries ${flakyDeliveries.join(", ")}.`,
      2,
    );
    const lastHealthy = Math.max(
      ...healthy.filter((d) => d !== flaky).map((docId) => log.indexOf(docId)),
    );
    const lastPoison = log.lastIndexOf("doc-01");
    // Held up is told by events, not by how fast the others went: after each failure of
    // doc-01, while healthy documents still waited unread, the worker asked for new entries
    // (an XREADGROUP ... >) or handed one on before it tried doc-01 again. On a loaded machine
    // the 1.4 s of backoffs may pass before a right worker has read all 19 others.
    const tries = log.flatMap((d, i) => (d === "doc-01" ? [i] : []));
    const readNewBetween = (from: number, to: number) =>
      sent((c) => c.seq > from && c.seq <= to && c.name === "XREADGROUP" && c.args.includes(">"))
        .length > 0;
    const flowed = tries.slice(1).every((at, k) => {
      const prev = tries[k] ?? 0;
      const waiting = healthy.some((d) => log.indexOf(d) > prev);
      const handedBetween = log.slice(prev + 1, at).some((d) => d !== "doc-01");
      return (
        !waiting ||
        handedBetween ||
        readNewBetween(handedAt[prev] ?? 0, handedAt[at] ?? Number.POSITIVE_INFINITY)
      );
    });
    check(
      lastHealthy < lastPoison || flowed,
      `The healthy documents were held up: ${log.slice(0, lastHealthy + 1).filter((d) => d === "doc-01").length} attempts at doc-01 came before the last of them finished. Do not wait for a retry in the loop: leave the failed entry pending and carry on with the others; it comes back when its backoff is over.`,
      1,
    );

    // A retry must not come later than due either: timing cannot show that on a busy machine,
    // but what the sweep asked Redis for can. A sweep whose every XPENDING says IDLE above
    // retryBaseMs hides each entry whose first delivery failed until that longer time has
    // passed. (A sweep that also asks IDLE retryBaseMs, and a longer IDLE per delivery count,
    // tier by tier, hides nothing.)
    const idles = sent((c) => c.name === "XPENDING" && c.args[1] === q.stream && c.args.length > 3)
      .map((c) => (c.args[3]?.toUpperCase() === "IDLE" ? Number(c.args[4]) : 0))
      .filter((ms) => ms > BASE_MS);
    const shortIdle = sent(
      (c) =>
        c.name === "XPENDING" &&
        c.args[1] === q.stream &&
        c.args.length > 3 &&
        (c.args[3]?.toUpperCase() !== "IDLE" || Number(c.args[4]) <= BASE_MS),
    );
    check(
      idles.length === 0 || shortIdle.length > 0,
      `Your sweep asked XPENDING ... IDLE ${Math.max(...idles)}, more than retryBaseMs (${BASE_MS}): an entry whose first delivery failed is due after ${BASE_MS} ms, but XPENDING lists it only once it has been idle for ${Math.max(...idles)} ms, so every first retry comes late. Filter with IDLE retryBaseMs (the shortest backoff), then compare each entry's idle time with backoffMs(its deliveries).`,
      2,
    );
    const delivered = await Promise.all(attempts.map((a) => a.delivered));
    for (let i = 1; i < attempts.length; i++) {
      const [was, is] = [delivered[i - 1], delivered[i]];
      const gap = Math.round(
        was !== undefined && is !== undefined
          ? is - was
          : (attempts[i]?.at ?? 0) - (attempts[i - 1]?.at ?? 0),
      );
      const wait = BASE_MS * 2 ** (i - 1);
      check(
        gap >= wait * 0.75,
        `Attempt ${i + 1} at doc-01 came ${gap} ms after attempt ${i}; after delivery ${i} the wait is backoffMs(${i}, ${BASE_MS}) = ${wait} ms. Only retry entries idle for at least backoffMs(their delivery count).`,
        2,
      );
    }
    check(
      attempts.every((a, i) => a.deliveries === i + 1),
      `handle() should see the delivery count going 1, 2, 3, 4; it saw ${attempts.map((a) => JSON.stringify(a.deliveries)).join(", ")}${attempts.some((a) => typeof a.deliveries !== "number") ? " (a Task's deliveries is a number: a string compares and counts differently)" : ""}.`,
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
  const settled = await until(
    async () => (await pendingCount(observer, q.stream, q.group)) === 0,
    1000,
  );
  check(
    settled,
    `doc-01 is still pending after it was dead-lettered (XPENDING counts ${await pendingCount(observer, q.stream, q.group)}). Acknowledge the entry here when you move it to the dead-letter stream (in the same MULTI), or it is retried again.`,
    2,
  );
});

test("a document its workers kept crashing on goes straight to the dead-letter stream", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:crashing");
  // As if four workers had each been killed while processing it: four deliveries, no XACK.
  const id = await deliveredBefore(observer, q, fresh("ocr"), MAX_DELIVERIES, "doc-oom");

  const client = await learnerClient();
  const handled: Task[] = [];
  let worker: Worker | undefined;
  try {
    worker = await start(
      client,
      workerOptions(q, fresh("ocr"), async (task) => {
        handled.push(task);
      }),
    );
    await until(
      async () => handled.length > 0 || (await observer.xLen(q.deadLetterStream)) > 0,
      5000,
    );
    check(
      handled.length === 0,
      `doc-oom had already been delivered ${MAX_DELIVERIES} times (maxDeliveries) without an XACK, yet handle() got it again as delivery ${handled[0]?.deliveries}. A task claimed with more deliveries than maxDeliveries goes to the dead-letter stream without another try: its workers keep dying on it.`,
      2,
    );
    const dead = (await observer.xRange(q.deadLetterStream, "-", "+")) ?? [];
    const entry = dead[0]?.message;
    check(
      dead.length === 1 && entry?.originalId === id && Boolean(entry?.reason),
      `doc-oom should be in the dead-letter stream with originalId "${id}" and a reason; the stream holds ${JSON.stringify(dead.map((d) => d.message))}.`,
      2,
    );
    check(
      Number(entry?.deliveries) === MAX_DELIVERIES + 1,
      `doc-oom was claimed as delivery ${MAX_DELIVERIES + 1}; its dead-letter entry should say so (deliveries: ${MAX_DELIVERIES + 1}), yours has ${JSON.stringify(entry)}.`,
      2,
    );
    // It never reached handle(), so nothing may beat for it now. Every beat the heartbeat test
    // accepts comes within 2 x retryBaseMs, and a timer started before this wait fires before
    // it ends; node-redis writes what the beat asked for on the same turn.
    const deadAt = Math.max(0, ...sent().map((c) => c.seq));
    const beats = () => sent((c) => c.seq > deadAt && c.name === "XCLAIM" && c.args.includes(id));
    const waited = 2 * BASE_MS + 50;
    await until(() => beats().length > 0, waited);
    await new Promise((resolve) => setImmediate(resolve));
    check(
      beats().length === 0,
      `doc-oom went to the dead-letter stream without another try, yet your worker went on sending XCLAIM ... JUSTID for it (${beats().length} within ${waited} ms): a heartbeat was started for a task that never reached handle(), and nothing stops it. It beats for an entry that is gone, and one more timer is left running for every such document. Start the heartbeat only once the task is going to handle(), after the dead-letter test, or stop it on every way out.`,
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
  check(
    (await pendingCount(observer, q.stream, q.group)) === 0,
    "doc-oom is still pending after being dead-lettered: XACK it in the same MULTI.",
    2,
  );
});

test("stop() while a crashed-on document's dead letter is on its way returns after Redis answered it", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:crashing-stop");
  const id = await deliveredBefore(observer, q, fresh("ocr"), MAX_DELIVERIES, "doc-oom");
  const consumer = fresh("ocr");
  const from = Math.max(0, ...sent().map((c) => c.seq));
  const lastStep = (c: SentCommand) =>
    c.seq > from && ["EXEC", "EVAL", "EVALSHA", "FCALL"].includes(c.name);
  let started: (w: Worker) => void = () => {};
  const running = new Promise<Worker>((resolve) => {
    started = resolve;
  });
  let stopped: Promise<unknown> | undefined;
  let returned = false;
  let stopCalled: () => void = () => {};
  const stopping = new Promise<void>((resolve) => {
    stopCalled = resolve;
  });
  let answer: () => void = () => {};
  const answered = new Promise<void>((resolve) => {
    answer = resolve;
  });
  // The dead letter's last step (the EXEC, or a script) ran in Redis; its reply is held, and
  // stop() is called while the worker waits for it.
  const held = holdReply(lastStep, async () => {
    stopped = (await running).stop().finally(() => {
      returned = true;
    });
    stopped.catch(() => {});
    stopCalled();
    await answered;
  });
  // A worker that went on without awaiting it reads new entries meanwhile: that read's reply
  // waits until stop() is called, so the loop meets the stop at the same step every run.
  const read = holdReply(
    (c) => c.name === "XREADGROUP" && c.args.includes(consumer) && sent(lastStep).length > 0,
    () => stopping,
  );
  let worker: Worker | undefined;
  try {
    worker = await start(
      await learnerClient(),
      workerOptions(q, consumer, async () => {}),
    );
    started(worker);
    check(
      await until(() => held.hasFired(), 5000),
      `doc-oom had already been delivered ${MAX_DELIVERIES} times (maxDeliveries) without an XACK, and your worker sent no dead letter for it within 5 s (no EXEC or script). A task claimed with more deliveries than maxDeliveries goes to the dead-letter stream without another try.`,
      2,
    );
    await until(() => stopped !== undefined && (returned || nothingInFlight()), 2000);
    await new Promise((resolve) => setImmediate(resolve));
    check(
      !returned,
      `stop() returned while the dead letter of doc-oom (claimed as delivery ${MAX_DELIVERIES + 1}, past maxDeliveries) was still waiting for Redis's answer: it was sent without being awaited (a .catch(() => {}) on it included), and the worker went on. A process that exits once stop() returns may lose it. Await deadLetter() there too, so that stop() returns only once the task in hand is done.`,
      2,
    );
  } finally {
    answer();
    stopCalled();
    held.cancel();
    read.cancel();
    if (stopped) {
      worker = undefined;
      await call("worker.stop()", () => stopped, 5000);
    }
    await stopQuietly(worker);
  }
  const dead = (await observer.xRange(q.deadLetterStream, "-", "+")) ?? [];
  check(
    dead.some((d) => d.message.originalId === id),
    `doc-oom should be in the dead-letter stream once stop() has returned; it holds ${JSON.stringify(dead.map((d) => d.message))}.`,
    2,
  );
});

test("a last delivery rejected with a plain string is dead-lettered, and the worker goes on", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:jammed");
  // Failed three times and due again: the worker's claim makes it the last delivery.
  const id = await deliveredBefore(observer, q, fresh("ocr"), MAX_DELIVERIES - 1, "doc-jam");
  const jam = "scanner jammed";
  const handled: string[] = [];
  let worker: Worker | undefined;
  try {
    worker = await start(
      await learnerClient(),
      workerOptions(q, fresh("ocr"), async (task) => {
        handled.push(task.fields.docId ?? "");
        // Not an Error: a handler wrapping another library may reject with anything.
        if (task.id === id) return Promise.reject(jam);
      }),
    );
    await until(async () => (await observer.xLen(q.deadLetterStream)) > 0, 3000);
    await observer.xAdd(q.stream, "*", { docId: "doc-next" });
    const goesOn = await until(() => handled.includes("doc-next"), 3000);
    const dead = (await observer.xRange(q.deadLetterStream, "-", "+")) ?? [];
    check(
      dead.length === 1 && dead[0]?.message.reason === jam,
      `handle() rejected doc-jam's delivery ${MAX_DELIVERIES} (maxDeliveries) with the string "${jam}", not an Error; the dead-letter stream holds ${JSON.stringify(dead.map((d) => d.message))}${goesOn ? "" : ", and the worker never handled the next document, doc-next: its loop ended"}. A rejection can be anything: take the reason as error instanceof Error ? error.message : String(error).`,
      2,
    );
    check(
      goesOn,
      `After dead-lettering doc-jam, the worker never handled the next document, doc-next: its loop ended.`,
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
});

test("deadLetter() writes its own originalId, reason and deliveries, and its failure reaches the caller", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:replayed");
  const owner = fresh("ocr");
  // A document once dead-lettered and replayed (its fields XADDed back, as the lesson says): its
  // fields still carry the earlier dead letter's originalId, reason and deliveries.
  const replayed = {
    docId: "doc-replayed",
    originalId: "1-1",
    reason: "an earlier failure",
    deliveries: "4",
  };
  const id = await observer.xAdd(q.stream, "*", replayed);
  const other = await observer.xAdd(q.stream, "*", { docId: "doc-dropped" });
  await observer.xReadGroup(q.group, owner, { key: q.stream, id: ">" }, { COUNT: 2 });
  const client = await learnerClient();
  const options = workerOptions(q, owner, async () => {});
  const reason = "OCR timed out";
  await call("deadLetter()", () =>
    exercise.deadLetter(client, options, { id, fields: replayed, deliveries: 2 }, reason),
  );
  const dead = (await observer.xRange(q.deadLetterStream, "-", "+")) ?? [];
  const entry = dead[0]?.message;
  check(
    dead.length === 1 &&
      entry?.docId === replayed.docId &&
      entry.originalId === id &&
      entry.reason === reason &&
      entry.deliveries === "2",
    `deadLetter() got ${replayed.docId} (entry ${id}, delivery 2, reason "${reason}"), a document replayed from the dead-letter stream earlier, so its own fields still hold the old originalId "1-1", reason and deliveries. The dead letter should keep docId and say originalId "${id}", reason "${reason}", deliveries "2"; the dead-letter stream holds ${JSON.stringify(dead.map((d) => d.message))}. Write the document's fields first and originalId, reason and deliveries after them ({ ...task.fields, originalId, reason, deliveries }), so yours win.`,
    2,
  );
  // Two dead letters at once on one client, as two workers of one process share it: a MULTI
  // sent as a command of its own is the connection's state, and the other's commands join it.
  const pair = [
    await observer.xAdd(q.stream, "*", { docId: "doc-pair-1" }),
    await observer.xAdd(q.stream, "*", { docId: "doc-pair-2" }),
  ];
  await observer.xReadGroup(q.group, owner, { key: q.stream, id: ">" }, { COUNT: 2 });
  const together = await within(
    Promise.all(
      pair.map((entry, i) =>
        settled(
          exercise.deadLetter(
            client,
            options,
            { id: entry, fields: { docId: `doc-pair-${i + 1}` }, deliveries: 4 },
            reason,
          ),
        ),
      ),
    ),
    5000,
    "two deadLetter() calls at once",
  );
  const paired = ((await observer.xRange(q.deadLetterStream, "-", "+")) ?? []).filter((d) =>
    pair.includes(d.message.originalId ?? ""),
  );
  const refusedPair = together.find((o) => "error" in o);
  const pairPending = (await observer.xPendingRange(q.stream, q.group, "-", "+", 10)).filter((e) =>
    pair.includes(e.id),
  );
  check(
    !refusedPair && paired.length === 2 && pairPending.length === 0,
    `Two deadLetter() calls ran at once on one client (two workers of one process share it), for doc-pair-1 and doc-pair-2: ${refusedPair && "error" in refusedPair ? `one rejected (${String(refusedPair.error)}), and ` : ""}the dead-letter stream holds ${paired.length} of them. A MULTI sent as a command of its own (sendCommand(["MULTI"]), then the XADD, XACK and EXEC one by one) is a state of the connection: the other call's commands, sent in between, join it or are refused. Build the transaction with client.multi().xAdd(...).xAck(...).exec(), which node-redis sends as one unit.`,
    2,
  );
  // The dead letter's transaction: the connection under it goes away before it reaches Redis.
  // Awaited, its rejection reaches deadLetter()'s caller; sent without await, nobody.
  const rejections = hearUnhandledRejections();
  let dropped = false;
  const drop = before(
    (c) => ["EXEC", "EVAL", "EVALSHA", "FCALL"].includes(c.name),
    async (c) => {
      dropConnection(c.conn);
      dropped = true;
    },
  );
  let outcome: Awaited<ReturnType<typeof settled>>;
  try {
    outcome = await within(
      settled(
        exercise.deadLetter(
          client,
          options,
          { id: other, fields: { docId: "doc-dropped" }, deliveries: 4 },
          reason,
        ),
      ),
      5000,
      "deadLetter() after the dropped connection",
    );
    await until(() => dropped, 2000);
    // Node reports an unhandled rejection once the tick it happened in is over.
    await until(() => rejections.heard.length > 0, 200);
  } finally {
    drop.cancel();
    rejections.stop();
  }
  check(
    rejections.heard.length === 0,
    `The check dropped the connection under deadLetter()'s transaction (as a Redis restart does), and its rejection (${String(rejections.heard[0])}) was handled by nobody: Node ends a process on an unhandled rejection. The dead letter's MULTI was sent without await: await its exec(), so a failure reaches the caller and deadLetter() returns once Redis has answered.`,
    2,
  );
  // Resolving is right only when the dead letter was written after all (sent again, say).
  if ("value" in outcome) {
    const written = ((await observer.xRange(q.deadLetterStream, "-", "+")) ?? []).some(
      (d) => d.message.originalId === other,
    );
    check(
      written,
      "The check dropped the connection under deadLetter()'s transaction (as a Redis restart does), and deadLetter() resolved as if the document were dead-lettered: it is not in the dead-letter stream, it is still pending, and the caller was told all is well. Await the exec() and let its failure reach the caller (no catch around it, no .catch(() => {})).",
      2,
    );
  }
  // Redis runs the transaction, then the connection drops before its reply arrives, on a client
  // that reconnects (node-redis's default): a dead letter sent again once it has is a second one.
  const lost = await observer.xAdd(q.stream, "*", { docId: "doc-lost-reply" });
  await observer.xReadGroup(q.group, owner, { key: q.stream, id: ">" }, { COUNT: 1 });
  const reconnecting = await learnerClient(undefined, { reconnect: true });
  const loseReply = holdReply(
    (c) => ["EXEC", "EVAL", "EVALSHA", "FCALL"].includes(c.name),
    (c) => dropConnection(c.conn),
  );
  try {
    await within(
      settled(
        exercise.deadLetter(
          reconnecting,
          options,
          { id: lost, fields: { docId: "doc-lost-reply" }, deliveries: 4 },
          reason,
        ),
      ),
      5000,
      "deadLetter() after its reply was lost",
    );
  } finally {
    loseReply.cancel();
  }
  if (!loseReply.hasFired()) return;
  const letters = ((await observer.xRange(q.deadLetterStream, "-", "+")) ?? []).filter(
    (d) => d.message.originalId === lost,
  );
  check(
    letters.length <= 1,
    `doc-lost-reply was dead-lettered ${letters.length} times: the check dropped the connection while the reply to deadLetter()'s transaction was on its way back (Redis had run it, XADD and XACK), and your code sent the dead letter again once the client had reconnected. A retry after a lost reply repeats what Redis already did. Let the error through instead (no retry around exec()): if the transaction did not run, the entry is still pending, and whoever takes it over dead-letters it once.`,
    2,
  );
});

test("a retry sweep leaves a slow first delivery alone", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:slow");
  const busyOne = fresh("ocr");
  const options = {
    ...q,
    maxDeliveries: MAX_DELIVERIES,
    retryBaseMs: BASE_MS,
    blockMs: 50,
  };
  const slow = heldHandle();
  let worker: Worker | undefined;
  try {
    worker = await start(await learnerClient(), workerOptions(q, busyOne, slow.handle));
    const id = await observer.xAdd(q.stream, "*", { docId: "contract-40-pages" });
    check(
      await until(() => slow.startedAt > 0, 5000),
      `Worker ${busyOne} never started on the new entry: read new entries with XREADGROUP ... >.`,
      2,
    );
    // Several backoffs long: a first delivery that failed would be due by now; this one is not.
    await sleep(2.5 * BASE_MS);
    const sweeper = fresh("ocr");
    const sweeperClient = await learnerClient();
    const taken = await call("claimDueRetries() by another worker", () =>
      exercise.claimDueRetries(sweeperClient, {
        ...options,
        consumer: sweeper,
        async handle() {},
      }),
    );
    const [entry] = await observer.xPendingRange(q.stream, q.group, id, id, 1);
    const acked = sent((c) => c.name === "XACK" && c.args.slice(3).includes(id)).length > 0;
    check(
      entry !== undefined || taken.some((t) => t.id === id) || !acked,
      `${busyOne} is still working on contract-40-pages (the check holds its handle()), but your code already sent XACK for the entry: it is no longer pending, so a crash now would lose it. XACK after handle() succeeds.`,
      2,
    );
    check(
      entry !== undefined || taken.some((t) => t.id === id),
      `${busyOne} is still working on contract-40-pages (the check holds its handle()), but the entry is no longer pending in the group, and ${sentFor(id)}. It must stay pending until the work is done, so a crash now would not lose it.`,
      2,
    );
    check(
      !taken.some((t) => t.id === id) && entry?.consumer === busyOne,
      `${busyOne} has been working on its first delivery of contract-40-pages for ${Date.now() - slow.startedAt} ms, and a retry sweep by ${sweeper} claimed it (retryBaseMs ${BASE_MS}): live work is taken away and done twice. The idle time counts from the last delivery, so a slow task looks exactly like a failed one. While handle() runs, reset the entry's idle time with a heartbeat: XCLAIM <stream> <group> <self> 0 <id> JUSTID every retryBaseMs / 4 or so.`,
      2,
    );
    check(
      entry?.deliveriesCounter === 1,
      `While handle() worked on its first delivery of contract-40-pages, the entry's delivery count went up to ${entry?.deliveriesCounter}, and ${sentFor(id)}. An XCLAIM without JUSTID counts a delivery: beat with XCLAIM ... JUSTID (client.xClaimJustId()), which resets the idle time and leaves the count alone; otherwise a slow document is dead-lettered without ever having failed.`,
      2,
    );
  } finally {
    slow.release();
    await stopQuietly(worker);
  }
});

test("a heartbeat resets the idle time whatever it is, and a dropped beat does not end the worker", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:dropped");
  const me = fresh("ocr");
  const slow = heldHandle();
  const rejections = hearUnhandledRejections();
  // Longer than elsewhere, so the idle time a beat must undo stands well clear of load delays.
  const retryBaseMs = 800;
  const aged = Math.round(0.6 * retryBaseMs);
  let worker: Worker | undefined;
  try {
    // A retry, not a first delivery (the test above has that one): it needs its beats as much.
    const id = await deliveredBefore(observer, q, fresh("ocr"), 1, "contract-40-pages");
    worker = await start(await learnerClient(), {
      ...workerOptions(q, me, slow.handle),
      retryBaseMs,
    });
    const isBeat = (c: SentCommand) =>
      slow.startedAt > 0 && c.name === "XCLAIM" && c.args.includes(id);
    // Before the first beat the entry is aged, as if nobody had touched it for `aged` ms; the
    // second rule sees only the beats after that one, so it finds what the first beat left.
    // The connection carrying the second beat goes away before it reaches Redis, so that
    // beat's promise rejects.
    let idleAfterBeat: number | undefined;
    let dropped = false;
    before(isBeat, async () => {
      await observer.xClaimJustId(q.stream, q.group, me, 0, id, { IDLE: aged });
    });
    before(isBeat, async (c) => {
      const [entry] = await observer.xPendingRange(q.stream, q.group, id, id, 1);
      idleAfterBeat = entry?.millisecondsSinceLastDelivery;
      dropConnection(c.conn);
      dropped = true;
    });
    check(
      await until(() => slow.startedAt > 0, 5000),
      `Worker ${me} never retried contract-40-pages, which had failed once and been idle for a minute (retryBaseMs ${retryBaseMs}): claim due retries with claimDueRetries() on every round.`,
      2,
    );
    check(
      await until(() => dropped, 4 * retryBaseMs),
      `While handle() ran on its retry of contract-40-pages (delivery 2) for ${4 * retryBaseMs} ms (retryBaseMs ${retryBaseMs}), ${me} sent fewer than two XCLAIMs naming the entry: keep the entry in hand fresh with a heartbeat (XCLAIM ... JUSTID to itself) every retryBaseMs / 4 or so, on a retry as on a first delivery: a slow retry looks as failed as a slow first try.`,
      2,
    );
    check(
      idleAfterBeat !== undefined && idleAfterBeat < aged,
      `While handle() ran, the check aged the entry to ${aged} ms idle just before a beat of yours (retryBaseMs ${retryBaseMs}); at your next beat it was ${idleAfterBeat} ms idle: that beat did not set it back to 0, or the beats are too far apart. Beat with min-idle-time 0 (XCLAIM <stream> <group> <self> 0 <id> JUSTID), which resets the idle time whatever it is, every retryBaseMs / 4 or so. A beat with a min-idle-time of retryBaseMs resets it only once another worker's sweep could already take the entry.`,
      2,
    );
    // Node reports an unhandled rejection once the microtasks of the tick it happened in ran.
    await sleep(BASE_MS / 2);
    check(
      rejections.heard.length === 0,
      `While handle() ran, the check dropped the connection your heartbeat's XCLAIM was on (as a Redis restart or a network failure does). The beat's promise rejected (${String(rejections.heard[0])}) and nothing handled it: Node ends a process on an unhandled rejection, so your worker would have died over one missed beat. Give every promise you start without awaiting it, each beat included, a catch (beat().catch(() => {})): a missed beat is harmless, the next one resets the idle time.`,
      3,
    );
  } finally {
    slow.release();
    await stopQuietly(worker);
    rejections.stop();
  }
});

test("a worker claims one due retry at a time", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:one-by-one");
  const crashed = fresh("ocr");
  for (let n = 1; n <= 3; n++) await deliveredBefore(observer, q, crashed, 1, `doc-${n}`);
  const me = fresh("ocr");
  const busy = heldHandle();
  let worker: Worker | undefined;
  try {
    worker = await start(await learnerClient(), workerOptions(q, me, busy.handle));
    check(
      await until(() => busy.startedAt > 0, 3000),
      `Three entries were due for a retry, and ${me} never started on one: look for due entries with XPENDING ... IDLE and claim them with XCLAIM.`,
      2,
    );
    const held = (await observer.xPendingRange(q.stream, q.group, "-", "+", 10)).filter(
      (p) => p.consumer === me,
    );
    check(
      held.length === 1,
      `While ${me} was busy with its first retry, it already held ${held.length} of the 3 due entries. A claimed entry waiting in your hands ages like any other: after one backoff another worker's sweep takes it while it is still yours, and it is done twice. Claim one due entry, handle it, then claim the next (claimDueRetries(client, options), limit 1).`,
      2,
    );
  } finally {
    busy.release();
    await stopQuietly(worker);
  }
});

test("claimDueRetries() with a limit of 3 claims three due entries", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:limit");
  const crashed = fresh("ocr");
  const ids: string[] = [];
  for (let n = 1; n <= 4; n++) ids.push(await deliveredBefore(observer, q, crashed, 1, `doc-${n}`));
  const me = fresh("ocr");
  const got = await call("claimDueRetries(client, options, 3)", async () =>
    exercise.claimDueRetries(
      await learnerClient(),
      workerOptions(q, me, async () => {}),
      3,
    ),
  );
  const gotIds = (Array.isArray(got) ? got : []).map((t) => t.id);
  check(
    sameValue(gotIds, ids.slice(0, 3)),
    `Four entries had failed once and been idle for a minute (retryBaseMs ${BASE_MS}), and claimDueRetries(client, options, 3) returned ${gotIds.length === 0 ? "nothing" : gotIds.join(", ")}; expected the first three, ${ids.slice(0, 3).join(", ")}. Go on through the idle entries until limit tasks are claimed (or none is left), not only the first one.`,
    2,
  );
  const held = (await observer.xPendingRange(q.stream, q.group, "-", "+", 10)).filter(
    (p) => p.consumer === me,
  );
  check(
    held.length === 3,
    `claimDueRetries(client, options, 3) should leave exactly the three tasks it returned claimed by ${me}; ${held.length} are.`,
    2,
  );
});

test("stop() of a worker whose loop ended on an error (its group removed) reports it", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:nogroup");
  const consumer = fresh("ocr");
  const client = await learnerClient();
  await expectStopReportsEndedLoop({
    observer,
    ...q,
    consumer,
    within: scope("worker"),
    start: () =>
      start(
        client,
        workerOptions(q, consumer, async () => {}),
      ),
    hint: 2,
  });
});

test("a due retry behind 12 live entries and a page of 100 still waiting is found", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:behind");
  // Twelve first deliveries in progress elsewhere: fresh, and not due for another 5 s.
  for (let n = 1; n <= 12; n++) await observer.xAdd(q.stream, "*", { docId: `doc-${n}` });
  await observer.xReadGroup(q.group, fresh("ocr"), { key: q.stream, id: ">" });
  // A hundred that failed 4 times: idle 30 s, enough for IDLE, but their backoff is 40 s.
  // They and doc-retry share one millisecond, so only an exclusive start ("(" + id) finds it:
  // a next page from the following millisecond skips it.
  const [lastLive] = (await observer.xRevRange(q.stream, "+", "-", { COUNT: 1 })) ?? [];
  const ms = Math.max(Date.now(), Number(lastLive?.id.split("-")[0] ?? 0) + 1);
  const waiting = await Promise.all(
    Array.from({ length: 100 }, (_, n) =>
      observer.xAdd(q.stream, `${ms}-${n}`, { docId: `doc-w${n}` }),
    ),
  );
  const waiter = fresh("ocr");
  await observer.xReadGroup(q.group, waiter, { key: q.stream, id: ">" });
  await observer.xClaim(q.stream, q.group, waiter, 0, waiting, { RETRYCOUNT: 4, IDLE: 30_000 });
  const id = await deliveredBefore(observer, q, fresh("ocr"), 1, "doc-retry", `${ms}-100`);
  const retryBaseMs = 5000;
  const from = sent().at(-1)?.seq ?? 0;
  const got = await call("claimDueRetries()", async () =>
    exercise.claimDueRetries(await learnerClient(), {
      ...workerOptions(q, fresh("ocr"), async () => {}),
      retryBaseMs,
    }),
  );
  check(
    got.some((t) => t.id === id),
    `The pending entries list held 12 entries live workers had just been given, 100 that failed 4 times and wait out their 40 s backoff (idle 30 s), then doc-retry, which failed once and has been idle for a minute (retryBaseMs ${retryBaseMs}): claimDueRetries() returned ${got.length === 0 ? "nothing" : JSON.stringify(got.map((t) => t.fields.docId))}. Let Redis skip what is not idle long enough (XPENDING ... IDLE retryBaseMs), and when a page holds nothing due, read the next one, from just after its last ID ("(" + id: doc-retry shares its millisecond with the last of the hundred, so a next page from the following millisecond skips it), until a page comes back short.`,
    2,
  );
  const pages = sent((c) => c.seq > from && c.name === "XPENDING").map(pendingPageSize);
  const most = Math.max(
    0,
    ...pages.filter((n): n is number => n !== undefined && Number.isFinite(n)),
  );
  check(
    most <= MAX_PENDING_PAGE,
    `claimDueRetries() read up to ${most} pending entries in one XPENDING (COUNT ${most}): that is the whole pending list in one reply, not a page. After an outage the list holds every document that failed meanwhile, and one such reply fills the worker's memory and holds Redis up while it is built, on every sweep. Read a page of 100 (COUNT 100), and the next one from just after its last ID only while nothing due was found.`,
    2,
  );
});

test("a due retry is not held back by a steady flow of new entries", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:busy");
  await deliveredBefore(observer, q, fresh("ocr"), 1, "doc-retry");
  // Fifteen uploads queued behind it, 20 ms of work each: several blockMs (50) of steady flow.
  const uploads = 15;
  for (let n = 1; n <= uploads; n++) await observer.xAdd(q.stream, "*", { docId: `doc-new-${n}` });
  const order: string[] = [];
  let worker: Worker | undefined;
  try {
    worker = await start(
      await learnerClient(),
      workerOptions(q, fresh("ocr"), async (task) => {
        order.push(task.fields.docId ?? "?");
        if (task.fields.docId !== "doc-retry") await sleep(20);
      }),
    );
    check(
      await until(() => order.length > uploads, 10_000),
      `doc-retry was due and ${uploads} new entries were queued; your worker handled ${order.length} of them in 10 s: ${JSON.stringify(order)}.`,
      2,
    );
    const at = order.indexOf("doc-retry");
    check(
      at < uploads,
      `doc-retry had been due for a retry for a minute when your worker started, with ${uploads} new entries queued (20 ms of work each); your worker retried it only after every new one. With uploads arriving all day, a read never comes back empty and the retry never comes. Look for due retries on every round of the loop (one due retry, then one new entry), not only when no new entry came.`,
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
});

test("new entries read while a retry is due come one at a time, so none ages in the worker's hands", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:one-new");
  await deliveredBefore(observer, q, fresh("ocr"), 1, "doc-retry");
  const uploads = ["doc-new-1", "doc-new-2", "doc-new-3"];
  for (const docId of uploads) await observer.xAdd(q.stream, "*", { docId });
  const me = fresh("ocr");
  const other = scope("sweeper");
  const sweeperClient = await other.run(() => learnerClient());
  // The worker's first new entry is held in handle() until the check has swept once.
  let inHand: Task | undefined;
  const busy = heldHandle();
  let worker: Worker | undefined;
  try {
    worker = await start(
      await learnerClient(),
      workerOptions(q, me, async (task) => {
        if (inHand || task.fields.docId === "doc-retry") return;
        inHand = task;
        await busy.handle();
      }),
    );
    await expectHanded(() => inHand !== undefined, "a new entry");
    const alsoHeld = async () =>
      (await observer.xPendingRange(q.stream, q.group, "-", "+", 10)).filter(
        (p) => p.consumer === me && p.id !== inHand?.id,
      );
    // Whatever else the worker holds has no heartbeat: once it is past retryBaseMs, another
    // worker's sweep finds it due. One that keeps them all fresh is left waiting 2 s here.
    if ((await alsoHeld()).length > 0) {
      await until(
        async () => (await alsoHeld()).some((p) => p.millisecondsSinceLastDelivery >= BASE_MS + 20),
        2000,
      );
    }
    const held = await alsoHeld();
    const taken = await call("claimDueRetries() by a second worker", () =>
      exercise.claimDueRetries(sweeperClient, {
        ...workerOptions(q, fresh("ocr"), async () => {}),
      }),
    );
    const stolen = taken.filter((t) => held.some((p) => p.id === t.id));
    check(
      stolen.length === 0,
      `doc-retry was due and ${uploads.length} new entries were queued. After the retry, ${me} read new entries without waiting, as it should while retries are due, but it took ${held.length + 1} of them at once: while it worked on ${inHand?.fields.docId}, the others waited in its hands with no heartbeat, and ${BASE_MS} ms later (retryBaseMs) another worker's retry sweep took ${stolen.map((t) => t.fields.docId).join(", ")} while it was still ${me}'s: done twice, and a delivery counted as failed that never was. Read one new entry at a time (COUNT 1), on the non-blocking read as on the blocking one.`,
      2,
    );
  } finally {
    busy.release();
    await stopQuietly(worker);
  }
});

test("a backlog of due retries is worked off without waiting a blockMs between them", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:backlog");
  const docs = ["doc-1", "doc-2", "doc-3"];
  for (const docId of docs) await deliveredBefore(observer, q, fresh("ocr"), 1, docId);
  // No new entries: a worker that waits on a blocking read after each retry takes blockMs per
  // retry, 5 s here, far beyond the 2.5 s this check waits.
  const blockMs = 5000;
  const handled: string[] = [];
  let worker: Worker | undefined;
  try {
    worker = await start(
      await learnerClient(),
      workerOptions(
        q,
        fresh("ocr"),
        async (task) => {
          handled.push(task.fields.docId ?? "?");
        },
        blockMs,
      ),
    );
    await until(() => handled.length >= docs.length, 2500);
    check(
      handled.length >= docs.length,
      `${docs.length} documents had failed once a minute ago, all due for a retry, and nothing new was queued; 2.5 s after your worker started (blockMs ${blockMs}) it had retried ${handled.length === 0 ? "none" : JSON.stringify(handled)}. After a retry it waited on a blocking read for new entries (BLOCK ${blockMs}) before looking for the next due one: after an outage, a backlog of due retries is worked off one per blockMs. While a retry was due on this round, read new entries without BLOCK and sweep again straight away; block only when no retry was due.`,
      2,
    );
  } finally {
    // A blocking read of 5 s would hold stop() up: an entry after stop() ends it at once.
    const stopping = stopQuietly(worker);
    await observer.xAdd(q.stream, "*", { docId: "doc-wake" });
    await stopping;
  }
});
test("two workers spot the same due retry: only one of them gets it", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:race");
  const id = await deliveredBefore(observer, q, fresh("ocr"), 1, "doc-retry");
  const options = {
    ...q,
    maxDeliveries: MAX_DELIVERIES,
    retryBaseMs: BASE_MS,
    async handle() {},
  };
  const [first, second] = [fresh("ocr"), fresh("ocr")];
  const other = scope("sweeper");
  const secondClient = await other.run(() => learnerClient());
  const firstClient = await learnerClient();
  let firstGot: Task[] = [];
  // The moment the second worker has decided the entry is due and is about to claim it, the
  // first one claims it.
  const rule = before(
    (c) => c.scope === other.name && (c.name === "XCLAIM" || c.name === "XAUTOCLAIM"),
    async () => {
      firstGot = await call("claimDueRetries() by the first worker", () =>
        exercise.claimDueRetries(firstClient, { ...options, consumer: first }),
      );
    },
  );
  try {
    const secondGot = await call("claimDueRetries() by the second worker", () =>
      exercise.claimDueRetries(secondClient, { ...options, consumer: second }),
    );
    check(
      rule.hasFired(),
      "claimDueRetries() did not claim an entry that had failed once and been idle for a minute (retryBaseMs 200): take it with XCLAIM.",
      2,
    );
    check(
      firstGot.some((t) => t.id === id),
      `claimDueRetries() for ${first} did not return doc-retry, which had failed once and been idle for a minute.`,
      2,
    );
    const thresholds = sent((c) => c.name === "XCLAIM" && c.args[3] === second).map(
      (c) => c.args[4],
    );
    check(
      !secondGot.some((t) => t.id === id),
      `Both ${first} and ${second} claimed doc-retry: ${second} saw it due, ${first} claimed it just before ${second}'s claim went out, and ${second}'s XCLAIM took it anyway (min-idle-time ${thresholds.join(", ") || "?"}). Claim with min-idle-time backoffMs(deliveries): after the first claim the entry is fresh again, and the second claim gets nothing.`,
      2,
    );
  } finally {
    rule.cancel();
  }
});

test("a retry another worker claimed meanwhile waits out its new, longer backoff", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:reclaimed");
  // Failed five times: due once idle for backoffMs(5) = 16 * BASE_MS, and idle a minute already.
  const failures = 5;
  const id = await deliveredBefore(observer, q, fresh("ocr"), failures, "doc-retry");
  const [me, rival] = [fresh("ocr"), fresh("ocr")];
  const sinceRival = 1.25 * BASE_MS;
  // Just before this worker's claim goes out, a rival has claimed it (one more delivery, due
  // again only 32 * BASE_MS after that) and has been on it for 1.25 * BASE_MS: past
  // retryBaseMs, far from due. The margin to the right min-idle-time outlasts any load delay.
  const rule = before(
    (c) => c.name === "XCLAIM" && c.args[3] === me && c.args.includes(id),
    async () => {
      await observer.xClaim(q.stream, q.group, rival, 0, id, {
        RETRYCOUNT: failures + 1,
        IDLE: sinceRival,
      });
    },
  );
  const client = await learnerClient();
  try {
    const got = await call("claimDueRetries()", () =>
      exercise.claimDueRetries(client, {
        ...q,
        consumer: me,
        maxDeliveries: 10,
        retryBaseMs: BASE_MS,
        async handle() {},
      }),
    );
    check(
      rule.hasFired(),
      `claimDueRetries() did not claim doc-retry, which had been delivered ${failures} times and idle for a minute (retryBaseMs ${BASE_MS}): an entry is due once idle for backoffMs(deliveries).`,
      2,
    );
    const asked = sent((c) => c.name === "XCLAIM" && c.args[3] === me).map((c) => c.args[4]);
    check(
      !got.some((t) => t.id === id),
      `Just before your XCLAIM of doc-retry went out, another worker claimed it (delivery ${failures + 1}) and had held it for ${sinceRival} ms; your XCLAIM with min-idle-time ${asked.join(", ")} took it anyway, and both workers now retry it. The min-idle-time must be the wait you checked, backoffMs(deliveries) of the entry (${16 * BASE_MS} ms for its ${failures} deliveries), not retryBaseMs: then a claim by someone else in between leaves it too fresh for yours.`,
      2,
    );
  } finally {
    rule.cancel();
  }
});

test("an entry that comes due between XPENDING and XCLAIM is returned, or left alone", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:coming-due");
  // Failed twice and idle 1.5 * BASE_MS: past retryBaseMs, so XPENDING ... IDLE lists it, but
  // short of backoffMs(2) = 2 * BASE_MS, so it is not due yet when the sweep reads it.
  const id = await deliveredBefore(observer, q, fresh("ocr"), 2, "doc-soon", "*", 1.5 * BASE_MS);
  const idleOf = async () =>
    (await observer.xPendingRange(q.stream, q.group, id, id, 1))[0]
      ?.millisecondsSinceLastDelivery ?? 0;
  // A claim of it that goes out anyway waits until the entry has come due, so Redis gives it.
  const rule = before(
    (c) =>
      c.name === "XCLAIM" &&
      c.args.includes(id) &&
      !c.args.some((a) => a.toUpperCase() === "JUSTID"),
    async () => {
      await until(async () => (await idleOf()) >= 2 * BASE_MS + 20, 2000);
    },
  );
  const client = await learnerClient();
  try {
    const got = await call("claimDueRetries()", () =>
      exercise.claimDueRetries(client, {
        ...q,
        consumer: fresh("ocr"),
        maxDeliveries: 10,
        retryBaseMs: BASE_MS,
        async handle() {},
      }),
    );
    const [entry] = await observer.xPendingRange(q.stream, q.group, id, id, 1);
    const deliveries = entry?.deliveriesCounter ?? 0;
    check(
      deliveries === 2 || got.some((t) => t.id === id),
      `doc-soon had failed twice and was idle ${1.5 * BASE_MS} ms when your sweep read it (due at backoffMs(2) = ${2 * BASE_MS} ms): not due yet. Your code sent XCLAIM for it anyway, it had come due by then and Redis gave it (its delivery count went from 2 to ${deliveries}), and claimDueRetries() returned ${got.length === 0 ? "nothing" : got.map((t) => t.id).join(", ")}: a delivery used up with no attempt, and the entry now ages in your consumer's hands. Test whether it is due (idle time against backoffMs(deliveries)) before you claim it, or return whatever XCLAIM gave you.`,
      2,
    );
  } finally {
    rule.cancel();
  }
});

test("a retry is claimed as soon as it is due, not one backoff later", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:due");
  // Delivered 3 times, the last one failed 4.1 s ago: due after backoffMs(3, 1000) = 4000 ms.
  // A worker that reads the backoff of the delivery to come (backoffMs(4) = 8000 ms) leaves it
  // another 3.9 s, far more than the 3.4 s this check waits; a right one takes it at its first
  // sweep. (The first test cannot see a late retry: timing is no proof on a busy machine.)
  const base = 1000;
  const id = await deliveredBefore(observer, q, fresh("ocr"), 3, "doc-due", "*", 4100);
  const handled: Task[] = [];
  let worker: Worker | undefined;
  try {
    worker = await start(await learnerClient(), {
      ...workerOptions(q, fresh("ocr"), async (task) => {
        handled.push(task);
      }),
      retryBaseMs: base,
      maxDeliveries: 10,
    });
    await until(() => handled.length > 0, 3400);
    const [entry] = await observer.xPendingRange(q.stream, q.group, id, id, 1);
    check(
      handled.length > 0,
      `doc-due had been delivered 3 times and idle for 4.1 s when your worker started (retryBaseMs ${base}): past backoffMs(3, ${base}) = ${4 * base} ms, so it was due at once. 3.4 s later it had not been retried${entry ? ` (it was still pending, ${entry.millisecondsSinceLastDelivery} ms idle, ${entry.deliveriesCounter} deliveries; ${sentFor(id)})` : ""}. An entry is due once its idle time reaches backoffMs of the delivery count XPENDING reports, the deliveries it has had: not of the delivery the claim is about to make (backoffMs(4) = ${8 * base} ms), which retries every document one backoff too late.`,
      2,
    );
    check(
      handled[0]?.deliveries === 4,
      `doc-due had been delivered 3 times; your worker retried it as delivery ${JSON.stringify(handled[0]?.deliveries)}, not 4.`,
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
});

test("a worker that dies between the dead-letter XADD and the XACK: the document is dead-lettered once", async (ctx) => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:dying");
  const id = await deliveredBefore(observer, q, fresh("ocr"), MAX_DELIVERIES, "doc-oom");
  const options = {
    ...q,
    maxDeliveries: MAX_DELIVERIES,
    retryBaseMs: BASE_MS,
    blockMs: 50,
    async handle() {},
  };
  const doomed = scope("worker");
  const crash = before((c) => c.scope === doomed.name && command("XACK", id)(c), "crash");
  const dying = fresh("ocr");
  let worker: Worker | undefined;
  let heir: Worker | undefined;
  // The crash leaves the process alive with the worker's clients closed: each of their commands
  // now rejects at once, without waiting for anything. A loop that catches that and goes
  // straight round again never lets anything else in the process run.
  const disarm = failIfStarved(
    ctx.task.name,
    `The check crashed worker ${dying} (it cut the worker's connections just before its XACK of doc-oom), and from then on nothing else in the process ran: its loop caught the error of a closed client and went straight round again, with no pause. A closed client rejects every command at once, so such a loop spins without ever waiting, and the event loop never turns again: no timer fires, no other worker runs, stop() is never even called, for as long as the process lives. A loop that catches an error and carries on must pause before the next round (await a sleep of a second or so), or let the error end the loop (its promise's catch logs it).`,
    2,
  );
  try {
    const client = await doomed.run(() => learnerClient());
    worker = await doomed.run(() => start(client, { ...options, consumer: dying }));
    const died = await until(() => crash.hasFired(), 5000);
    check(
      died || (await observer.xLen(q.deadLetterStream)) > 0,
      "doc-oom, already delivered 4 times, was never dead-lettered.",
      2,
    );
    // What the dead worker left behind is due at once.
    const left = await observer.xPendingRange(q.stream, q.group, id, id, 1);
    if (left[0]) {
      await observer.sendCommand([
        "XCLAIM",
        q.stream,
        q.group,
        left[0].consumer,
        "0",
        id,
        "IDLE",
        "60000",
        "JUSTID",
      ]);
    }
    heir = await start(await learnerClient(), { ...options, consumer: fresh("ocr") });
    await until(async () => (await pendingCount(observer, q.stream, q.group)) === 0, 5000);
    const dead = (await observer.xRange(q.deadLetterStream, "-", "+")) ?? [];
    check(
      dead.length === 1,
      `${dying} died just before its XACK of doc-oom; the worker that took over dead-lettered it again, so the dead-letter stream holds ${dead.length} entries for one document. The XADD had reached Redis on its own: send the XADD and the XACK in one MULTI ... EXEC, so a worker that dies before EXEC leaves nothing half done.`,
      2,
    );
  } finally {
    disarm();
    crash.cancel();
    await stopQuietly(heir);
    // The crashed worker is stopped too: a loop that carries on after errors with a pause (as
    // the lesson allows) would otherwise go round on its closed clients through the next tests,
    // and the next test counts every command on a closed client as its own worker's.
    await stopQuietly(worker);
  }
});

test("a task is acknowledged only once handle() has finished, however long it takes", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:slow-handle");
  const me = fresh("ocr");
  const id = await observer.xAdd(q.stream, "*", { docId: "doc-slow" });
  let started = false;
  let release = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const workerScope = scope("worker");
  // The model call is held while every timer the worker's code started fires at once (its
  // heartbeat too): a handle() raced against a timeout of any length shows, with no wait.
  const timers = scopeTimers(workerScope, { createdIn: ctx.target });
  let worker: Worker | undefined;
  try {
    const client = await learnerClient();
    worker = await workerScope.run(() =>
      start(
        client,
        workerOptions(q, me, async () => {
          started = true;
          await gate;
        }),
      ),
    );
    check(
      await until(() => started, 3000),
      `Worker ${me} did not hand doc-slow to handle() within 3 s: read new entries with XREADGROUP ... > and pass each one to handle().`,
      2,
    );
    await expectNoAckWhileHandling(
      timers,
      () => sent((c) => c.name === "XACK" && c.args.includes(id)).length > 0,
      "doc-slow",
      2,
    );
  } finally {
    release();
    timers.stop();
    await stopQuietly(worker);
  }
});

test("Redis dropping the worker's blocking read: the loop neither goes straight round again nor ends unseen", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:dropped-read");
  const me = fresh("ocr");
  let droppedAt = 0;
  let worker: Worker | undefined;
  const drops = hearDropErrors();
  // The read a worker spends its time in: its connection goes away before it reaches Redis, as
  // in a Redis restart or a network failure, and the kit's clients do not reconnect, so the
  // reader stays closed and rejects every read at once.
  const drop = before(
    (c) => c.name === "XREADGROUP" && c.args.includes(me) && c.args.some((a) => /^BLOCK$/i.test(a)),
    (c) => {
      droppedAt = c.seq;
      dropConnection(c.conn);
    },
  );
  const workerScope = scope("worker");
  const timers = scopeTimers(workerScope, { createdIn: ctx.target });
  try {
    const client = await learnerClient();
    worker = await workerScope.run(() =>
      start(
        client,
        workerOptions(q, me, async () => {}),
      ),
    );
    check(
      await until(() => drop.hasFired(), 3000),
      `Worker ${me} sent no XREADGROUP ... BLOCK within 3 s on a quiet stream: wait for new entries with BLOCK blockMs once no retry is due.`,
      2,
    );
    // node-redis reports the drop as an "error" event on the connection, a turn or two later.
    for (let turn = 0; turn < 3; turn++) await new Promise((resolve) => setImmediate(resolve));
    drops.stop();
    drops.expectHeard(
      1,
      "the connection of your worker's blocking XREADGROUP",
      "worker",
      'Give the connection you duplicate() for the blocking read an error listener (reader.on("error", ...)) that logs the error.',
      2,
    );
    await expectPauseAfterDrop(droppedAt, 2);
    await expectEndReported(worker, me, timers, 2);
  } finally {
    timers.stop();
    drops.stop();
    drop.cancel();
    await stopQuietly(worker);
  }
});

test("stop() returns on a quiet stream and finishes the task in hand", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:stop");
  const client = await learnerClient();
  await expectStopsCleanly({
    observer,
    ...q,
    blockMs: 100,
    start: (handle) => start(client, workerOptions(q, fresh("ocr"), handle, 100)),
    addTask: () => observer.xAdd(q.stream, "*", { docId: "doc-1" }),
  });
});

test("stop() while a due retry is in hand reads no new entry it would leave unhandled", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:stop-retry");
  const consumer = fresh("ocr");
  // Failed once, a minute ago: due at once. The new entry after it nobody has read yet.
  const retry = await deliveredBefore(observer, q, fresh("ocr"), 1, "doc-retry");
  const waiting = {
    id: await observer.xAdd(q.stream, "*", { docId: "doc-new" }),
    docId: "doc-new",
  };
  const client = await learnerClient();
  await expectNoReadAfterStop({
    observer,
    ...q,
    start: (handle) => start(client, workerOptions(q, consumer, handle, 100)),
    held: retry,
    waiting,
    notReached: `doc-retry failed once a minute ago (its backoff long over) and worker ${consumer} did not retry it within 3 s: claim due retries with XPENDING and XCLAIM.`,
    doing: `${consumer} retried doc-retry`,
    advice:
      "Nobody retries it until its backoff has passed. Check the stop flag after the retries too, before reading new entries.",
  });
});

test("stop() leaves a failed task pending for its retry", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:stop-failed");
  const client = await learnerClient();
  const id = await observer.xAdd(q.stream, "*", { docId: "doc-1" });
  let failed = false;
  const handle = async () => {
    failed = true;
    throw new Error("OCR service timed out");
  };
  let worker: Worker | undefined = await start(client, {
    ...workerOptions(q, fresh("ocr"), handle, 100),
    retryBaseMs: 10_000,
  });
  try {
    await expectHanded(() => failed, "doc-1");
    const stopping = worker;
    worker = undefined;
    await call("worker.stop()", () => stopping.stop(), 5000);
  } finally {
    await stopQuietly(worker);
  }
  const [entry] = await observer.xPendingRange(q.stream, q.group, id, id, 1);
  const deleted = sent((c) => c.name === "XGROUP" && /^DELCONSUMER$/i.test(c.args[1] ?? ""));
  check(
    entry !== undefined,
    `handle() failed for doc-1 (delivery 1 of ${MAX_DELIVERIES}), which then waited in the pending entries list for its retry; after stop() it is no longer pending, and the document is lost.${deleted.length > 0 ? ` Your code sent ${deleted[0]?.args.join(" ")}: deleting a consumer deletes the entries it holds. A stopped worker stays in the group.` : " Leave a failed entry pending until its last delivery fails."}`,
    2,
  );
});

test("stop() during a last delivery that then fails: it is still dead-lettered", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:stop-last");
  // Failed three times and due again: the worker's claim makes it the last delivery.
  const id = await deliveredBefore(observer, q, fresh("ocr"), MAX_DELIVERIES - 1, "doc-last");
  const refused = "OCR service refused the document";
  let started = false;
  let failTask: (error: Error) => void = () => {};
  let worker: Worker | undefined = await start(
    await learnerClient(),
    workerOptions(q, fresh("ocr"), () => {
      started = true;
      return new Promise<void>((_, reject) => {
        failTask = reject;
      });
    }),
  );
  try {
    await expectHanded(() => started, "doc-last");
    const stopping = worker;
    worker = undefined;
    // stop() first, then the task in hand fails: finishing it means dead-lettering it.
    const stopped = stopping.stop();
    let returned = false;
    stopped.then(
      () => {
        returned = true;
      },
      () => {
        returned = true;
      },
    );
    // What the worker still has on its way to Redis (a blocking read, its close) is answered
    // first: a stop() that does not wait for the task in hand has returned by then.
    await until(() => returned || nothingInFlight(), 2000);
    await new Promise((resolve) => setImmediate(resolve));
    check(
      !returned,
      `stop() returned while handle() was still working on doc-last's delivery ${MAX_DELIVERIES}, a retry: stop() lets the task in hand finish, retries too. If a sweep of its own (on a timer, say) runs the retries, stop() must await the sweep in progress as well as the read loop.`,
      2,
    );
    // Finishing it includes its dead letter: a stop() that returns with the MULTI still on its
    // way (sent without await) lets the process exit before Redis has it.
    const deadLettered = watchSentAfterStop(
      (c) =>
        (c.name === "XACK" && c.args.includes(id)) ||
        (c.name === "XADD" && c.args[1] === q.deadLetterStream),
      () => returned,
    );
    failTask(new Error(refused));
    await call("worker.stop()", () => stopped, 5000);
    check(
      !(await deadLettered()),
      `stop() returned before the dead letter of doc-last (its MULTI: the XADD and the XACK) had reached Redis: the dead letter was sent without being awaited (a .catch(() => {}) on it included). A process that exits once stop() returns loses it: doc-last stays pending, and the next worker finds it delivered ${MAX_DELIVERIES + 1} times and parks it without the error that made it fail. Await deadLetter() in the task, so that stop() returns only once it is done.`,
      2,
    );
  } finally {
    failTask(new Error(refused));
    await stopQuietly(worker);
  }
  const dead = (await observer.xRange(q.deadLetterStream, "-", "+")) ?? [];
  const [entry] = await observer.xPendingRange(q.stream, q.group, id, id, 1);
  check(
    dead.length === 1 &&
      dead[0]?.message.originalId === id &&
      (dead[0]?.message.reason ?? "").includes(refused),
    `stop() was called while handle() worked on doc-last's delivery ${MAX_DELIVERIES} (maxDeliveries), and then that delivery failed with "${refused}". stop() lets the task in hand finish, and a failed last delivery finishes in the dead-letter stream, with its reason; after stop() the dead-letter stream holds ${JSON.stringify(dead.map((d) => d.message))}${entry ? ` and doc-last is still pending (${entry.deliveriesCounter} deliveries)` : ""}. Left pending, it waits for another worker, which finds it delivered ${MAX_DELIVERIES + 1} times and parks it without the error that made it fail. Decide on the dead letter from the delivery count alone, not from whether the worker is stopping.`,
    2,
  );
  check(
    entry === undefined,
    `doc-last was dead-lettered but is still pending: acknowledge it in the same MULTI.`,
    2,
  );
});

test("stop() called right after startWorker() returns and leaves nothing open", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:stop-at-once");
  const client = await learnerClient();
  const before = allLearnerAddrs();
  // startWorker() returns at once; its group and reader come later: stop() may come first.
  const worker = await start(
    client,
    workerOptions(q, fresh("ocr"), async () => {}, 100),
  );
  try {
    await call("worker.stop() called right after startWorker()", () => worker.stop(), 3000);
  } catch (error) {
    if (!(error instanceof CheckFailure)) throw error;
    fail(
      `${error.message}. A deploy can stop a worker that is still starting: startWorker() returns at once, and stop() may come before the group exists or the reader is connected. Let stop() only set the flag and await the loop, which closes what it opened in its finally.`,
      3,
    );
  }
  const left = await leftOpen(observer, before);
  check(
    left.length === 0,
    `stop(), called right after startWorker() returned, resolved, yet ${left.length} connection(s) your worker opened are still open (last command: ${left.map((c) => c.cmd).join(", ")}): the loop went on starting after stop(). Check the stop flag once the reader is connected, and close the reader in the loop's finally.`,
    3,
  );
});

test("a worker starts on a stream nothing was ever queued on", async () => {
  const observer = await checkClient();
  // A stage deployed before its first upload: no stream key at all, no group.
  const stream = freshKey("docs:empty");
  const q = { stream, group: fresh("ocr"), deadLetterStream: `${stream}:dead` };
  const handled: string[] = [];
  const worker = await start(
    await learnerClient(),
    workerOptions(q, fresh("ocr"), async (task) => {
      handled.push(task.id);
    }),
  ).catch((error: Error) => {
    if (!error.message.includes("threw an error")) throw error;
    return fail(
      `startWorker() on a stream nothing was queued on yet (no key at all, as for a stage deployed before its first upload) failed: ${error.message} XGROUP CREATE refuses a missing stream unless you add MKSTREAM: XGROUP CREATE <stream> <group> 0 MKSTREAM.`,
      2,
    );
  });
  try {
    const id = await observer.xAdd(stream, "*", { docId: "first" });
    check(
      await until(() => handled.includes(id), 3000),
      "The worker started on a stream that did not exist yet (a stage deployed before its first upload), and never handled the entry added after it started. XGROUP CREATE refuses a missing stream unless you add MKSTREAM: XGROUP CREATE <stream> <group> 0 MKSTREAM.",
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
});

test("two workers started at once on a stream with no group yet: both work, each task kept fresh", async () => {
  const observer = await checkClient();
  const stream = freshKey("docs:first-start");
  const q = { stream, group: fresh("ocr"), deadLetterStream: `${stream}:dead` };
  // Uploaded before any worker ever ran: a group created at $ would never see them.
  for (const docId of ["early-1", "early-2"]) await observer.xAdd(stream, "*", { docId });
  const client = await learnerClient();
  const retryBaseMs = 600;
  const started: { docId: string; id: string }[] = [];
  const releases: (() => void)[] = [];
  const handle = (task: Task) =>
    new Promise<void>((resolve) => {
      started.push({ docId: task.fields.docId ?? "", id: task.id });
      releases.push(resolve);
    });
  const workers: Worker[] = [];
  try {
    for (const worker of await Promise.all(
      [fresh("ocr"), fresh("ocr")].map((name) =>
        start(client, { ...workerOptions(q, name, handle), retryBaseMs }),
      ),
    )) {
      workers.push(worker);
    }
    if (!(await until(() => started.length >= 2, 3000))) {
      const groups = await observer.xInfoGroups(stream).catch(() => []);
      fail(
        started.length === 1
          ? "Two workers started at once on a stream with no group: one took early-1 and holds it, and the other never took early-2. Both tried to create the group, and the one that came second was refused with BUSYGROUP: that answer means the group is there, so go on reading; stop only on other errors."
          : groups.length === 0
            ? `Two workers started on ${stream}, which has no consumer group yet, and neither created group ${q.group}: startWorker() creates it if needed (XGROUP CREATE ... 0 MKSTREAM, BUSYGROUP meaning it exists).`
            : `Two workers started on ${stream}, which held early-1 and early-2 before any group existed, and after 3 s neither had handled them: create the group from 0 (XGROUP CREATE ... 0 MKSTREAM), not $, so what was uploaded before the first worker started is work too.`,
        2,
      );
    }
    // The task that started first ends; the other one runs on, and only its own worker's
    // heartbeat keeps it from looking like a failure.
    const [, running] = started;
    if (!running) throw new Error("unreachable");
    const from = sent().at(-1)?.seq ?? 0;
    releases[0]?.();
    let idle = 0;
    const watchUntil = Date.now() + 1.25 * retryBaseMs;
    while (Date.now() < watchUntil) {
      const [entry] = await observer.xPendingRange(stream, q.group, running.id, running.id, 1);
      idle = Math.max(idle, entry?.millisecondsSinceLastDelivery ?? 0);
      await sleep(retryBaseMs / 8);
    }
    check(
      idle < 0.75 * retryBaseMs && started.length === 2,
      `Two workers in one process each worked on a task; once the first task (${started[0]?.docId}) ended, the other (${running.docId}) ran on and was left ${idle} ms idle (retryBaseMs ${retryBaseMs})${started.length > 2 ? ", so a sweep took it while it was still being worked on" : ""}: ${sentFor(running.id, from)} after the first one ended. Ending one task stopped the other's heartbeat: keep each task's heartbeat timer with that task (a local variable of the attempt), not in one variable shared by every worker of the module.`,
      2,
    );
  } finally {
    for (const release of releases) release();
    for (const worker of workers) await stopQuietly(worker);
  }
});

test("a worker whose start fails (its stream key holds no stream) leaves nothing open", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:taken");
  const taken = freshKey("docs:taken");
  await observer.set(taken, "not a stream");
  const client = await learnerClient();
  const before = allLearnerAddrs();
  const worker = await start(
    client,
    workerOptions({ ...q, stream: taken }, fresh("ocr"), async () => {}, 100),
  );
  // Redis refuses XGROUP CREATE with WRONGTYPE: the loop fails while starting. stop() may
  // resolve or pass that error on; either way, what the worker opened must be closed.
  const stopped = await within(
    Promise.resolve()
      .then(() => worker.stop())
      .then(
        () => true,
        () => true,
      ),
    3000,
    "stop()",
  ).catch(() => false);
  check(
    stopped,
    "startWorker() on a stream key that holds a string failed to start (Redis refused the group with WRONGTYPE), and stop() did not return within 3 s: let stop() await the loop, which ends when its start fails.",
    3,
  );
  const left = await leftOpen(observer, before);
  check(
    left.length === 0,
    `startWorker() on a stream key that holds a string could not create its group (WRONGTYPE), and ${left.length} connection(s) it opened stayed open after stop(). A start that fails halfway must close what it opened: open the reader inside the try whose finally closes it, or create the group before opening the reader.`,
    3,
  );
});

test("a worker started without blockMs still waits a bounded time per read", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:default-block");
  const client = await learnerClient();
  const { blockMs: _, ...options } = workerOptions(q, fresh("ocr"), async () => {});
  await expectBoundedDefaultBlock({
    stream: q.stream,
    start: () => start(client, options),
    wake: () => observer.xAdd(q.stream, "*", { docId: "wake-up" }),
    hint: 3,
    atLeastMs: 100,
  });
});

test("the blocking read waits on a connection of its own, not on the client it was given", async () => {
  const observer = await checkClient();
  const q = await setUp(observer, "docs:reader");
  const client = await learnerClient();
  const blockMs = 1500;
  let worker: Worker | undefined;
  try {
    worker = await start(
      client,
      workerOptions(q, fresh("ocr"), async () => {}, blockMs),
    );
    const blocking = () =>
      sent((c) => c.args[0]?.toUpperCase() === "XREADGROUP" && c.args.includes(q.stream)).some(
        (c) => c.args.some((a) => a.toUpperCase() === "BLOCK"),
      );
    check(
      await until(blocking, 3000),
      `startWorker() sent no XREADGROUP ... BLOCK on ${q.stream} within 3 s of starting on a quiet stream.`,
      3,
    );
    // The caller's client is shared with the rest of the application: a PING on it must not
    // queue behind the worker's BLOCK.
    const asked = Date.now();
    await client.ping();
    const waited = Date.now() - asked;
    check(
      waited < blockMs / 2,
      `While your worker waited for new entries (BLOCK ${blockMs} ms), a PING on the client passed to startWorker() took ${waited} ms: the blocking XREADGROUP holds that connection, so every other command of the application waits behind it. Read on a connection of your own (client.duplicate(), connected in startWorker and closed when the loop ends).`,
      3,
    );
  } finally {
    await observer.xAdd(q.stream, "*", { docId: "wake-up" });
    await stopQuietly(worker);
  }
});
