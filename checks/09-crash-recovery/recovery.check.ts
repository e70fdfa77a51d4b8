import { fileURLToPath } from "node:url";
import { test } from "vitest";
import {
  call,
  check,
  checkClient,
  ctx,
  fail,
  key,
  LEARNER_CLIENT,
  learnerClient,
  loadExercise,
  type Redis,
  sleep,
  stopQuietly,
  until,
} from "../kit.ts";
import { pendingCount } from "../streams-support.ts";
import { spawnWorker } from "../worker-process.ts";

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

interface Exercise {
  readOwnPending(client: Redis, stream: string, group: string, consumer: string): Promise<Task[]>;
  claimStale(
    client: Redis,
    stream: string,
    group: string,
    consumer: string,
    minIdleMs: number,
  ): Promise<Task[]>;
  removeDeadConsumers(
    client: Redis,
    stream: string,
    group: string,
    idleMs: number,
  ): Promise<string[]>;
  startWorker(client: Redis, options: WorkerOptions): Worker;
}

const exercise = await loadExercise<Exercise>(
  "readOwnPending",
  "claimStale",
  "removeDeadConsumers",
  "startWorker",
);

const RUNNER = fileURLToPath(new URL("./worker-runner.ts", import.meta.url));
const GROUP = "ocr";

interface Doc {
  id: string;
  docId: string;
}

async function setUp(observer: Redis, name: string): Promise<string> {
  const stream = key(name);
  await observer.xGroupCreate(stream, GROUP, "0", { MKSTREAM: true });
  return stream;
}

async function addDocs(observer: Redis, stream: string, from: number, count: number) {
  const docs: Doc[] = [];
  for (let n = from; n < from + count; n++) {
    const docId = `doc-${n}`;
    docs.push({ id: await observer.xAdd(stream, "*", { docId }), docId });
  }
  return docs;
}

/** What a worker that crashed right after reading leaves behind: entries pending under its name. */
async function readAndDie(observer: Redis, stream: string, consumer: string, count: number) {
  await observer.xReadGroup(GROUP, consumer, { key: stream, id: ">" }, { COUNT: count });
}

function names(docs: Doc[]): string {
  return docs.map((d) => d.docId).join(", ");
}

async function start(client: Redis, options: WorkerOptions): Promise<Worker> {
  const worker = await call(`startWorker() for ${options.consumer}`, () =>
    exercise.startWorker(client, options),
  );
  check(
    worker && typeof worker.stop === "function",
    "startWorker() must return an object with a stop() method.",
  );
  return worker;
}

test("a worker killed mid-task: another worker finishes every task", {
  timeout: 60_000,
}, async () => {
  const observer = await checkClient();
  const stream = await setUp(observer, "docs:ocr");
  const docs = await addDocs(observer, stream, 1, 6);

  const first = spawnWorker(RUNNER, {
    WORKER_STREAM: stream,
    WORKER_GROUP: GROUP,
    WORKER_CONSUMER: "ocr-1",
    WORKER_CLAIM_IDLE_MS: "60000",
    WORKER_TASK_MS: "60000",
    WORKER_CLIENT_NAME: `${LEARNER_CLIENT}:child`,
  });
  const started = await call(
    "startWorker() in worker process ocr-1",
    () => first.next("handling", 25_000),
    30_000,
  );
  const held = await observer.xPendingRange(stream, GROUP, "-", "+", 100, { consumer: "ocr-1" });
  check(
    held.some((entry) => entry.id === started.id),
    `Worker ocr-1 is working on ${String(started.docId)}, but the entry is not pending under its name: it was acknowledged before the work was done, so a crash now loses the document. XACK after handle() succeeds.`,
    2,
  );
  await first.kill();
  const orphaned = docs.filter((d) => held.some((entry) => entry.id === d.id));
  // Uploads keep coming while the dead worker's entries wait to be taken over.
  docs.push(...(await addDocs(observer, stream, 7, 2)));

  const client = await learnerClient();
  const seen: { id: string; docId: string; deliveries?: number; owner?: string }[] = [];
  let worker: Worker | undefined;
  try {
    worker = await start(client, {
      stream,
      group: GROUP,
      consumer: "ocr-2",
      claimIdleMs: 300,
      blockMs: 100,
      async handle(task) {
        const [entry] = await observer.xPendingRange(stream, GROUP, task.id, task.id, 1);
        seen.push({
          id: task.id,
          docId: task.fields.docId ?? "",
          deliveries: entry?.deliveriesCounter,
          owner: entry?.consumer,
        });
      },
    });
    const finished = (d: Doc) => seen.some((s) => s.id === d.id);
    if (!(await until(() => docs.every(finished), 8000))) {
      const missing = docs.filter((d) => !finished(d));
      const lost = missing.filter((d) => orphaned.includes(d));
      if (lost.length > 0) {
        fail(
          `Worker ocr-1 was killed holding ${names(orphaned)}; ${names(lost)} never finished. They stay pending under ocr-1 until a live worker takes them over: ocr-2 should claim entries idle for longer than claimIdleMs (XAUTOCLAIM) and handle them.`,
          2,
        );
      }
      fail(
        `${names(missing)} never finished: ocr-2 should also read new entries (XREADGROUP ... >) after taking over the stale ones.`,
        2,
      );
    }
    for (const doc of orphaned) {
      const recovered = seen.find((s) => s.id === doc.id);
      check(
        recovered?.owner === "ocr-2" && recovered.deliveries === 2,
        `While ocr-2 worked on ${doc.docId}, XPENDING showed it owned by ${recovered?.owner} with delivery count ${recovered?.deliveries}; a takeover makes ocr-2 the owner and counts a second delivery (2). Claim it with XAUTOCLAIM (not JUSTID) before handling it.`,
        2,
      );
    }
    const twice = docs.filter((d) => seen.filter((s) => s.id === d.id).length > 1);
    check(
      twice.length === 0,
      `ocr-2 handled ${names(twice)} more than once. Acknowledge each task after handling it, and claim only entries idle for longer than claimIdleMs.`,
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
  const left = await pendingCount(observer, stream, GROUP);
  check(left === 0, `After every task finished, ${left} entries are still pending: XACK each one.`);
});

test("a restarted worker first finishes what it was given before", async () => {
  const observer = await checkClient();
  const stream = await setUp(observer, "docs:restart");
  const given = await addDocs(observer, stream, 1, 3);
  await readAndDie(observer, stream, "ocr-1", 3);
  const fresh = await addDocs(observer, stream, 4, 2);

  const client = await learnerClient();
  const order: string[] = [];
  let worker: Worker | undefined;
  try {
    // claimIdleMs is far away, so only the worker's own pending read can find the old entries.
    worker = await start(client, {
      stream,
      group: GROUP,
      consumer: "ocr-1",
      claimIdleMs: 60_000,
      blockMs: 100,
      async handle(task) {
        order.push(task.id);
      },
    });
    const all = [...given, ...fresh];
    await until(() => all.every((d) => order.includes(d.id)), 3000);
    const forgotten = given.filter((d) => !order.includes(d.id));
    check(
      forgotten.length === 0,
      `Before its restart, ocr-1 had been given ${names(given)} and never acknowledged them; after the restart it did not re-read ${names(forgotten)}. On start, a worker should first re-read its own pending entries (XREADGROUP ... STREAMS <stream> 0) and finish them.`,
      1,
    );
    check(
      fresh.every((d) => order.includes(d.id)),
      `After its own pending entries, the worker should read new ones (${names(fresh)}) with XREADGROUP ... >.`,
      2,
    );
    const firstThree = order.slice(0, given.length);
    check(
      given.every((d) => firstThree.includes(d.id)),
      "The restarted worker handled new entries before the ones it already held. Re-read your own pending entries (id 0) first, then new ones (id >).",
      1,
    );
  } finally {
    await stopQuietly(worker);
  }
});

test("entries deleted while pending do not stop the worker", async () => {
  const observer = await checkClient();
  const stream = await setUp(observer, "docs:deleted");
  const mine = await addDocs(observer, stream, 1, 3);
  await readAndDie(observer, stream, "ocr-1", 3);
  const theirs = await addDocs(observer, stream, 4, 3);
  await readAndDie(observer, stream, "ocr-9", 3);
  const deleted = [mine[1], theirs[1]].filter((d): d is Doc => d !== undefined);
  for (const doc of deleted) await observer.xDel(stream, doc.id);
  const survivors = [...mine, ...theirs].filter((d) => !deleted.includes(d));
  await sleep(250);

  const client = await learnerClient();
  const handled: Task[] = [];
  let worker: Worker | undefined;
  try {
    worker = await start(client, {
      stream,
      group: GROUP,
      consumer: "ocr-1",
      claimIdleMs: 200,
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
    check(
      missing.length === 0,
      `${names(deleted)} were deleted (XDEL) while pending, and afterwards ${names(missing)} never got handled: did the worker crash on the deleted entry? XREADGROUP ... 0 returns a deleted entry as [id, null] (node-redis 6.3's xReadGroup() even throws on it, so read with sendCommand), and XAUTOCLAIM leaves it out. Skip it and XACK it.`,
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
  // Redis 6.2's XAUTOCLAIM keeps a deleted entry in the pending list; 7.0 removes it itself.
  const [major = 0] = ctx.redisVersion.split(".").map(Number);
  const left = await observer.xPendingRange(stream, GROUP, "-", "+", 100);
  const stuck = major >= 7 ? left : left.filter((p) => p.consumer === "ocr-1");
  check(
    stuck.length === 0,
    `${stuck.map((p) => p.id).join(", ")} is still pending. An entry deleted while pending has nothing left to do: XACK it when XREADGROUP ... 0 returns it with null fields.`,
    2,
  );
});

test("claiming leaves live work alone", async () => {
  const observer = await checkClient();
  const stream = await setUp(observer, "docs:live");
  const [slow] = await addDocs(observer, stream, 1, 1);
  if (!slow) throw new Error("no entry added");

  const client = await learnerClient();
  let release = () => {};
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let busy = false;
  let busySince = 0;
  let stolenAt = 0;
  const takenBySecond: string[] = [];
  const workers: Worker[] = [];
  try {
    workers.push(
      await start(client, {
        stream,
        group: GROUP,
        consumer: "ocr-1",
        claimIdleMs: 10_000,
        blockMs: 100,
        async handle(task) {
          if (task.id !== slow.id) return;
          busy = true;
          busySince = Date.now();
          await gate;
        },
      }),
    );
    check(
      await until(() => busy, 5000),
      `Worker ocr-1 never started on ${slow.docId}: it should read new entries with XREADGROUP ... >.`,
      2,
    );
    workers.push(
      await start(client, {
        stream,
        group: GROUP,
        consumer: "ocr-2",
        claimIdleMs: 10_000,
        blockMs: 100,
        async handle(task) {
          if (task.id === slow.id) stolenAt = Date.now();
          takenBySecond.push(task.id);
        },
      }),
    );
    const others = await addDocs(observer, stream, 2, 3);
    await until(() => others.every((d) => takenBySecond.includes(d.id)), 5000);
    // A few more rounds of ocr-2's loop, each of which looks for stale entries.
    await sleep(500);
    const [entry] = await observer.xPendingRange(stream, GROUP, slow.id, slow.id, 1);
    check(
      !takenBySecond.includes(slow.id) && entry?.consumer !== "ocr-2",
      `ocr-2 took over ${slow.docId} while ocr-1 was still working on it, ${stolenAt - busySince} ms into the task (claimIdleMs was 10000). Pass claimIdleMs as XAUTOCLAIM's min-idle-time: only entries idle for longer than that belong to dead workers.`,
      2,
    );
    check(
      entry?.consumer === "ocr-1",
      `ocr-1 is still working on ${slow.docId}, but the entry is no longer pending: it was acknowledged before the work was done, so a crash now would lose it. XACK after handle() succeeds.`,
      2,
    );
  } finally {
    release();
    for (const worker of workers) await stopQuietly(worker);
  }
});

test("removing dead consumers keeps the ones that still hold work", async () => {
  const observer = await checkClient();
  const stream = await setUp(observer, "docs:consumers");
  await addDocs(observer, stream, 1, 1);
  await observer.xGroupCreateConsumer(stream, GROUP, "ocr-dead");
  await readAndDie(observer, stream, "ocr-busy", 1);
  await sleep(600);
  await observer.xGroupCreateConsumer(stream, GROUP, "ocr-live");

  const client = await learnerClient();
  const removed = await call("removeDeadConsumers()", () =>
    exercise.removeDeadConsumers(client, stream, GROUP, 500),
  );
  const left = (await observer.xInfoConsumers(stream, GROUP)).map((c) => String(c.name));
  check(
    left.includes("ocr-busy"),
    "ocr-busy was removed although it still owned 1 pending entry: XGROUP DELCONSUMER drops a consumer's pending entries with it, and that document is lost. Remove only consumers with pending 0.",
    2,
  );
  check(
    left.includes("ocr-live"),
    "ocr-live was removed although it was active a moment ago. Remove only consumers idle for longer than idleMs.",
    2,
  );
  check(
    !left.includes("ocr-dead"),
    "ocr-dead holds nothing and has been idle past the threshold, but is still in the group: remove it with XGROUP DELCONSUMER.",
    2,
  );
  check(
    Array.isArray(removed) && removed.length === 1 && removed[0] === "ocr-dead",
    `removeDeadConsumers() should return the names it removed (["ocr-dead"]); it returned ${JSON.stringify(removed)}.`,
  );
});
