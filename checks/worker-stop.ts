/**
 * stop() of a learner's stream worker, tested where it is hard: on a quiet stream, where no
 * entry arrives to wake a blocking read, and in the middle of a task. Lessons 09 and 10 share it.
 */
import {
  CheckFailure,
  type ConnectionInfo,
  call,
  check,
  ctx,
  fail,
  failIfNotWritten,
  learnerConnections,
  type Redis,
  sleep,
  stopQuietly,
  until,
} from "./kit.ts";
import { fireUntilQuiet, timersFired } from "./own-timers.ts";
import { pendingCount } from "./streams-support.ts";
import {
  allLearnerAddrs,
  before as beforeSent,
  command,
  connectionOpen,
  type SentCommand,
  scope,
  scopeTimers,
  sent,
} from "./wire.ts";

interface Worker {
  stop(): Promise<void>;
}

/** How long a learner's startWorker() may take to hand its worker back: a connect, no more. */
const START_MS = 5000;

/** How long startWorker() may stay unresolved once its loop demonstrably runs. */
const LOOPING_MS = 1000;

/**
 * Calls a learner's async startWorker(), which must resolve to its worker as soon as the worker
 * runs: one that awaits its own loop never returns, and is told so here instead of by a timeout.
 * `looping`, when given, says the worker's loop demonstrably runs (it handed a task over, or
 * read again): a startWorker() still unresolved a while after that awaits its loop.
 */
export async function startLearnerWorker<W>(
  what: string,
  start: () => W | Promise<W>,
  hint?: number,
  looping?: () => boolean,
): Promise<W> {
  const started = Date.now();
  let settled = false;
  const starting = call(what, start, START_MS).finally(() => {
    settled = true;
  });
  const awaitsLoop = async (): Promise<never> => {
    let since: number | undefined;
    for (; !settled; await sleep(20)) {
      if (looping?.()) since ??= Date.now();
      if (since !== undefined && Date.now() - since >= LOOPING_MS) {
        starting.catch(() => {});
        throw new CheckFailure("Still waiting: the loop runs");
      }
    }
    return new Promise<never>(() => {});
  };
  try {
    return await (looping ? Promise.race([starting, awaitsLoop()]) : starting);
  } catch (error) {
    if (error instanceof CheckFailure && /^Still waiting/.test(error.message)) {
      const waited = Math.round((Date.now() - started) / 100) / 10;
      const early = error.message.includes("the loop runs");
      fail(
        `${what} did not return within ${early ? `${waited} s, though its loop already ran` : `${START_MS / 1000} s`}. startWorker() should resolve to { stop } as soon as the worker runs: start the loop without awaiting it, and let stop() await it.`,
        hint,
      );
    }
    throw error;
  }
}

export interface StopSetup {
  observer: Redis;
  stream: string;
  group: string;
  /** The BLOCK time the worker was given: stop() may wait for one blocking read to end. */
  blockMs: number;
  /** Starts a worker of the learner's on a client opened before this is called. */
  start(handle: (task: { id: string }) => Promise<void>): Promise<Worker>;
  /** Adds one entry to the stream, returns its ID. */
  addTask(): Promise<string>;
}

/** Connections the learner's code opened after `before` that the server still has. */
async function openedSince(observer: Redis, before: Set<string>): Promise<ConnectionInfo[]> {
  return (await learnerConnections(observer)).filter((c) => !before.has(c.addr));
}

async function expectClosed(
  observer: Redis,
  before: Set<string>,
  when: string,
  advice = "stop() should close what the worker opened, e.g. its duplicate() for the blocking reads.",
  hint = 3,
): Promise<void> {
  let left: ConnectionInfo[] = [];
  const closed = await until(async () => {
    left = await openedSince(observer, before);
    return left.length === 0;
  }, 1000);
  check(
    closed,
    `${when}, ${left.length} connection(s) the worker opened are still open (last command: ${left.map((c) => c.cmd).join(", ")}). ${advice}`,
    hint,
  );
}

/**
 * Watches for the first command matching `match` (the task in hand's XACK, its dead letter) to
 * reach the socket; the function it returns, called once stop() has returned, says whether that
 * command went out only after stop() had returned (`stopped()` already true): sent without
 * await. node-redis writes a command on the next turn of the event loop, so a stop() that does
 * not wait for it has returned by then; a few turns more cover a stop() that takes some to
 * settle. No timing: event-loop order. A command that never goes out counts as not late.
 */
export function watchSentAfterStop(
  match: (c: SentCommand) => boolean,
  stopped: () => boolean,
): () => Promise<boolean> {
  let late = false;
  let judged = false;
  const rule = beforeSent(match, async () => {
    for (let turn = 0; turn < 10 && !stopped(); turn++) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    late = stopped();
    judged = true;
  });
  return async () => {
    await until(() => judged, 1000);
    rule.cancel();
    return late;
  };
}

export async function expectStopsCleanly(setup: StopSetup): Promise<void> {
  const { observer, blockMs } = setup;
  const before = allLearnerAddrs();

  const quiet = await setup.start(async () => {});
  // Let it settle into its blocking read: nothing is going to wake it.
  await until(
    async () =>
      (await openedSince(observer, before)).some(
        (c) => c.cmd === "xreadgroup" && c.flags.includes("b"),
      ),
    2000,
  );
  const askedAt = Date.now();
  await call("worker.stop() on a quiet stream", () => quiet.stop(), blockMs + 5000);
  const took = Date.now() - askedAt;
  check(
    took <= blockMs + 1000,
    `On a quiet stream, stop() took ${took} ms to return; a worker reading with BLOCK ${blockMs} should be done within one blocking read (plus a little).`,
    3,
  );
  await expectClosed(observer, before, "After stop() on a quiet stream");

  let release = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let inHand = "";
  const busy = await setup.start(async (task) => {
    inHand = task.id;
    await gate;
  });
  const id = await setup.addTask();
  check(await until(() => inHand === id, 5000), "The worker never started on a new entry.", 2);
  let stopped = false;
  let over = false;
  // The timers stop() starts are made to fire while the task is in hand: a stop() raced against
  // a deadline of any length (then returning as if stopped) shows at once, with no wait for it.
  const stopper = scope("stopper");
  const timers = scopeTimers(stopper, { createdIn: ctx.target });
  const stopping = stopper
    .run(() => call("worker.stop() in the middle of a task", () => busy.stop(), 10_000))
    .then(() => {
      stopped = true;
    })
    .finally(() => {
      over = true;
    });
  stopping.catch(() => {});
  let fired: number[] = [];
  let waiting = false;
  try {
    await sleep(2 * blockMs);
    waiting = !over;
    fired = await fireUntilQuiet(timers, () => over);
  } finally {
    timers.stop();
  }
  check(
    !stopped,
    fired.length > 0
      ? `stop() returned while handle() was still working on a task: the check made ${timersFired(fired)} that stop() had started fire at once (some task always takes longer than any deadline you pick), and stop() then returned as if the worker had stopped. The task is neither finished nor acknowledged, and a process that exits now leaves it half done. Let stop() await the loop; if you want a deadline, let it reject (say the task is still in hand), never resolve.`
      : "stop() returned while handle() was still working on a task. It should let the task in hand finish (and be acknowledged) before it returns.",
    3,
  );
  // A deadline that rejects says the task is still in hand: loud, and not "stopped". What
  // stop() owes after it is then the loop's to do: finish the task, acknowledge it, close.
  const rejectedOnDeadline = fired.length > 0 && waiting && over && !stopped;
  // Finishing the task in hand includes its XACK: a stop() that returns with the XACK still on
  // its way (sent without await) lets the process exit before Redis has it.
  const acked = watchSentAfterStop(command("XACK", id), () => stopped);
  release();
  if (rejectedOnDeadline) {
    await until(async () => (await pendingCount(observer, setup.stream, setup.group)) === 0, 3000);
  } else {
    await stopping;
  }
  const ackedAfterStop = await acked();
  check(
    !ackedAfterStop,
    `stop() returned before the XACK of the task in hand (${id}) had reached Redis: the XACK was sent without being awaited (a .catch(() => {}) on it included). A process that exits once stop() returns (a deploy's shutdown) loses that XACK, and the document is handled a second time by whoever takes it over. Await the XACK as part of the task, so that stop(), which awaits the loop, returns only once the task is acknowledged.`,
    3,
  );
  check(
    (await pendingCount(observer, setup.stream, setup.group)) === 0,
    "stop() was called in the middle of a task that then succeeded, but the entry is still pending: finish the task in hand, acknowledge it, then stop.",
    3,
  );
  await expectClosed(observer, before, "After stop() in the middle of a task");
}

/** Longest BLOCK a worker started without blockMs may choose: it is also how often it looks for other work. */
const DEFAULT_BLOCK_LIMIT_MS = 10_000;

/**
 * Starts a worker without blockMs and reads the BLOCK of its first blocking XREADGROUP on
 * `stream`: BLOCK 0 waits forever, so on a quiet stream stop() never returns and nothing else
 * (stale entries, due retries) is looked for. `wake` adds an entry so the worker can stop.
 */
export async function expectBoundedDefaultBlock(setup: {
  stream: string;
  start(): Promise<Worker>;
  wake(): Promise<unknown>;
  hint: number;
  /**
   * The shortest default BLOCK accepted (1 ms unless given): an idle worker looks for work
   * again after each read, so a BLOCK of a millisecond asks Redis hundreds of times a second.
   */
  atLeastMs?: number;
}): Promise<void> {
  const from = sent().at(-1)?.seq ?? 0;
  const least = setup.atLeastMs ?? 1;
  const blocks = () =>
    sent((c) => c.seq > from && c.name === "XREADGROUP" && c.args.includes(setup.stream)).flatMap(
      (c) => {
        const at = c.args.findIndex((a) => a.toUpperCase() === "BLOCK");
        return at < 0 ? [] : [Number(c.args[at + 1])];
      },
    );
  const worker = await setup.start().catch((error: unknown) => {
    failIfNotWritten(error);
    throw error;
  });
  try {
    await until(() => blocks().length > 0, 3000);
    const [ms] = blocks();
    check(
      ms !== undefined && ms > 0 && ms >= least && ms <= DEFAULT_BLOCK_LIMIT_MS,
      ms === undefined
        ? `Started without blockMs on a quiet stream, your worker sent no XREADGROUP ... BLOCK within 3 s. blockMs is optional: give it a default (a second, say: blockMs = 1000).`
        : `Started without blockMs (it is optional), your worker waited for new entries with BLOCK ${ms}${ms === 0 ? ", which waits forever: on a quiet stream stop() never returns, and nothing else is looked for until an entry arrives" : ms < least ? ` ms: an idle worker looks for work again after every read, so it would ask Redis hundreds of times a second for nothing (milliseconds, not seconds)` : ` ms: the read is also how often your worker looks for other work, and ${ms} ms is more than ${DEFAULT_BLOCK_LIMIT_MS / 1000} s`}. Give blockMs a default of a second or so (blockMs = 1000).`,
      setup.hint,
    );
  } finally {
    await setup.wake();
    await stopQuietly(worker);
  }
}

/**
 * stop() while the task `held` is in hand (handle() holds it until stop() was called) and an
 * entry nobody has read yet, `waiting`, is next: after stop() returns, `waiting` must have been
 * handled or still be unread. A loop that checks its stop flag only at its top reads it after
 * stop() was called and leaves it pending under a stopped consumer.
 */
export async function expectNoReadAfterStop(setup: {
  observer: Redis;
  stream: string;
  group: string;
  start(handle: (task: { id: string }) => Promise<void>): Promise<Worker>;
  held: string;
  waiting: { id: string; docId: string };
  /** The failure when `held` never reached handle(). */
  notReached: string;
  /** What the worker was doing when stop() came, e.g. "retried doc-retry". */
  doing: string;
  /** When the left entry is looked at again, and what to do. */
  advice: string;
}): Promise<void> {
  const { observer, held, waiting } = setup;
  const handled: string[] = [];
  const { promise: gate, release } = heldUntilReleased();
  let worker: Worker | undefined;
  try {
    worker = await setup.start(async (task) => {
      handled.push(task.id);
      if (task.id === held) await gate;
    });
    check(await until(() => handled.includes(held), 3000), setup.notReached, 2);
    const stopping = worker;
    worker = undefined;
    await stopThenRelease(stopping, release);
  } finally {
    release();
    await stopQuietly(worker);
  }
  const [left] = await observer.xPendingRange(setup.stream, setup.group, waiting.id, waiting.id, 1);
  check(
    handled.includes(waiting.id) || left === undefined,
    `stop() was called while your worker ${setup.doing}; after stop() returned, ${waiting.docId}, a new entry nobody had read before, was pending for ${left?.consumer} without ever reaching handle(): the worker read it (XREADGROUP ... >) after stop() was called, and left it. ${setup.advice}`,
    2,
  );
}

/** Calls stop() while handle() still holds a task, then lets that task finish. */
export async function stopThenRelease(worker: Worker, release: () => void): Promise<void> {
  const stopped = worker.stop();
  stopped.catch(() => {});
  release();
  await call("worker.stop()", () => stopped, 5000);
}

/** A promise that handle() awaits to hold a task in hand, and the function that lets it go. */
export function heldUntilReleased(): { promise: Promise<void>; release(): void } {
  let release = () => {};
  const promise = new Promise<void>((resolve) => {
    release = resolve;
  });
  return { promise, release };
}

/**
 * stop() of a worker whose loop ended on an error must report it. The check removes the group
 * (XGROUP DESTROY) just before the worker's blocking XREADGROUP reaches Redis, which answers
 * NOGROUP. A worker whose loop ends there (its reader connection closes) is dead, and stop() is
 * the only place its caller learns why: it must reject. A worker that catches the error and goes
 * on may resolve. Going on is judged once stop() has returned, not at one moment before: a worker
 * that closes its reader and opens a new one has, for a while, no reader open and has sent
 * nothing yet, and stop() called then ends it cleanly once the new one is connected. So a worker
 * fails only when its readers had all closed before stop() was called and, by the time stop()
 * resolved, it had sent nothing after the refused read (a closing QUIT aside) and opened no new
 * connection. Lessons 09 and 10 share it.
 */
export async function expectStopReportsEndedLoop(setup: {
  observer: Redis;
  stream: string;
  group: string;
  consumer: string;
  /** Starts the worker inside `within` (so its reader connection is in that scope). */
  start: () => Promise<Worker>;
  within: { name: string; run<T>(fn: () => T): T };
  hint?: number;
}): Promise<void> {
  const { observer, stream, group, consumer, within } = setup;
  let readAt = 0;
  let known = new Set<string>();
  const blockingRead = (c: SentCommand) =>
    c.name === "XREADGROUP" &&
    c.args.includes(consumer) &&
    c.args.some((a) => a.toUpperCase() === "BLOCK");
  const destroy = beforeSent(blockingRead, async (c) => {
    readAt = c.seq;
    known = allLearnerAddrs();
    await observer.xGroupDestroy(stream, group);
  });
  const before = new Set((await learnerConnections(observer)).map((c) => c.addr));
  let worker: Worker | undefined;
  try {
    worker = await within.run(setup.start);
    check(
      await until(() => destroy.hasFired(), 3000),
      `Worker ${consumer} sent no blocking XREADGROUP ... BLOCK within 3 s on a quiet stream: wait for new entries with BLOCK blockMs once nothing else is to be done.`,
      setup.hint,
    );
    const readers = () =>
      new Set(sent((c) => c.scope === within.name && blockingRead(c)).map((c) => c.conn));
    const ended = () => ![...readers()].some(connectionOpen);
    const wentOn = () =>
      [...allLearnerAddrs()].some((addr) => !known.has(addr)) ||
      sent(
        (c) =>
          c.seq > readAt &&
          c.name !== "QUIT" &&
          (c.scope === within.name || c.args.includes(stream)),
      ).length > 0;
    // Ended (the reader closed) or went on (another command): whichever shows first.
    await until(() => ended() || wentOn(), 3000);
    const endedBeforeStop = ended();
    const stopping = worker;
    worker = undefined;
    const outcome = await call("worker.stop()", () => stopping.stop(), 5000).then(
      () => "resolved",
      (error: Error) => (/did not return|Still waiting/.test(error.message) ? "hung" : "rejected"),
    );
    check(
      outcome !== "hung",
      "worker.stop() did not return within 5 s after its group was removed.",
      setup.hint,
    );
    check(
      !(endedBeforeStop && !wentOn()) || outcome === "rejected",
      `The check removed the group (XGROUP DESTROY) under your worker ${consumer}'s blocking read; Redis answered NOGROUP, your worker's loop ended there (its reader connection closed), and stop() resolved as if all was well: nobody learns that the worker died, nor why. Let stop() await the loop and pass its error on (no try/catch around it, no .catch() that drops it).`,
      setup.hint,
    );
    // However the loop ended, stop() leaves nothing open: a reader closed only when the loop
    // ends normally stays open after NOGROUP ended it.
    await expectClosed(
      observer,
      before,
      `The check removed the group (XGROUP DESTROY) under your worker ${consumer}'s blocking read, Redis answered NOGROUP, and after stop() ${outcome === "rejected" ? "rejected with that error" : "returned"}`,
      "A loop that ends on an error must close its reader too: close it in a finally around the loop (try { ... } finally { await reader.close() }), not only after the loop's last round.",
      setup.hint,
    );
  } finally {
    destroy.cancel();
    await stopQuietly(worker);
  }
}
