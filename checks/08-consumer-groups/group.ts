/**
 * What the lesson 08 check needs around the learner's functions: the exercise, starting a
 * worker with a handle() the check controls, and reading the group's state from the server and
 * from what the learner's connections sent.
 */

import type { Task, Worker, WorkerOptions } from "../../lessons/08-consumer-groups/workers.ts";
import {
  CheckFailure,
  type ConnectionInfo,
  call,
  check,
  fail,
  learnerConnections,
  loadExercise,
  type Redis,
  stopQuietly,
  until,
} from "../kit.ts";
import { blockOf, overlong, stuckInRead } from "../streams-support.ts";
import { learnerAddrs, sent } from "../wire.ts";
import { startLearnerWorker } from "../worker-stop.ts";

// The exercise's contract is written once, in the starter.
export type { Task, Worker, WorkerOptions } from "../../lessons/08-consumer-groups/workers.ts";

type Exercise = typeof import("../../lessons/08-consumer-groups/workers.ts");

export const exercise = await loadExercise<Exercise>("enqueue", "ensureGroup", "startWorker");

/** Runs the learner's ensureGroup(), explaining the two errors Redis gives for the usual slips. */
export async function ensure(
  client: Redis,
  stream: string,
  group: string,
  what: string,
): Promise<void> {
  try {
    await call(what, () => exercise.ensureGroup(client, stream, group));
  } catch (error) {
    if (error instanceof CheckFailure && /BUSYGROUP/.test(error.message)) {
      fail(
        `${what} threw "BUSYGROUP Consumer Group name already exists". Every worker calls ensureGroup() at start-up, and all but the first find the group already there: that is success. Catch the error whose message starts with "BUSYGROUP" and let any other error through.`,
        2,
      );
    }
    if (error instanceof CheckFailure && /requires the key to exist/.test(error.message)) {
      fail(
        `${what} failed because the stream does not exist yet. A stage may start before anything was queued: add MKSTREAM so XGROUP CREATE creates an empty stream.`,
        2,
      );
    }
    throw error;
  }
}

/** Starts one of the learner's workers and checks that it can be stopped. */
export async function startWorker(
  client: Redis,
  options: WorkerOptions,
  workers: Worker[] = [],
): Promise<Worker> {
  const mark = sent().at(-1)?.seq ?? 0;
  let handed = false;
  const handle = (task: Task) => {
    handed = true;
    return options.handle(task);
  };
  const reads = () =>
    sent((c) => c.seq > mark && c.name === "XREADGROUP" && c.args.includes(options.consumer))
      .length;
  const given = learnerAddrs();
  const opened = () => [...learnerAddrs()].some((addr) => !given.has(addr));
  const worker = await startLearnerWorker(
    `startWorker("${options.consumer}")`,
    () => exercise.startWorker(client, { ...options, handle }),
    2,
    () => handed || reads() >= 3,
  );
  check(
    worker && typeof worker.stop === "function",
    "startWorker() should resolve to an object with a stop() method.",
    2,
  );
  // No new connection when it resolved, one a moment later: it connects in the background.
  if (!opened()) {
    const late = await until(opened, 500);
    // An earlier call opened its connection in time and this one did not: the two calls differ
    // only by what the first left at module level, such as a client pool that opens another
    // connection when this worker's read finds the first one busy, or none at all when one of
    // its connections is idle (a pool an earlier test left open). Either way the same cause.
    check(
      openedInTime === 0,
      `startWorker("${options.consumer}") opened no connection of its own: ${late ? "a connection opened only a moment after it resolved" : "no connection opened, before it resolved or after"}, though an earlier startWorker() call had opened its connection before resolving. This worker reuses something that call made, kept at module level: a client pool (createClientPool()) shared by all workers opens another connection only when a read finds the ones it has busy, and one worker's stop() that closes the pool stops the others. Give each worker a connection of its own: client.duplicate() and await connect() inside startWorker(), closed when that worker stops.`,
      2,
    );
    check(
      !late,
      `startWorker("${options.consumer}") resolved before the worker's connection was open: it opened a moment later, in the background. A connection that then fails to open (a wrong password, a full server) fails where nobody awaits it, and startWorker() has already said the worker runs. Open the connection and await connect() before startWorker() resolves; only the loop runs in the background.`,
      2,
    );
  } else openedInTime++;
  workers.push(worker);
  return worker;
}

/** How many startWorker() calls in this process had their connection open when they resolved. */
let openedInTime = 0;

/**
 * Stops a worker within `ms`, or fails saying that stop() hung: as soon as it provably hangs,
 * in an XREADGROUP whose BLOCK is far beyond the `blockMs` the worker was given. `wake`, run
 * once stop() was asked, queues a task that ends the worker's blocked read at once, where the
 * test is not about waiting out a quiet read.
 */
export async function stopWithin(
  worker: Worker,
  ms: number,
  name: string,
  blockMs: number,
  wake?: () => Promise<unknown>,
): Promise<void> {
  const mark = sent().at(-1)?.seq ?? 0;
  const started = Date.now();
  let returned = false;
  stopAsked.add(worker);
  const stopping = call(`stop() of ${name}`, () => worker.stop(), ms).finally(() => {
    returned = true;
  });
  await wake?.();
  try {
    const stuck = await Promise.race([
      stopping.then(() => false),
      stuckInRead("XREADGROUP", mark, blockMs, () => returned).then(() => true),
    ]);
    if (!stuck) return;
    stopping.catch(() => {});
  } catch (error) {
    if (!/Still waiting/.test((error as Error).message)) throw error;
  }
  const block = blockOf(sent((c) => c.name === "XREADGROUP").at(-1));
  fail(
    `stop() of ${name} did not return within ${Math.round((Date.now() - started) / 100) / 10} s.${overlong(block, blockMs) ? ` Its XREADGROUP asked for BLOCK ${block}, though blockMs was ${blockMs}${block === 0 ? "" : ": BLOCK takes milliseconds, like blockMs"}.` : ""} Use a finite BLOCK (blockMs) and leave the loop after the read returns once stop() was called; BLOCK 0 waits forever on a quiet stream.`,
    2,
  );
}

/** Workers whose stop() was called: asking again would only wait for the same stop. */
const stopAsked = new WeakSet<Worker>();

/** Stops whatever workers are left after a test that failed early; their failure matters less. */
export async function stopAll(workers: Worker[]): Promise<void> {
  await Promise.all(workers.filter((w) => !stopAsked.has(w)).map((w) => stopQuietly(w)));
}

/** The IDs the learner's connections acknowledged (XACK), in any form: typed, raw or in MULTI. */
export function acknowledged(stream: string): Set<string> {
  const ids = new Set<string>();
  for (const c of sent((c) => c.name === "XACK" && c.args[1] === stream)) {
    for (const id of c.args.slice(3)) ids.add(id);
  }
  return ids;
}

/** The (group, consumer) pairs the learner's XREADGROUPs named for `stream`. */
export function readersOf(stream: string): { group: string; consumer: string }[] {
  const pairs = new Map<string, { group: string; consumer: string }>();
  for (const c of sent((c) => c.name === "XREADGROUP" && c.args.includes(stream))) {
    const at = c.args.findIndex((a) => a.toUpperCase() === "GROUP");
    const group = c.args[at + 1] ?? "";
    const consumer = c.args[at + 2] ?? "";
    pairs.set(`${group}\n${consumer}`, { group, consumer });
  }
  return [...pairs.values()];
}

/** The IDs pending in `group`, with the consumer that holds each. */
export async function pendingIds(
  observer: Redis,
  stream: string,
  group: string,
): Promise<Map<string, string>> {
  const entries = await observer.xPendingRange(stream, group, "-", "+", 1000);
  return new Map(entries.map((e) => [e.id, e.consumer]));
}

/**
 * Remembers the learner's connections open now (found by address, however they were named);
 * `leftOpen()` then lists those opened since that are still open a second later.
 */
export async function connectionsSince(
  observer: Redis,
): Promise<{ leftOpen(): Promise<ConnectionInfo[]> }> {
  const before = new Set((await learnerConnections(observer)).map((c) => c.id));
  const opened = async () => (await learnerConnections(observer)).filter((c) => !before.has(c.id));
  return {
    async leftOpen() {
      await until(async () => (await opened()).length === 0, 1000);
      return opened();
    },
  };
}
