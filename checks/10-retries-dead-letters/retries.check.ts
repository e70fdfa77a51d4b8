import { test } from "vitest";
import {
  call,
  check,
  checkClient,
  fail,
  key,
  learnerClient,
  loadExercise,
  type Redis,
  stopQuietly,
  until,
} from "../kit.ts";
import { pendingCount } from "../streams-support.ts";

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
  claimDueRetries(client: Redis, options: RetryOptions): Promise<Task[]>;
  deadLetter(client: Redis, options: RetryOptions, task: Task, reason: string): Promise<void>;
  startWorker(client: Redis, options: RetryOptions): Worker;
}

const exercise = await loadExercise<Exercise>(
  "backoffMs",
  "claimDueRetries",
  "deadLetter",
  "startWorker",
);

const GROUP = "ocr";
const MAX_DELIVERIES = 4;
const BASE_MS = 200;
const CORRUPT = "unreadable PDF: page 3 is corrupt";

async function setUp(observer: Redis, name: string) {
  const stream = key(name);
  await observer.xGroupCreate(stream, GROUP, "0", { MKSTREAM: true });
  return { stream, deadLetterStream: key(`${name}:dead`) };
}

async function start(client: Redis, options: RetryOptions): Promise<Worker> {
  const worker = await call("startWorker()", () => exercise.startWorker(client, options));
  check(
    worker && typeof worker.stop === "function",
    "startWorker() must return an object with a stop() method.",
  );
  return worker;
}

test("the backoff doubles from the base and is capped at 60 s", async () => {
  const waits = await call("backoffMs()", () =>
    [1, 2, 3, 4, 30].map((deliveries) => exercise.backoffMs(deliveries, 200)),
  );
  check(
    waits[0] === 200 && waits[1] === 400 && waits[2] === 800 && waits[3] === 1600,
    `After deliveries 1, 2, 3, 4 with a base of 200 ms, the waits should be 200, 400, 800, 1600 ms; yours are ${waits.slice(0, 4).join(", ")}.`,
    2,
  );
  check(
    waits[4] === 60_000,
    `Waits stop growing at 60000 ms; after 30 deliveries yours is ${waits[4]} ms.`,
    2,
  );
});

test("one poison document among 20: retried with backoff, then dead-lettered", async () => {
  const observer = await checkClient();
  const { stream, deadLetterStream } = await setUp(observer, "docs:ocr");
  // The poison document is first in line, so a worker that waits for it holds up all others.
  const ids = new Map<string, string>();
  for (let n = 1; n <= 20; n++) {
    const docId = `doc-${String(n).padStart(2, "0")}`;
    ids.set(docId, await observer.xAdd(stream, "*", { docId }));
  }
  const poisonId = ids.get("doc-01") ?? "";

  const client = await learnerClient();
  const log: string[] = [];
  const attempts: { at: number; deliveries: number }[] = [];
  const finished: string[] = [];
  let worker: Worker | undefined;
  try {
    worker = await start(client, {
      stream,
      group: GROUP,
      consumer: "ocr-1",
      deadLetterStream,
      maxDeliveries: MAX_DELIVERIES,
      retryBaseMs: BASE_MS,
      blockMs: 50,
      async handle(task) {
        const docId = task.fields.docId ?? "";
        log.push(docId);
        if (docId === "doc-01") {
          attempts.push({ at: Date.now(), deliveries: task.deliveries });
          throw new Error(CORRUPT);
        }
        finished.push(docId);
      },
    });
    const deadLettered = async () => (await observer.xLen(deadLetterStream)) > 0;
    await until(async () => (await deadLettered()) || attempts.length > MAX_DELIVERIES, 10_000);
    if (!(await deadLettered())) {
      if (attempts.length > MAX_DELIVERIES) {
        fail(
          `doc-01 failed ${attempts.length} times and is still not in the dead-letter stream: it would be retried forever. When delivery number maxDeliveries (${MAX_DELIVERIES}) fails, move it to the dead-letter stream.`,
          1,
        );
      }
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

    const dead = (await observer.xRange(deadLetterStream, "-", "+")) ?? [];
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
      entry.docId === "doc-01",
      `Keep the document's own fields in the dead-letter entry (docId: "doc-01"); yours has ${JSON.stringify(entry)}.`,
      2,
    );

    const missing = healthy.filter((docId) => !finished.includes(docId));
    check(missing.length === 0, `${missing.join(", ")} never finished.`, 2);
    const lastHealthy = Math.max(...healthy.map((docId) => log.indexOf(docId)));
    const lastPoison = log.lastIndexOf("doc-01");
    check(
      lastHealthy < lastPoison,
      `The healthy documents were held up: ${log.slice(0, lastHealthy + 1).filter((d) => d === "doc-01").length} attempts at doc-01 came before the last of them finished. Do not wait for a retry in the loop: leave the failed entry pending and carry on with the others; it comes back when its backoff is over.`,
      1,
    );

    for (let i = 1; i < attempts.length; i++) {
      const gap = (attempts[i]?.at ?? 0) - (attempts[i - 1]?.at ?? 0);
      const wait = BASE_MS * 2 ** (i - 1);
      check(
        gap >= wait * 0.75,
        `Attempt ${i + 1} at doc-01 came ${gap} ms after attempt ${i}; after delivery ${i} the wait is backoffMs(${i}, ${BASE_MS}) = ${wait} ms. Only retry entries idle for at least backoffMs(their delivery count).`,
        2,
      );
    }
    check(
      attempts.every((a, i) => a.deliveries === i + 1),
      `handle() should see the delivery count going 1, 2, 3, 4; it saw ${attempts.map((a) => a.deliveries).join(", ")}.`,
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
  const settled = await until(
    async () => (await pendingCount(observer, stream, GROUP)) === 0,
    1000,
  );
  check(
    settled,
    `doc-01 is still pending after it was dead-lettered (XPENDING counts ${await pendingCount(observer, stream, GROUP)}). Acknowledge the entry here when you move it to the dead-letter stream (in the same MULTI), or it is retried again.`,
    2,
  );
});

test("a document its workers kept crashing on goes straight to the dead-letter stream", async () => {
  const observer = await checkClient();
  const { stream, deadLetterStream } = await setUp(observer, "docs:crashing");
  const id = await observer.xAdd(stream, "*", { docId: "doc-oom" });
  // As if four workers had each been killed while processing it: four deliveries, no XACK.
  await observer.xReadGroup(GROUP, "ocr-9", { key: stream, id: ">" });
  await observer.xClaim(stream, GROUP, "ocr-9", 0, id, {
    RETRYCOUNT: MAX_DELIVERIES,
    IDLE: 60_000,
  });

  const client = await learnerClient();
  const handled: Task[] = [];
  let worker: Worker | undefined;
  try {
    worker = await start(client, {
      stream,
      group: GROUP,
      consumer: "ocr-1",
      deadLetterStream,
      maxDeliveries: MAX_DELIVERIES,
      retryBaseMs: BASE_MS,
      blockMs: 50,
      async handle(task) {
        handled.push(task);
      },
    });
    await until(
      async () => handled.length > 0 || (await observer.xLen(deadLetterStream)) > 0,
      5000,
    );
    check(
      handled.length === 0,
      `doc-oom had already been delivered ${MAX_DELIVERIES} times (maxDeliveries) without an XACK, yet handle() got it again as delivery ${handled[0]?.deliveries}. A task claimed with more deliveries than maxDeliveries goes to the dead-letter stream without another try: its workers keep dying on it.`,
      2,
    );
    const dead = (await observer.xRange(deadLetterStream, "-", "+")) ?? [];
    check(
      dead.length === 1 && dead[0]?.message.originalId === id && Boolean(dead[0]?.message.reason),
      `doc-oom should be in the dead-letter stream with originalId "${id}" and a reason; the stream holds ${JSON.stringify(dead.map((d) => d.message))}.`,
      2,
    );
  } finally {
    await stopQuietly(worker);
  }
  check(
    (await pendingCount(observer, stream, GROUP)) === 0,
    "doc-oom is still pending after being dead-lettered: XACK it in the same MULTI.",
    2,
  );
});
