import { test } from "vitest";
import {
  call,
  check,
  checkClient,
  ctx,
  fail,
  failIfNotWritten,
  fresh,
  freshKey,
  learnerClient,
  type Redis,
  sameValue,
  sleep,
  until,
} from "../kit.ts";
import { blockedIn, isStreamId, pendingCount, waitForBlocked } from "../streams-support.ts";
import { dropUnder, hearDropErrors, recordDuplicates } from "../unheard-errors.ts";
import {
  before,
  command,
  dropConnection,
  holdReply,
  nothingInFlight,
  scope,
  scopeTimers,
  sent,
} from "../wire.ts";
import { heldUntilReleased } from "../worker-stop.ts";
import {
  acknowledged,
  connectionsSince,
  ensure,
  exercise,
  pendingIds,
  readersOf,
  startWorker,
  stopAll,
  stopWithin,
  type Task,
  type Worker,
  type WorkerOptions,
} from "./group.ts";

/** Short, so that reads time out often: a worker must stay correct across timeouts. */
const BLOCK_MS = 200;
/** How long stop() may take on a quiet stream: one BLOCK and slack for a busy machine. */
const QUIET_STOP_MS = BLOCK_MS + 1500;
/** How long any other stop() may take before the check gives up on it. */
const STOP_MS = BLOCK_MS + 3000;

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

/**
 * A wait's early way out while workers should be taking queued tasks: true once they read with
 * another group or consumer, or once nothing reached handle() although a worker already read
 * and found nothing (it waits in a blocking XREADGROUP, or read twice), for two BLOCKs on end.
 * A right worker's first read returns tasks at once, and it hands them over before reading again.
 */
function nothingComing(
  observer: Redis,
  stream: string,
  group: string,
  names: string[],
  handled: () => number,
): () => Promise<boolean> {
  let since: number | undefined;
  return async () => {
    const readers = readersOf(stream);
    if (readers.some((r) => r.group !== group || !names.includes(r.consumer))) return true;
    const reads = sent((c) => c.name === "XREADGROUP" && c.args.includes(stream));
    const readTwice = names.some((name) => reads.filter((c) => c.args.includes(name)).length >= 2);
    const empty =
      handled() === 0 && (readTwice || (await blockedIn(observer, "xreadgroup")).length > 0);
    if (!empty) {
      since = undefined;
      return false;
    }
    since ??= Date.now();
    return Date.now() - since >= BLOCK_MS * 2;
  };
}

test("ensureGroup() creates the stream and the group, and three workers may call it at once", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = freshKey("tasks:fresh");
  const group = fresh("ocr");
  // The upload API queues a task just before XGROUP CREATE reaches Redis: a group made at "$"
  // because the stream looked empty a moment ago would skip it.
  const early = before(command("XGROUP"), async () => {
    await observer.xAdd(stream, "*", { docId: "doc-early" });
  });
  await ensure(client, stream, group, "ensureGroup() on a stream that does not exist yet").finally(
    () => early.cancel(),
  );
  await ensure(client, stream, group, "ensureGroup() called a second time");
  check(
    (await observer.exists(stream)) === 1,
    "After ensureGroup() the stream should exist: use MKSTREAM.",
    2,
  );
  check(
    (await groupInfo(observer, stream, group)) !== undefined,
    `After ensureGroup() the stream has no group named "${group}": create it with XGROUP CREATE, with the group name you were given.`,
    2,
  );
  if (early.hasFired()) {
    const reply = await observer.xReadGroup(group, fresh("probe"), { key: stream, id: ">" });
    const messages = (reply ?? []).flatMap((s) => s.messages);
    const handed = messages.length;
    const extra = messages.filter((m) => m.message.docId !== "doc-early");
    check(
      extra.length === 0,
      `On a stream that did not exist, only one task was queued (doc-early), and the new group hands out ${handed} entries: also ${extra.map((m) => `${m.id} ${JSON.stringify(m.message)}`).join(", ")}, which your ensureGroup() wrote. Every entry of a work queue is a task some worker will get. Let XGROUP CREATE ... MKSTREAM create the empty stream.`,
      1,
    );
    check(
      handed === 1,
      `A task was queued just before your XGROUP CREATE reached Redis, and the new group does not hand it out: it was created at the end of the stream ("$"), perhaps because the stream looked empty a moment before. Whatever the stream held a moment ago, create the group at "0".`,
      1,
    );
  }
  // Three instances of a service start together: checking first and creating second races.
  const together = freshKey("tasks:together");
  await Promise.all(
    [1, 2, 3].map((n) =>
      ensure(client, together, group, `ensureGroup() of worker ${n}, started at the same time`),
    ),
  );
  check(
    (await groupInfo(observer, together, group)) !== undefined,
    `Three ensureGroup() calls at once left no group named "${group}".`,
    2,
  );
});

test("ensureGroup() lets every error other than BUSYGROUP through", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const notAStream = freshKey("tasks:not-a-stream");
  await observer.set(notAStream, "a string, not a stream");
  const outcome = await call("ensureGroup()", () =>
    exercise.ensureGroup(client, notAStream, fresh("ocr")),
  ).then(
    () => "resolved",
    (error: unknown) => {
      failIfNotWritten(error);
      return "threw";
    },
  );
  check(
    outcome === "threw",
    `ensureGroup() on a key that holds a string resolved as if all was well, although Redis answered with an error (WRONGTYPE): the stage would start without a group. Catch only the error whose message starts with "BUSYGROUP" and rethrow any other.`,
    2,
  );
});

test("ensureGroup() lets a lost connection through too", async () => {
  // Not WRONGTYPE this time: the connection dies while XGROUP CREATE is on its way, as when
  // Redis restarts. Whether the group now exists nobody knows, so it is not a success.
  const starting = scope("starting");
  const client = await starting.run(() => learnerClient());
  const cut = before((c) => c.name === "XGROUP", "crash");
  const outcome = await starting
    .run(() =>
      call(
        "ensureGroup()",
        () => exercise.ensureGroup(client, freshKey("tasks:cut"), fresh("ocr")),
        3000,
      ),
    )
    .then(
      () => "resolved",
      (error: unknown) => {
        failIfNotWritten(error);
        return "failed";
      },
    )
    .finally(() => cut.cancel());
  if (!cut.hasFired()) return;
  check(
    outcome !== "resolved",
    `The check cut the connection while your ensureGroup()'s XGROUP CREATE was on its way: node-redis rejected it with a connection error, and ensureGroup() resolved as if the group existed. It swallows more than BUSYGROUP (a check for WRONGTYPE alone, or a catch that ignores everything, lets this through). Catch only the error whose message starts with "BUSYGROUP" and rethrow any other.`,
    2,
  );
});

/**
 * Another client's script that never ends, so that Redis answers every other command with "BUSY
 * Redis is busy running a script...". The threshold is lowered (lua-time-limit, busy-reply-
 * threshold on Redis 7: the old name works on 6.2 too) so the server says BUSY after 1 ms instead
 * of 5 s; end() kills the script and puts the threshold back.
 */
async function busyServer(observer: Redis) {
  const scripter = await checkClient("busy-script");
  const [threshold] = Object.values(await observer.configGet("lua-time-limit"));
  await observer.configSet("lua-time-limit", "1");
  let script: Promise<unknown> | undefined;
  return {
    /** Starts the script and resolves once Redis answers BUSY. */
    async begin(): Promise<void> {
      script = scripter.eval("while true do end").catch(() => undefined);
      await until(
        () =>
          observer.ping().then(
            () => false,
            (error: Error) => /^BUSY /.test(error.message),
          ),
        3000,
      );
    },
    async end(): Promise<void> {
      if (script) {
        await until(
          () =>
            observer.sendCommand(["SCRIPT", "KILL"]).then(
              () => true,
              (error: Error) => /NOTBUSY/.test(error.message),
            ),
          3000,
        );
        await script;
        script = undefined;
      }
      await observer.configSet("lua-time-limit", String(threshold ?? "5000"));
    },
  };
}

test.skipIf(!ctx.privateServer)(
  "ensureGroup() lets BUSY through: a busy server is not an existing group",
  async () => {
    // Another client runs a long script: Redis answers every other command with "BUSY Redis is
    // busy running a script...", which contains BUSY but is not BUSYGROUP.
    const observer = await checkClient();
    const client = await learnerClient();
    const server = await busyServer(observer);
    const busy = before(command("XGROUP"), () => server.begin());
    let outcome: string;
    try {
      outcome = await call(
        "ensureGroup()",
        () => exercise.ensureGroup(client, freshKey("tasks:busy"), fresh("ocr")),
        3000,
      ).then(
        () => "resolved",
        (error: Error) => {
          failIfNotWritten(error);
          return `threw ${error.message}`;
        },
      );
    } finally {
      busy.cancel();
      await server.end();
    }
    if (!busy.hasFired()) return;
    check(
      outcome !== "resolved",
      `While another client ran a long script, Redis answered your ensureGroup()'s XGROUP CREATE with "BUSY Redis is busy running a script", and ensureGroup() resolved as if the group existed: no group was made. That message contains "BUSY" but it is not BUSYGROUP. Catch only the error whose message starts with "BUSYGROUP" and rethrow any other.`,
      2,
    );
  },
);

test("a group created after tasks were queued still hands those tasks out", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = freshKey("tasks:backlog");
  const group = fresh("ocr");
  const queued: string[] = [];
  for (let n = 0; n < 5; n++) queued.push(await observer.xAdd(stream, "*", { docId: `doc-${n}` }));
  await ensure(client, stream, group, "ensureGroup()");

  const read = async () => {
    const reply = await observer.xReadGroup(
      group,
      fresh("probe"),
      { key: stream, id: ">" },
      { COUNT: 10 },
    );
    return (reply ?? []).flatMap((s) => s.messages as Task[]).length;
  };
  const first = await read();
  if (first === 0) {
    const info = await groupInfo(observer, stream, group);
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

  await ensure(client, stream, group, "ensureGroup() on an existing group");
  const again = await read();
  check(
    again === 0,
    `Calling ensureGroup() on an existing group handed out ${again} tasks a second time: it moved the group back. When the group exists, leave it as it is.`,
    2,
  );
});

test("three workers share 30 tasks: each handled once, by one worker, then acknowledged", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = freshKey("tasks:ocr");
  const group = fresh("ocr");
  const names = [fresh("ocr"), fresh("ocr"), fresh("ocr")];
  const connections = await connectionsSince(observer);
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
    sameValue({ ...fields }, { docId: "doc-0" }),
    `A task entry should hold one field, docId; the first one holds ${JSON.stringify(fields)}.`,
    2,
  );
  // A cap on a work queue deletes tasks by count, whether a group still needs them or not.
  const trimming = sent(
    (c) =>
      c.name === "XADD" && c.args[1] === stream && c.args.some((a) => /^(MAXLEN|MINID)$/i.test(a)),
  )[0];
  check(
    trimming === undefined,
    `enqueue() sent ${trimming?.args.join(" ")}: it trims the queue on every append. On a stream that groups work through, trimming deletes tasks no worker has had yet, or that are pending, and a deleted entry is gone for good (lesson 06, "Trimming a work queue"). Append the task with a plain XADD.`,
    2,
  );
  await ensure(client, stream, group, "ensureGroup()");
  // Another group reads the same stream (an audit trail): what the OCR workers finish is
  // still its work.
  const audit = fresh("audit");
  await observer.xGroupCreate(stream, audit, "0");

  const handled: { consumer: string; task: Task }[] = [];
  const workers: Worker[] = [];
  // Each worker holds its first batch until all three have one: the share does not depend on
  // which worker happened to start first on a busy machine.
  const gate = heldUntilReleased();
  let waiting = 0;
  let stopFailure: string | undefined;
  try {
    for (const consumer of names) {
      await startWorker(
        client,
        {
          stream,
          group,
          consumer,
          count: 2,
          blockMs: BLOCK_MS,
          handle: async (task) => {
            handled.push({ consumer, task });
            if (names.every((name) => handled.some((h) => h.consumer === name))) gate.release();
            await gate.promise;
            await sleep(5);
          },
        },
        workers,
      );
    }
    const idle = nothingComing(observer, stream, group, names, () => handled.length);
    await until(
      async () => names.every((name) => handled.some((h) => h.consumer === name)) || idle(),
      2000,
    );
    gate.release();
    await until(async () => handled.length >= ids.length || idle(), 8000);
    // With the queue empty, every worker should be waiting in XREADGROUP at the same time.
    if (handled.length > 0) {
      waiting = await waitForBlocked(observer, "xreadgroup", names.length, 3000);
    }
  } finally {
    const results = await Promise.allSettled(
      workers.map((worker, i) => stopWithin(worker, STOP_MS, names[i] ?? "", BLOCK_MS)),
    );
    const failed = results.find((r) => r.status === "rejected");
    if (failed) stopFailure = String((failed.reason as Error).message);
  }

  const elsewhere = readersOf(stream).find((r) => r.group !== group || !names.includes(r.consumer));
  check(
    elsewhere === undefined,
    `Your workers read with GROUP ${elsewhere?.group} ${elsewhere?.consumer}, but were given the group ${group} and the consumers ${names.join(", ")}. Use options.group and options.consumer: the check gives each a fresh name.`,
    2,
  );
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

  const wrongTask = handled.find(({ task }) => task.docId !== `doc-${ids.indexOf(task.id)}`);
  check(
    wrongTask === undefined,
    `handle() received ${JSON.stringify(wrongTask?.task)}: a task is { id, docId } with the entry's ID and its docId field.`,
    2,
  );
  const byDoc = new Map<string, string[]>();
  for (const { consumer, task } of handled) {
    byDoc.set(task.docId, [...(byDoc.get(task.docId) ?? []), consumer]);
  }
  const twice = [...byDoc.entries()].find(([, consumers]) => consumers.length > 1);
  if (twice) {
    fail(
      `${twice[0]} was handled ${twice[1].length} times (by ${twice[1].join(", ")}). In a consumer group each task goes to one worker once: read with XREADGROUP and ">", and give every worker its own consumer name.`,
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
  if (stopFailure) fail(stopFailure, 2);
  const pending = await pendingCount(observer, stream, group);
  check(
    pending === 0,
    `All tasks were handled, but ${pending} are still pending in the group (XPENDING). Acknowledge each task with XACK once handle() has finished; otherwise the group assumes the worker died on it, and lesson 09's recovery would run it again.`,
    2,
  );
  const leftOpen = await connections.leftOpen();
  check(
    leftOpen.length === 0,
    `After stop() ${leftOpen.length} connections opened by your workers are still open. Close each worker's connection when its loop ends.`,
    2,
  );
  const kept = await observer.xLen(stream);
  check(
    kept === ids.length,
    `After the workers finished, the stream holds ${kept} of the 30 tasks: your workers deleted what they handled. The group ${audit} reads the same stream and has not had them yet; other groups each get every entry. A worker acknowledges (XACK) and nothing more: trimming the stream is its owner's job (lesson 06), below what every group still needs.`,
    2,
  );
});

test("a task whose handle() throws or rejects stays pending; one still working is not acknowledged; the worker goes on", async () => {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = freshKey("tasks:flaky");
  const group = fresh("ner");
  const consumer = fresh("ner");
  const ids: string[] = [];
  for (let n = 0; n < 5; n++) ids.push(await observer.xAdd(stream, "*", { docId: `doc-${n}` }));
  const [, throwing, rejecting, slow, last] = ids as [string, string, string, string, string];
  await ensure(client, stream, group, "ensureGroup()");

  // doc-1 throws at once, doc-2 returns a rejected promise, doc-3 works until released.
  const slowWork = heldUntilReleased();
  let slowSince = 0;
  const called: string[] = [];
  // For each call, the read that brought the task: the worker's latest XREADGROUP by then.
  const broughtBy: number[] = [];
  const finished: string[] = [];
  const handle = (task: Task): void | Promise<void> => {
    called.push(task.id);
    broughtBy.push(
      sent((c) => c.name === "XREADGROUP" && c.args.includes(consumer)).at(-1)?.seq ?? 0,
    );
    if (task.id === throwing) throw new Error("the OCR service is down");
    if (task.id === rejecting) return Promise.reject(new Error("the OCR service timed out"));
    if (task.id === slow) {
      slowSince = sent().at(-1)?.seq ?? 0;
      return slowWork.promise.then(() => void finished.push(task.id));
    }
    finished.push(task.id);
  };
  const workers: Worker[] = [];
  let timers: ReturnType<typeof scopeTimers> | undefined;
  try {
    const started = await startTimed(
      () =>
        startWorker(
          client,
          { stream, group, consumer, handle, count: 5, blockMs: BLOCK_MS },
          workers,
        ),
      "flaky",
    );
    const worker = started.worker;
    const { live } = started.timers;
    timers = started.timers;
    const idle = nothingComing(observer, stream, group, [consumer], () => called.length);
    await until(async () => called.includes(slow) || idle(), 3000);
    const reachedSlow = called.includes(slow);
    check(
      reachedSlow,
      `handle() threw for ${throwing} and rejected for ${rejecting}, and after that your worker stopped taking tasks: ${slow} never reached handle(). Catch the error of each handle() call, leave that task unacknowledged, and go on with the next.`,
      2,
    );
    const early = acknowledged(stream);
    check(
      !early.has(slow),
      `Your worker acknowledged ${slow} while handle() was still working on it. If the worker died now, the task would be lost: XACK only after handle() has finished (await it).`,
      2,
    );
    const failedAcked = [throwing, rejecting].filter((id) => early.has(id));
    check(
      failedAcked.length === 0,
      `Your worker acknowledged ${failedAcked.join(" and ")} although handle() failed for it. An acknowledged task is finished for good; a failed one must stay pending, so that lesson 09's recovery can give it another try.`,
      2,
    );
    const pendingNow = await pendingIds(observer, stream, group);
    check(
      pendingNow.get(slow) === consumer,
      `While handle() worked on ${slow}, the group did not list it as pending for ${consumer}${pendingNow.size === 0 ? " (nothing was pending at all: was it read with NOACK?)" : ""}. Read without NOACK, so a task stays pending until your XACK.`,
      2,
    );
    // The slow task takes its time (a large document): a worker that stops waiting for handle()
    // after a timeout of its own reads on meanwhile, and never acknowledges the finished task.
    // Held until the worker reads again, or has no timer of its own left to fire and nothing
    // on its way to Redis: a timeout that fired is followed to its next read however slowly the
    // machine runs it, and a worker that just awaits handle() is released at once.
    const readOn = () =>
      sent((c) => c.seq > slowSince && c.name === "XREADGROUP" && c.args.includes(consumer))
        .length > 0;
    const holding = Date.now();
    await until(() => readOn() || (live() === 0 && nothingInFlight()), 5000);
    const gaveUp = readOn();
    const heldMs = Date.now() - holding;
    slowWork.release();
    const wentOn = await until(() => {
      const acked = acknowledged(stream);
      return acked.has(slow) && acked.has(last);
    }, 3000);
    check(
      wentOn || !gaveUp || acknowledged(stream).has(slow),
      `While handle() still worked on ${slow} (the check let it take ${(heldMs / 1000).toFixed(1)} s), your worker read again, and once handle() had finished, ${slow} was never acknowledged: the worker stopped waiting for handle() (a timeout of its own?) and counted the task as failed. A task is done when handle() finishes, however long it takes: await it, then XACK.`,
      2,
    );
    check(
      wentOn,
      `After the failures, ${[slow, last].filter((id) => !acknowledged(stream).has(id)).join(" and ")} never got acknowledged${finished.includes(last) ? ", although handle() finished" : ""}. The worker should keep going: handle, then XACK, for every task after a failed one.`,
      2,
    );
    // A task queued after the failures: a worker that retries its own failed tasks before
    // reading new ones never gets to it while they keep failing.
    const later = await observer.xAdd(stream, "*", { docId: "doc-5" });
    const tookLater = await until(() => acknowledged(stream).has(later), 3000);
    const retries = called.filter((id) => id === throwing).length;
    check(
      tookLater,
      `After the failures a new task, ${later}, was queued, and your worker did not handle and acknowledge it within 3 s${retries > 1 ? `; handle() was called ${retries} times for ${throwing}, which fails every time: the worker kept retrying its failed tasks instead of taking new ones` : ""}. Leave a failed task pending (lesson 09's recovery tries it again, with a limit) and go on reading new tasks with ">".`,
      2,
    );
    // The task that ends the blocked read is judged by the stop() tests, not here.
    const wakes: string[] = [];
    const wake = async () => wakes.push(await observer.xAdd(stream, "*", { docId: "doc-wake" }));
    await stopWithin(worker, STOP_MS, consumer, BLOCK_MS, wake);
    workers.length = 0;
    // Retrying at once is the worker's own affair; a failed task brought again by a later read
    // means the worker reads its own pending tasks as it goes: retried for as long as it lives.
    const reread = [throwing, rejecting].filter((id) => {
      const reads = new Set(broughtBy.filter((_, n) => called[n] === id));
      return reads.size > 1;
    });
    check(
      reread.length === 0,
      `handle() failed for ${reread.join(" and ")}, and a later XREADGROUP of your worker brought ${reread.length > 1 ? "them" : "it"} to handle() again (${reread.map((id) => `${called.filter((c) => c === id).length} calls for ${id}`).join(", ")}): your worker reads its own pending tasks (an ID such as "0" instead of ">") while it runs. A task that fails every time is then retried for as long as the worker lives, each read counts one more delivery and makes it look freshly taken, so lesson 09's recovery never sees it idle. Read with ">" as you go, and leave a failed task pending for lesson 09 (reading your history with "0" once at start, before ">", is fine).`,
      2,
    );
    const left = [...(await pendingIds(observer, stream, group)).keys()].filter(
      (id) => !wakes.includes(id),
    );
    check(
      sameValue(left.sort(), [throwing, rejecting].sort()),
      `After stop() the group should hold exactly the two failed tasks as pending (${throwing}, ${rejecting}), so they can be tried again; it holds ${left.join(", ") || "none"}.`,
      2,
    );
    // The same consumer starts again (the service restarted): what it left pending is still
    // owed. A worker that clears "stale" pending tasks at start acknowledges tasks never done.
    const mark = sent().at(-1)?.seq ?? 0;
    const tries = called.length;
    const again = await startWorker(
      client,
      { stream, group, consumer, handle, count: 5, blockMs: BLOCK_MS },
      workers,
    );
    await waitForBlocked(observer, "xreadgroup", 1, 3000);
    await stopWithin(again, STOP_MS, consumer, BLOCK_MS, wake);
    workers.length = 0;
    const triedAgain = new Set(called.slice(tries));
    const dropped = [throwing, rejecting].filter(
      (id) =>
        !triedAgain.has(id) &&
        sent((c) => c.seq > mark && c.name === "XACK" && c.args.includes(id)).length > 0,
    );
    check(
      dropped.length === 0,
      `The check started a worker again with the same consumer name, ${consumer}, as a restarted service would, and your worker acknowledged ${dropped.join(" and ")}, which were pending from before, without handing them to handle(): those documents are now counted as done and nobody will ever process them. A consumer's pending tasks are work it still owes: leave them pending (lesson 09's recovery takes them up), or handle them first (read your history with ID 0) and acknowledge only what handle() finished.`,
      2,
    );
  } finally {
    timers?.stop();
    slowWork.release();
    await stopAll(workers);
  }
});

/**
 * A stream with `tasks` queued and its group made by the learner's ensureGroup(), and what the
 * stop() tests need around it: the connections opened from here on, to find those left open,
 * and start(), which starts a worker of that group with the stop tests' count and BLOCK.
 */
async function stopScene(label: string, stage: string, tasks: number, blockMs = BLOCK_MS) {
  const observer = await checkClient();
  const client = await learnerClient();
  const stream = freshKey(`tasks:${label}`);
  const group = fresh(stage);
  const ids: string[] = [];
  for (let i = 0; i < tasks; i++) ids.push(await observer.xAdd(stream, "*", { docId: `doc-${i}` }));
  await ensure(client, stream, group, "ensureGroup()");
  const connections = await connectionsSince(observer);
  const start = (consumer: string, handle: WorkerOptions["handle"], workers: Worker[]) =>
    startWorker(client, { stream, group, consumer, count: 2, blockMs, handle }, workers);
  return { observer, client, stream, group, ids, connections, start, blockMs };
}

/** Fails unless every connection opened since `connections` was taken is closed again. */
async function checkAllClosed(connections: { leftOpen(): Promise<unknown[]> }): Promise<void> {
  const leftOpen = await connections.leftOpen();
  check(
    leftOpen.length === 0,
    `After stop() ${leftOpen.length} connection(s) your worker opened are still open. Close the worker's connection when its loop ends.`,
    2,
  );
}

test("stop() in the middle of a task finishes the tasks in hand, acknowledges only what succeeded, and closes the connection", async () => {
  // Three tasks, count 2: the first read hands over the first two, a batch in hand.
  const { observer, stream, group, ids, connections, start } = await stopScene("deploy", "ocr", 3);
  const consumer = fresh("ocr");
  const [id, failing, third] = ids;
  if (!id || !failing || !third) throw new Error("no tasks queued");
  const work = heldUntilReleased();
  const reached: string[] = [];
  const workers: Worker[] = [];
  try {
    const worker = await start(
      consumer,
      async (task) => {
        reached.push(task.id);
        if (task.id === id) await work.promise;
        // The second task of the batch fails, after stop() was called.
        if (task.id === failing) throw new Error(`OCR failed for ${task.id} (the check's doing)`);
      },
      workers,
    );
    const started = () => reached.length > 0;
    const idle = nothingComing(observer, stream, group, [consumer], () => reached.length);
    await until(async () => started() || idle(), 3000);
    check(started(), `The queued task never reached handle().`, 2);
    const taken = (await pendingIds(observer, stream, group)).size;
    // Each read asked for at most 2 and it still holds 3: it read again with a task in hand.
    const reads = sent((c) => c.name === "XREADGROUP" && c.args.includes(consumer));
    const counted = reads.every((c) => {
      const at = c.args.findIndex((a) => /^COUNT$/i.test(a));
      return at >= 0 && Number(c.args[at + 1]) <= 2;
    });
    check(
      taken <= 2 || !counted || reads.length < 2,
      `Three tasks were queued and your worker, started with count 2, held ${taken} of them while handle() still worked on its first: each read asked for at most 2, but it read again (${reads.length} XREADGROUP) before its batch was done. Handle the tasks of a read (await handle() for each, or await them all) before the next read: a worker that starts tasks and reads on holds as many as arrive, and tasks it holds wait for it while idle workers could take them.`,
      2,
    );
    check(
      taken <= 2,
      `Three tasks were queued and your worker, started with count 2, held ${taken} of them while handle() still worked on its first. Take at most options.count tasks per read (COUNT count): tasks a busy worker holds wait for it while idle workers could take them.`,
      2,
    );
    let stopped = false;
    const stopping = stopWithin(worker, STOP_MS + BLOCK_MS, consumer, BLOCK_MS).finally(() => {
      stopped = true;
    });
    stopping.catch(() => {});
    // Held for several reads: a stop() that sleeps about one BLOCK instead of awaiting the loop
    // would slip through a hold of one read.
    await sleep(BLOCK_MS * 4);
    check(
      !stopped,
      "stop() returned while handle() was still working on a task. A deploy would then kill the process in the middle of that task: stop() must wait until the loop has finished the tasks in hand.",
      2,
    );
    work.release();
    const stopError = await stopping.then(
      () => undefined,
      (error: Error) => error,
    );
    workers.length = 0;
    const pending = await pendingIds(observer, stream, group);
    check(
      !pending.has(id),
      `stop() was called while handle() worked on ${id}; the task finished, but it is still pending: your worker did not acknowledge it. stop() should let the loop finish the task in hand (handle, then XACK) and only then close the connection.`,
      2,
    );
    const unhandled = [...pending.keys()].filter((p) => !reached.includes(p));
    check(
      unhandled.length === 0,
      `stop() was called while handle() worked on ${id}, and your worker left ${unhandled.join(", ")} pending without ever passing it to handle(): it came in the same read, so it was in hand. Nobody will look at it until a recovery claims it. Finish the batch you read (handle, then XACK each), and check the stop flag only before the next read.`,
      2,
    );
    check(
      reached.includes(failing),
      `Three tasks were queued and your worker, started with count 2, took only the first (${id}) in its first read: ${failing}, the next, never reached handle() before stop(). Take options.count tasks per read (COUNT count), not one: a worker that asks for one task at a time pays a round trip to Redis for every task.`,
      2,
    );
    check(
      pending.has(failing),
      `handle() failed for ${failing} while the worker was stopping, and your worker acknowledged it anyway: it is gone from the pending list, so nobody will try it again. Stopping changes nothing about a failure: acknowledge only a task whose handle() succeeded.`,
      2,
    );
    if (stopError && !/the check's doing/.test(stopError.message)) throw stopError;
    await checkAllClosed(connections);
  } finally {
    work.release();
    await stopAll(workers);
  }
});

test("stop() while a read is bringing a task: the task is still handled and acknowledged", async () => {
  const { observer, stream, group, connections, start } = await stopScene("arriving", "ner", 0);
  const consumer = fresh("ner");
  const docId = fresh("doc-arriving");
  const reached: string[] = [];
  const workers: Worker[] = [];
  let stopping: Promise<void> | undefined;
  let returnedWhileHeld = false;
  // Redis has handed the task to the consumer and sent the reply; the check holds it at the
  // socket and asks the worker to stop meanwhile. A stop() that waits for its loop cannot
  // return while the read it waits in has not returned; one that cuts the read short does.
  const onItsWay = holdReply(
    (c, reply) => c.name === "XREADGROUP" && c.args.includes(consumer) && reply.includes(docId),
    async () => {
      const worker = workers[0];
      if (!worker) return;
      let returned = false;
      stopping = stopWithin(worker, STOP_MS + BLOCK_MS, consumer, BLOCK_MS).finally(() => {
        returned = true;
      });
      stopping.catch(() => {});
      await Promise.race([stopping.catch(() => {}), sleep(BLOCK_MS)]);
      returnedWhileHeld = returned;
    },
  );
  try {
    await start(consumer, (t) => void reached.push(t.id), workers);
    const id = await observer.xAdd(stream, "*", { docId });
    const idle = nothingComing(observer, stream, group, [consumer], () => reached.length);
    await until(async () => onItsWay.hasFired() || idle(), 3000);
    check(
      onItsWay.hasFired(),
      `A task queued for your running worker never came back in a reply to its XREADGROUP within 3 s: read with XREADGROUP GROUP <group> <consumer> ... STREAMS <stream> > in a loop until stop() is called.`,
      2,
    );
    await stopping;
    workers.length = 0;
    const pending = await pendingIds(observer, stream, group);
    const onItsWayText = `stop() was called while the reply to your worker's XREADGROUP was on its way (the check held it at the socket), carrying ${id}: Redis had already handed that task to ${consumer}.`;
    if (!reached.includes(id)) {
      fail(
        `${onItsWayText} ${returnedWhileHeld ? "Your stop() returned before that read had returned: it cut the read short (destroy() or disconnect() of the connection), so the reply was never read. " : ""}The task never reached handle() and is ${pending.has(id) ? `pending for ${consumer}` : "gone from the pending list"}: nobody will look at it until a recovery claims it. Let stop() only set its flag and wait for the loop: the read returns within BLOCK, the loop handles and acknowledges what it brought, and only then closes the connection.`,
        2,
      );
    }
    check(
      !pending.has(id),
      `${onItsWayText} Your worker passed it to handle(), but it is still pending: it was never acknowledged (was the connection closed before the loop ended, so XACK failed?). Close the connection only after the loop has finished the tasks in hand.`,
      2,
    );
    await checkAllClosed(connections);
  } finally {
    onItsWay.cancel();
    await stopAll(workers);
  }
});

test("Redis dropping the connection under the worker's XACK does not end the process", async () => {
  const { stream, group, ids } = await stopScene("dropped-ack", "ocr", 1);
  const [id] = ids;
  if (!id) throw new Error("no task queued");
  const consumer = fresh("ocr");
  // Reconnecting, as a real client does: a worker that goes on after a failed XACK (logs it and
  // reads again: fine) then reads again once node-redis has reconnected, and that command is
  // cut too, for an error listener added with once() hears only the first drop. The connections
  // the worker duplicate()s tell a loop that ended (its connection closed) from one still going.
  const client = await learnerClient(undefined, { reconnect: true });
  const allClosed = recordDuplicates(client);
  const drops = hearDropErrors();
  const workers: Worker[] = [];
  let again: ReturnType<typeof before> | undefined;
  // The acknowledgement of a finished task: a worker that awaits it sees the rejection in its
  // loop; one that sent it without await leaves it to nobody.
  const { unhandled } = await dropUnder(
    (c) => c.name === "XACK" && c.args.includes(stream) && c.args.includes(id),
    async (dropped) => {
      try {
        await startWorker(
          client,
          { stream, group, consumer, count: 2, blockMs: BLOCK_MS, handle: () => {} },
          workers,
        );
        check(
          await until(dropped, 3000),
          `Your worker ${consumer} never acknowledged ${id} within 3 s of its handle() returning: XACK each task once handle() has succeeded.`,
          2,
        );
        const next = before(
          (c) => /^(XREADGROUP|XACK)$/.test(c.name) && c.args.includes(stream),
          (c) => dropConnection(c.conn),
        );
        again = next;
        await until(() => next.hasFired() || allClosed(), 2000);
      } finally {
        again?.cancel();
        await stopAll(workers);
      }
    },
  ).finally(() => drops.stop());
  drops.expectHeard(
    again?.hasFired() ? 2 : 1,
    again?.hasFired()
      ? "the connection your worker's XACK was on, then again under the command your worker sent after node-redis reconnected"
      : "the connection your worker's XACK was on",
    "worker",
    'Give the connection you duplicate() an error listener (connection.on("error", ...)) that logs the error.',
    2,
  );
  check(
    unhandled.length === 0,
    `The check dropped the connection under your worker's XACK of ${id} (as a Redis restart does), and that XACK's rejection (${String(unhandled[0])}) was handled by nobody: Node ends a process on an unhandled rejection. The XACK was sent without await; await it (await connection.xAck(...)), so a failure reaches your loop, and stop() returns only once the task in hand is acknowledged.`,
    2,
  );
});

/**
 * The blockMs of a worker whose reads the check makes fail at once: short, so that a right
 * worker's wait (about blockMs before the next read) ends soon, and the check with it. Twice
 * that on a server busy with a script, whose every reply takes a while: a loop that asks again
 * at once sends about one command a round trip, and a right one about one a blockMs.
 */
const GONE_BLOCK_MS = 50;
const BUSY_BLOCK_MS = 100;

/**
 * How long the check watches a worker whose reads fail at once, and how many commands it may
 * send. The watch lasts GONE_BLOCKS of its blockMs, and at least as long as the check's own
 * GONE_PINGS PINGs, sent one after the other with a 1 ms pause: a loop that asks again at once
 * (or after a millisecond) sends about one command per such PING, however much a loaded machine
 * slows them both. It may send GONE_MOST commands, or one per blockMs watched and three more
 * when the PINGs made the watch longer: one that waits a blockMs between reads sends about
 * eleven. Ten blockMs, not fewer: a pause of its own, a fixed 20 or 30 ms whatever blockMs is,
 * must still send more than GONE_MOST within the watch (mistake nogroup-pause-hard-coded).
 */
const GONE_BLOCKS = 10;
const GONE_PINGS = 30;
const GONE_MOST = 15;

/**
 * What the learner sent after `mark`, watched until it is more than it may send (a loop asking
 * again at once) or the watch is over; `observer` sends the check's PINGs.
 */
async function commandsSince(
  observer: Redis,
  blockMs: number,
  mark: number,
  timers: ReturnType<typeof scopeTimers>,
  started = Date.now(),
) {
  const since = () => sent((c) => c.seq > mark);
  const paused = timers.delays().length;
  const most = () => Math.max(GONE_MOST, Math.ceil((Date.now() - started) / blockMs) + 3);
  let paced = false;
  const pings = (async () => {
    for (let round = 0; round < GONE_PINGS; round++) {
      // A busy server answers BUSY at once: a round trip all the same.
      await observer.ping().catch(() => {});
      await sleep(1);
    }
    paced = true;
  })();
  let spinning = false;
  await until(() => {
    spinning = since().length > most();
    return spinning || (paced && Date.now() - started >= blockMs * GONE_BLOCKS);
  }, 10_000);
  await pings;
  const elapsed = Date.now() - started;
  const commands = since();
  const counts = new Map<string, number>();
  for (const c of commands) counts.set(c.name, (counts.get(c.name) ?? 0) + 1);
  const summary = [...counts].map(([name, n]) => `${name} x${n}`).join(", ");
  // Counting reads tells a loop that asks again at once; a pause of its own far shorter than
  // blockMs (a fixed 20 ms) sends barely more than a right one once every round trip is slow
  // on a loaded machine, so that pause is read off the timer itself. Not 1 ms: setTimeout(f, 0)
  // is one, a turn of a loop that the count judges.
  const short = timers
    .delays()
    .slice(paused)
    .find((ms) => ms > 1 && ms < blockMs / 2);
  const pause =
    short === undefined
      ? ""
      : ` Between failed reads your worker waited ${short} ms on a timer of its own, with blockMs ${blockMs}: while the cause lasts that is a read every ${short} ms, however slowly this machine ran it here. Wait about blockMs, whatever it is.`;
  return { spinning: spinning || short !== undefined, elapsed, commands, summary, pause };
}

/** Starts a worker in a scope of its own, whose timers (the pauses its code takes) are counted. */
async function startTimed(start: () => Promise<Worker>, label: string) {
  const working = scope(label);
  const timers = scopeTimers(working, { createdIn: ctx.target });
  try {
    return { worker: await working.run(start), timers };
  } catch (error) {
    timers.stop();
    throw error;
  }
}

/**
 * Stops a worker whose loop may have ended on `error` (stop() reporting it is right too).
 * Whether it reported it.
 */
async function stopReporting(worker: Worker, error: RegExp, blockMs: number): Promise<boolean> {
  try {
    await stopWithin(worker, QUIET_STOP_MS, "the worker", blockMs);
    return false;
  } catch (reported) {
    if (!error.test((reported as Error).message)) throw reported;
    return true;
  }
}

/** A fault the check brings about just before a worker's read; end() puts things right. */
interface ReadFault {
  begin(): Promise<unknown>;
  end?(): Promise<void>;
}

/**
 * A worker reads once, then `fault` strikes just before its second XREADGROUP reaches Redis, so
 * that read and every one after it are answered at once with an error. The worker must not ask
 * again at once: `spinning(outcome)` is the failure message when it sends more commands than
 * commandsSince() allows (the worker is given `blockMs`). When the fault ends (end()), it takes
 * the next task or its stop() reports `error`: quitting in silence fails. Then nothing it opened
 * is left open.
 */
async function readFailsAtOnce(
  label: string,
  fault: (scene: Awaited<ReturnType<typeof stopScene>>) => Promise<ReadFault>,
  error: RegExp,
  spinning: (outcome: Awaited<ReturnType<typeof commandsSince>>) => string,
  blockMs = GONE_BLOCK_MS,
): Promise<void> {
  const scene = await stopScene(label, "ner", 0, blockMs);
  const strike = await fault(scene);
  const workers: Worker[] = [];
  let mark = 0;
  let at = 0;
  const hook = before(
    (c) => c.name === "XREADGROUP" && c.args.includes(scene.stream),
    async () => {
      await strike.begin();
      mark = sent().at(-1)?.seq ?? 0;
      at = Date.now();
    },
    { nth: 2 },
  );
  let timers: ReturnType<typeof scopeTimers> | undefined;
  try {
    const handled: string[] = [];
    const started = await startTimed(
      () => scene.start(fresh("ner"), (task) => void handled.push(task.id), workers),
      `gone-${label}`,
    );
    const worker = started.worker;
    timers = started.timers;
    await until(() => mark > 0, 3000);
    hook.cancel();
    check(mark > 0, "Your worker did not read a second time within 3 s.", 2);
    const outcome = await commandsSince(scene.observer, scene.blockMs, mark - 1, timers, at);
    await strike.end?.();
    check(!outcome.spinning, `${spinning(outcome)}${outcome.pause}`, 2);
    // A fault that ends (the script killed): a worker still running takes the next task; one
    // whose loop ended on the error has closed its connection (or does so in stop()).
    let next: string | undefined;
    if (strike.end) {
      const queued = await scene.observer.xAdd(scene.stream, "*", { docId: "doc-after" });
      next = queued;
      await until(
        async () => handled.includes(queued) || (await scene.connections.leftOpen()).length === 0,
        3000,
      );
    }
    const reported = await stopReporting(worker, error, scene.blockMs);
    workers.length = 0;
    check(
      next === undefined || handled.includes(next) || reported,
      `Once the long script was killed, your worker took no new task within 3 s, and its stop() then resolved as if all was well: the loop had ended on the error and nobody heard of it. A deployment would go on believing the worker runs. Wait about blockMs and read again, or let the error end the loop so that stop() rejects with it (do not catch it in stop()).`,
      2,
    );
    await checkAllClosed(scene.connections);
  } finally {
    timers?.stop();
    hook.cancel();
    await strike.end?.();
    await stopAll(workers);
  }
}

test("a worker whose stream is deleted does not ask again and again", () =>
  // The stream goes, and its groups with it, just before the worker's second read reaches
  // Redis (a read waiting then would end with "UNBLOCKED the stream key no longer exists"):
  // that read and every one after it answer NOGROUP at once, and an XGROUP CREATE without
  // MKSTREAM fails too ("requires the key to exist").
  readFailsAtOnce(
    "deleted",
    async ({ observer, stream }) => ({ begin: () => observer.del(stream) }),
    /NOGROUP|UNBLOCKED/,
    ({ commands, elapsed, summary }) =>
      `After the check deleted the stream (and its groups with it, as a clean-up script can), your worker sent ${commands.length} commands within ${elapsed} ms (${summary}): it asked again at once. ${summary.includes("XGROUP") ? "Its XGROUP CREATE fails too while the stream is missing, unless it carries MKSTREAM, so making the group again does not stop the loop: recreate it as ensureGroup() does (MKSTREAM), or wait about blockMs before the next read." : "On NOGROUP, wait about blockMs before the next read, recreate the group as ensureGroup() does (with MKSTREAM), or let the error end the loop so that stop() reports it."}`,
  ));

// A long script makes Redis answer every other command with BUSY: an admin setting
// (lua-time-limit) and SCRIPT KILL, so only on the workbook's own server.
test.skipIf(!ctx.privateServer)(
  "a worker whose reads fail at once with another error (Redis busy) does not ask again and again",
  () =>
    // Just before the worker's second read reaches Redis, another client starts a script that
    // never ends: that read, and every one after it, is answered "BUSY ..." at once.
    readFailsAtOnce(
      "busy",
      ({ observer }) => busyServer(observer),
      /BUSY/,
      ({ commands, elapsed, summary }) =>
        `While another client ran a long script, Redis answered your worker's XREADGROUP with "BUSY Redis is busy running a script" at once, and your worker sent ${commands.length} commands within ${elapsed} ms (${summary}): it read again at once. Not only NOGROUP comes back at once: BUSY, LOADING after a restart or WRONGTYPE do too, and a loop that retries them straight away spins for as long as they last. After any error of the read, wait about blockMs before the next one, or let the error end the loop so that stop() reports it.`,
      BUSY_BLOCK_MS,
    ),
);

test("a worker whose group is gone does not ask again and again, and does not quit in silence", async () => {
  const { observer, stream, group, connections, start, blockMs } = await stopScene(
    "gone",
    "ner",
    0,
    GONE_BLOCK_MS,
  );
  const consumer = fresh("ner");
  const workers: Worker[] = [];
  const handled: string[] = [];
  let timers: ReturnType<typeof scopeTimers> | undefined;
  // A worker that makes the group again: a task queued just before its XGROUP CREATE reaches
  // Redis was queued while the group was gone, and the new group must still hand it out.
  let queuedWhileGone: string | undefined;
  const whileGone = before(
    (c) => c.name === "XGROUP" && /^CREATE$/i.test(c.args[1] ?? "") && c.args.includes(stream),
    async () => {
      queuedWhileGone ??= await observer.xAdd(stream, "*", { docId: "doc-while-gone" });
    },
  );
  try {
    const started = await startTimed(
      () => start(consumer, (task) => void handled.push(task.id), workers),
      "group-gone",
    );
    const worker = started.worker;
    timers = started.timers;
    await waitForBlocked(observer, "xreadgroup", 1, 3000);
    const mark = sent().at(-1)?.seq ?? 0;
    // As an operator or a clean-up script can: Redis answers the waiting read with NOGROUP, and
    // every read after it too, at once, until the group is back.
    await observer.xGroupDestroy(stream, group);
    const { spinning, elapsed, commands, summary, pause } = await commandsSince(
      observer,
      blockMs,
      mark,
      timers,
    );
    check(
      !spinning,
      `While the group was gone (the check destroyed it with XGROUP DESTROY, as an operator or a clean-up script can), your worker sent ${commands.length} commands within ${elapsed} ms (${summary}). Without the group Redis answers each read with NOGROUP at once, and your loop asked again at once: it spins the CPU and floods Redis and your log for as long as the group is missing. On NOGROUP, do not read again at once: log it and wait about blockMs before the next read, or recreate the group (ensureGroup()) and go on, or let the error end the loop so that stop() reports it.${pause}`,
      2,
    );
    // The operator puts the group back (a worker that made it again already has it) and queues
    // a task: a worker still running takes it.
    await observer.xGroupCreate(stream, group, "0").catch((error: Error) => {
      if (!error.message.startsWith("BUSYGROUP")) throw error;
    });
    const after = await observer.xAdd(stream, "*", { docId: "doc-group-back" });
    const goesOn = await until(() => handled.includes(after), 3000);
    let reported: Error | undefined;
    try {
      await stopWithin(worker, QUIET_STOP_MS, "the worker", blockMs);
    } catch (error) {
      // A loop that ended on the error, and stop() reporting it, is a right answer too.
      if (!/NOGROUP/.test((error as Error).message)) throw error;
      reported = error as Error;
    }
    workers.length = 0;
    check(
      goesOn || reported !== undefined,
      `After the group was gone and back, your worker took no task for 3 s, and its stop() then resolved as if all was well: the loop ended on NOGROUP and nobody heard of it. A deployment would go on believing the worker runs. Log NOGROUP and read again after about blockMs, recreate the group (ensureGroup()), or let the error end the loop so that stop() rejects with it.`,
      2,
    );
    check(
      queuedWhileGone === undefined || handled.includes(queuedWhileGone),
      `Your worker made the group again, and task ${queuedWhileGone}, queued while the group was gone (just before your XGROUP CREATE), never reached handle(): the new group started after it. Recreate it as ensureGroup() does, at "0", not "$".`,
      2,
    );
    await checkAllClosed(connections);
  } finally {
    timers?.stop();
    whileGone.cancel();
    await stopAll(workers);
  }
});

test("stop() on a quiet stream returns within one read and closes the worker's connection", async () => {
  const { observer, stream, connections, start } = await stopScene("idle", "embed", 0);
  const consumer = fresh("embed");
  const colleague = fresh("embed");
  const workers: Worker[] = [];
  try {
    const worker = await start(consumer, () => {}, workers);
    // A second worker of the same service in the same process: stopping one must not stop it.
    const colleagueGot: string[] = [];
    const other = await start(colleague, (task) => void colleagueGot.push(task.id), workers);
    // Ten reads never seen blocked: a worker that waits in each read would have taken ten BLOCKs.
    const reads = () => sent((c) => c.name === "XREADGROUP" && c.args.includes(consumer)).length;
    let waiting = 0;
    await until(async () => {
      waiting = (await blockedIn(observer, "xreadgroup")).length;
      return waiting >= 1 || reads() >= 10;
    }, 3000);
    check(
      waiting >= 1,
      `Your worker never waited in a blocking XREADGROUP ${reads() >= 10 ? `in ${reads()} reads of a quiet stream` : "within 3 s of startWorker()"}. Read with BLOCK, so it waits for new tasks instead of asking again and again.`,
      2,
    );
    await stopWithin(worker, QUIET_STOP_MS, "the worker", BLOCK_MS);
    // A read the colleague began after that stop: one begun before may still hand it the task.
    // A task for it ends that earlier read at once, rather than its BLOCK.
    const mark = sent().at(-1)?.seq ?? 0;
    await observer.xAdd(stream, "*", { docId: "doc-wake" });
    await until(
      () =>
        sent((c) => c.seq > mark && c.name === "XREADGROUP" && c.args.includes(colleague)).length >
        0,
      BLOCK_MS + 1500,
    );
    const after = await observer.xAdd(stream, "*", { docId: "doc-after-stop" });
    const goesOn = await until(() => colleagueGot.includes(after), 3000);
    check(
      goesOn,
      `After stop() of one worker, a task queued for the group never reached the other worker, ${colleague}, started with its own startWorker() call and never stopped. Its stop() stopped both: keep each worker's stop flag (and connection) inside its own startWorker() call, not at module level.`,
      2,
    );
    await stopWithin(other, QUIET_STOP_MS, colleague, BLOCK_MS, () =>
      observer.xAdd(stream, "*", { docId: "doc-wake" }),
    );
    workers.length = 0;
    await checkAllClosed(connections);
  } finally {
    await stopAll(workers);
  }
});
