import { test } from "vitest";
import {
  CheckFailure,
  call,
  check,
  checkClient,
  fail,
  key,
  learnerClient,
  learnerConnections,
  loadExercise,
  type Redis,
  sleep,
} from "../kit.ts";
import { isStreamId, pendingCount, waitForBlocked } from "../streams-support.ts";

interface Task {
  id: string;
  docId: string;
}

interface WorkerOptions {
  stream: string;
  group: string;
  consumer: string;
  handle(task: Task): void | Promise<void>;
  count: number;
  blockMs: number;
}

interface Worker {
  stop(): Promise<void>;
}

interface Exercise {
  enqueue(client: Redis, stream: string, docId: string): Promise<string>;
  ensureGroup(client: Redis, stream: string, group: string): Promise<void>;
  startWorker(client: Redis, options: WorkerOptions): Promise<Worker>;
}

const exercise = await loadExercise<Exercise>("enqueue", "ensureGroup", "startWorker");

const BLOCK_MS = 500;
/** How long stop() may take: one BLOCK, the task in hand, and plenty of slack for a busy machine. */
const STOP_MS = BLOCK_MS + 4000;

interface GroupInfo {
  name: string;
  consumers: number;
  pending: number;
  "last-delivered-id": string;
}

async function groupInfo(observer: Redis, stream: string, group: string) {
  const groups = (await observer.xInfoGroups(stream)) as unknown as GroupInfo[];
  return groups.find((g) => String(g.name) === group);
}

/** Runs the learner's ensureGroup(), explaining the two errors Redis gives for the usual slips. */
async function ensure(client: Redis, stream: string, group: string, what: string): Promise<void> {
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

test("ensureGroup() creates the stream and the group, and is safe to call again", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = key("tasks:fresh");
  await ensure(client, stream, "ocr", "ensureGroup() on a stream that does not exist yet");
  await ensure(client, stream, "ocr", "ensureGroup() called a second time");
  check(
    (await observer.exists(stream)) === 1,
    "After ensureGroup() the stream should exist: use MKSTREAM.",
    2,
  );
  check(
    (await groupInfo(observer, stream, "ocr")) !== undefined,
    `After ensureGroup() the stream has no group named "ocr": create it with XGROUP CREATE.`,
    2,
  );
});

test("a group created after tasks were queued still hands those tasks out", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = key("tasks:backlog");
  const queued: string[] = [];
  for (let n = 0; n < 5; n++) queued.push(await observer.xAdd(stream, "*", { docId: `doc-${n}` }));
  await ensure(client, stream, "ocr", "ensureGroup()");

  const read = async () => {
    const reply = await observer.xReadGroup(
      "ocr",
      "probe",
      { key: stream, id: ">" },
      { COUNT: 10 },
    );
    return (reply ?? []).flatMap((s) => s.messages as Task[]).length;
  };
  const first = await read();
  if (first === 0) {
    const info = await groupInfo(observer, stream, "ocr");
    const atEnd = info?.["last-delivered-id"] === queued.at(-1);
    fail(
      `The group was created after 5 tasks were queued, and it hands out none of them${atEnd ? ': it was created at the end of the stream (ID "$")' : ""}. "$" means "only entries added from now on"; a stage that starts after uploads began must still process them. Create the group at "0".`,
      1,
    );
  }
  check(
    first === 5,
    `The new group handed out ${first} of the 5 queued tasks instead of all 5.`,
    1,
  );

  await ensure(client, stream, "ocr", "ensureGroup() on an existing group");
  const again = await read();
  check(
    again === 0,
    `Calling ensureGroup() on an existing group handed out ${again} tasks a second time: it moved the group back. When the group exists, leave it as it is.`,
    2,
  );
});

/** Waits until `target` tasks were handled, or progress stops for `idleMs`, or `maxMs` passes. */
async function untilDoneOrStuck(
  progress: () => number,
  target: number,
  idleMs: number,
  maxMs: number,
): Promise<void> {
  const deadline = Date.now() + maxMs;
  let last = progress();
  let lastChange = Date.now();
  while (progress() < target && Date.now() < deadline && Date.now() - lastChange < idleMs) {
    await sleep(20);
    if (progress() !== last) {
      last = progress();
      lastChange = Date.now();
    }
  }
}

test("three workers share 30 tasks: each handled once, by one worker, then acknowledged", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = key("tasks:ocr");
  const group = "ocr";
  const connectionsBefore = (await learnerConnections(observer)).length;
  const ids: string[] = [];
  for (let n = 0; n < 30; n++) {
    ids.push(await call("enqueue()", () => exercise.enqueue(client, stream, `doc-${n}`)));
  }
  const bad = ids.find((id) => !isStreamId(id));
  check(
    bad === undefined,
    `enqueue() should return the new entry's ID, like "1718000000000-0"; it returned ${JSON.stringify(bad)}.`,
    2,
  );
  const fields = ((await observer.xRange(stream, "-", "+", { COUNT: 1 })) ?? [])[0]?.message;
  check(
    fields?.docId === "doc-0",
    `A task entry should have the field docId; the first one holds ${JSON.stringify(fields)}.`,
    2,
  );
  await ensure(client, stream, group, "ensureGroup()");

  const names = ["ocr-1", "ocr-2", "ocr-3"];
  const handled: { consumer: string; docId: string }[] = [];
  const workers: Worker[] = [];
  let waiting = 0;
  let stopFailure: string | undefined;
  try {
    for (const consumer of names) {
      const worker = await call(`startWorker("${consumer}")`, () =>
        exercise.startWorker(client, {
          stream,
          group,
          consumer,
          count: 2,
          blockMs: BLOCK_MS,
          handle: async (task) => {
            handled.push({ consumer, docId: task.docId });
            // A (very) fast OCR service: long enough for the three workers to overlap.
            await sleep(30);
          },
        }),
      );
      check(
        worker && typeof worker.stop === "function",
        "startWorker() should resolve to an object with a stop() method.",
        2,
      );
      workers.push(worker);
    }
    await untilDoneOrStuck(() => handled.length, ids.length, 3000, 12_000);
    // With the queue empty, every worker should be waiting in XREADGROUP at the same time.
    if (handled.length > 0) {
      waiting = await waitForBlocked(observer, "xreadgroup", names.length, 3000);
    }
  } finally {
    const results = await Promise.allSettled(
      workers.map((worker, i) => call(`stop() of ${names[i]}`, () => worker.stop(), STOP_MS)),
    );
    const failed = results.find((r) => r.status === "rejected");
    if (failed) stopFailure = String((failed.reason as Error).message);
  }

  if (handled.length === 0) {
    const info = await groupInfo(observer, stream, group);
    const lastDelivered = info?.["last-delivered-id"];
    if (lastDelivered === ids.at(-1)) {
      fail(
        `None of the 30 tasks reached handle(): the group was created at the end of the stream (ID "$"), after the tasks were queued, so it has nothing to hand out. Create it at "0".`,
        1,
      );
    }
    if (lastDelivered === "0-0" && Number(info?.consumers ?? 0) > 0) {
      fail(
        `None of the 30 tasks reached handle(), although your workers did call XREADGROUP. With the ID "0" XREADGROUP returns only the tasks already delivered to that consumer and not yet acknowledged (its history), never new ones. Ask for new tasks with ">".`,
        1,
      );
    }
    fail(
      "None of the 30 tasks reached handle(). A worker should read with XREADGROUP GROUP <group> <consumer> ... STREAMS <stream> > and call handle() for each task.",
      2,
    );
  }

  const byDoc = new Map<string, string[]>();
  for (const { consumer, docId } of handled)
    byDoc.set(docId, [...(byDoc.get(docId) ?? []), consumer]);
  const twice = [...byDoc.entries()].find(([, consumers]) => consumers.length > 1);
  if (twice) {
    fail(
      `${twice[0]} was handled ${twice[1].length} times (by ${twice[1].join(", ")}). In a consumer group each task goes to one worker once: read with ">" and give every worker its own consumer name.`,
      1,
    );
  }
  check(
    waiting >= names.length,
    `With the queue empty, only ${waiting} of your 3 workers waited in XREADGROUP at the same time. On one shared connection a blocked read holds up the others' commands, so the workers take turns instead of working side by side. Each worker needs its own connection: client.duplicate() and connect().`,
    2,
  );
  const missing = ids.length - byDoc.size;
  check(
    missing === 0,
    `${missing} of the 30 tasks never reached handle(). Keep reading with ">" until stop() is called, and hand every task of every reply to handle().`,
    2,
  );
  for (const name of names) {
    const mine = handled.filter((h) => h.consumer === name).length;
    check(
      mine > 0,
      `Worker ${name} handled none of the 30 tasks (${names.map((n) => `${n}: ${handled.filter((h) => h.consumer === n).length}`).join(", ")}). Take at most \`count\` tasks per read (COUNT), so one worker does not grab the whole queue while the others wait.`,
      2,
    );
  }
  if (stopFailure) {
    fail(
      /Still waiting/.test(stopFailure)
        ? `stop() did not return within ${STOP_MS / 1000} s. Use a finite BLOCK (blockMs) and leave the loop after the read returns once stop() was called; BLOCK 0 waits forever.`
        : stopFailure,
      2,
    );
  }
  const pending = await pendingCount(observer, stream, group);
  check(
    pending === 0,
    `All tasks were handled, but ${pending} are still pending in the group (XPENDING). Acknowledge each task with XACK once handle() has finished; otherwise the group assumes the worker died on it, and lesson 09's recovery would run it again.`,
    2,
  );
  const leftOpen = (await learnerConnections(observer)).length - connectionsBefore;
  check(
    leftOpen <= 0,
    `After stop() ${leftOpen} connections opened by your workers are still open. Close each worker's connection when its loop ends.`,
    2,
  );
});
