import { createClient, WatchError } from "redis";
import { afterEach, describe, test } from "vitest";
import {
  call,
  check,
  checkClient,
  ctx,
  eventually,
  fail,
  failIfNotWritten,
  fresh,
  freshKey,
  key,
  LEARNER_CLIENT,
  learnerClient,
  learnerConnections,
  loadExercise,
  type Redis,
  restrictedLearnerClient,
  settled,
  sleep,
  until,
  within,
} from "../kit.ts";
import { heldWithTimers, timersFired } from "../own-timers.ts";
import { expectRefusedSubscribeCleanedUp } from "../refused-subscribe.ts";
import { hearDropErrors, hearEscapedErrors, hearUnheardErrors } from "../unheard-errors.ts";
import {
  describeUnsubscribes,
  subscribedOn,
  unsubscribedElsewhere,
} from "../unsubscribed-elsewhere.ts";
import {
  allLearnerAddrs,
  before as beforeCommand,
  deliverTogether,
  dropConnection,
  learnerAddrs,
  openedSince,
  openLearnerConnections,
  type SentCommand,
  scope,
  sent,
} from "../wire.ts";
import { heldUntilReleased } from "../worker-stop.ts";

type Stop = () => Promise<void>;

interface Exercise {
  acquireLease(client: Redis, leaseKey: string, worker: string, ttlMs: number): Promise<boolean>;
  renewLease(client: Redis, leaseKey: string, worker: string, ttlMs: number): Promise<boolean>;
  enableExpiredEvents(client: Redis): Promise<void>;
  watchExpiredLeases(
    client: Redis,
    leasePrefix: string,
    onExpired: (docId: string) => void,
  ): Promise<Stop>;
}

// This lesson's lesson.json says needsPrivateServer: CONFIG SET is fine here.
const exercise = await loadExercise<Exercise>(
  "acquireLease",
  "renewLease",
  "enableExpiredEvents",
  "watchExpiredLeases",
);

/**
 * A fresh prefix per run: a learner who hard-codes "lease:" reports nothing. It holds what a
 * regular expression reads as syntax (. + ( )) and a letter outside ASCII: a RegExp built from
 * it, or a key decoded as Latin-1, matches no lease.
 */
const LEASES = `${freshKey("lease")}.v2+(ü):`;
/** Leases the lease tests take: expiring later, they are none of the watcher tests' business. */
const HELD = `${freshKey("held")}:`;
const EVENTS = "notify-keyspace-events";

const cleanup: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  // A stop() that hangs must not take the remaining tests down with it.
  for (const undo of cleanup.splice(0).reverse())
    await Promise.race([undo(), sleep(2000)]).catch(() => {});
});

async function flags(observer: Redis): Promise<string> {
  return (await observer.configGet(EVENTS))[EVENTS] ?? "";
}

/**
 * Turns expired events on the way the lesson teaches, if the learner's function does not, and
 * puts the server's setting back after the test.
 */
async function ensureExpiredEvents(observer: Redis): Promise<void> {
  const current = await flags(observer);
  cleanup.push(() => observer.configSet(EVENTS, current));
  if (!/E/.test(current) || !/[xA]/.test(current)) await observer.configSet(EVENTS, `${current}Ex`);
}

/** The letters of a notify-keyspace-events value, A spelt out as the families it stands for. */
function letters(value: string): Set<string> {
  return new Set(value.replace(/A/g, "g$lshzxetd"));
}

/**
 * enableExpiredEvents() turned `before` into `after`: fails when it turned on more than E and x.
 * Every letter costs CPU on every matching change, on the whole server.
 */
function checkOnlyEx(before: string, after: string): void {
  const wanted = letters(`${before}Ex`);
  const extra = [...letters(after)].filter((letter) => !wanted.has(letter));
  const named = extra.map((l) => `"${l}"`).join(", ");
  check(
    extra.length === 0,
    `notify-keyspace-events was "${before}" and your enableExpiredEvents() left it "${after}": it also turned on ${/A/.test(after) && !/A/.test(before) ? `A, and so ${named},` : named}, which this lesson does not need. Redis then publishes an event for every matching change of every key on the server (K: one more message per event, on the __keyspace@<db>__ channels; A: every command family), and each costs CPU. Add only E and x, the ones that are missing, and keep the rest as it was.`,
    2,
  );
}

async function watch(client: Redis, onExpired: (docId: string) => void): Promise<Stop> {
  const stop = await call("watchExpiredLeases()", () =>
    exercise.watchExpiredLeases(client, LEASES, onExpired),
  );
  check(
    typeof stop === "function",
    `watchExpiredLeases() should return a stop() function; it returned ${typeof stop}.`,
    2,
  );
  let stopped = false;
  const once: Stop = async () => {
    if (stopped) return;
    stopped = true;
    await stop();
  };
  cleanup.push(once);
  return once;
}

/** Starts a watcher; returns the local addresses of the connections it opened. */
async function watchOpening(client: Redis, onExpired: (docId: string) => void): Promise<string[]> {
  const before = allLearnerAddrs();
  await watch(client, onExpired);
  return openedSince(before);
}

/** Lets each of `leaseKeys` expire, and makes Redis notice now rather than at its next sample. */
async function expireNow(observer: Redis, ...leaseKeys: string[]): Promise<void> {
  for (const leaseKey of leaseKeys) {
    await observer.set(leaseKey, "ocr-worker", { expiration: { type: "PX", value: 5 } });
  }
  await sleep(10);
  for (const leaseKey of leaseKeys) await observer.get(leaseKey);
}

/** Whether a command touches `leaseKey` (a script names it among its keys, so it counts). */
const touches = (leaseKey: string) => (c: SentCommand) => c.args.slice(1).includes(leaseKey);

/** Commands that (re)write a lease's holder or expiry. */
const LEASE_WRITES = new Set([
  "PEXPIRE",
  "EXPIRE",
  "PEXPIREAT",
  "EXPIREAT",
  "SET",
  "PSETEX",
  "SETEX",
]);

/**
 * Calls acquireLease() while a rival makes its move just before the learner's second command
 * that `match` selects (a look, then a write), if the learner's code sends one. Returns what
 * acquireLease() returned and whether the rival's SET NX took the lease.
 */
async function acquireAgainstRival(
  client: Redis,
  lease: string,
  worker: string,
  ttlMs: number,
  match: (c: SentCommand) => boolean,
  rivalMove: () => Promise<string | null>,
): Promise<{ taken: boolean; rivalTook: boolean }> {
  let rivalTook = false;
  const race = beforeCommand(
    match,
    async () => {
      rivalTook = (await rivalMove()) === "OK";
    },
    { nth: 2 },
  );
  try {
    const taken = await call("acquireLease()", () =>
      exercise.acquireLease(client, lease, worker, ttlMs),
    );
    return { taken, rivalTook };
  } finally {
    race.cancel();
  }
}

/**
 * The lease's TTL, `since` the call that set it started: never above the asked TTL, and below
 * it by no more than the time that has passed since.
 */
async function checkNearTtl(
  observer: Redis,
  lease: string,
  since: number,
  asked: number,
  what: string,
  hint: number,
): Promise<void> {
  const ttl = await observer.pTTL(lease);
  const floor = asked - (Date.now() - since) - 5;
  const why =
    ttl === -1
      ? ": no expiry at all"
      : ttl === -2
        ? ": the key does not exist"
        : ttl > asked * 500
          ? ", about a thousand times more than asked: EXPIRE and EX take seconds, PEXPIRE and PX milliseconds"
          : ttl > asked && ttl <= Math.ceil(asked / 1000) * 1000 && ttl % 1000 > 900
            ? ": whole seconds, more than asked. EX and EXPIRE round to seconds: use PX or PEXPIRE with the ttlMs passed in"
            : ttl > asked
              ? ": more than asked. Use the ttlMs passed in"
              : ttl < floor
                ? ": less than asked. Use the ttlMs passed in"
                : "";
  check(
    ttl >= floor && ttl <= asked,
    `${what} should leave the lease with about ${asked} ms to live; PTTL says ${ttl}${why}.`,
    hint,
  );
}

describe("leases", () => {
  test("acquireLease() takes a free lease, with a TTL near the asked one, and only once", async () => {
    const client = await learnerClient();
    const observer = await checkClient();
    const lease = `${HELD}contract-17`;
    const [first, second] = [fresh("ocr-worker"), fresh("ocr-worker")];
    const since = Date.now();
    const taken = await call("acquireLease()", () =>
      exercise.acquireLease(client, lease, first, 4500),
    );
    check(
      taken === true,
      `The lease was free, so acquireLease() should return true; it returned ${JSON.stringify(taken)}.`,
      2,
    );
    const holder = await observer.get(lease);
    check(
      holder === first,
      `The lease key should hold the worker's name, "${first}"; it holds ${JSON.stringify(holder)}.`,
      2,
    );
    // Not a whole number of seconds: a TTL given in seconds (EX, EXPIRE) cannot hit it.
    await checkNearTtl(observer, lease, since, 4500, "acquireLease(..., 4500)", 2);
    const again = await call("acquireLease()", () =>
      exercise.acquireLease(client, lease, second, 9000),
    );
    const after = await observer.get(lease);
    check(
      again === false && after === first,
      `The lease was already held by ${first}, yet acquireLease() for ${second} returned ${JSON.stringify(again)} and the holder is now ${JSON.stringify(after)}. Two workers would process contract-17 at once: SET it with NX, only if it does not exist.`,
      2,
    );
    // A failed attempt must change nothing: a SETNX and PEXPIRE in one MULTI still runs the
    // PEXPIRE when the SETNX found the lease taken, and stretches the holder's lease.
    const ttlAfter = await observer.pTTL(lease);
    check(
      ttlAfter <= 4500,
      `acquireLease(..., 9000) for ${second} found the lease held by ${first} and returned false, but it changed that lease's expiry: PTTL is now ${ttlAfter}, more than the 4500 ms ${first} asked for. A stalled holder would keep the document longer than it asked. A command that sets the expiry apart from the NX (SETNX then PEXPIRE, even inside MULTI) runs whether or not the lease was free: take it with one command, SET key worker NX PX ttl.`,
      2,
    );
  });

  test("acquireLease() is one step: a worker that dies during it leaves no lease without expiry", async () => {
    const observer = await checkClient();
    const lease = `${HELD}nda-9`;
    const worker = scope("worker");
    const client = await worker.run(() => learnerClient());
    // The worker dies just before its second command on the lease, if it sends one.
    const death = beforeCommand(touches(lease), "crash", { nth: 2 });
    let died = false;
    void death.fired.then(() => {
      died = true;
    });
    try {
      await worker
        .run(() =>
          call(
            "acquireLease()",
            () => exercise.acquireLease(client, lease, fresh("ocr-worker"), 5000),
            3000,
          ),
        )
        .catch((error: unknown) => failIfNotWritten(error));
    } finally {
      death.cancel();
    }
    if (!died) return;
    const ttl = await observer.pTTL(lease);
    check(
      ttl !== -1,
      `Your acquireLease() took the lease in more than one command, and the check stopped the worker between them, as a crash would: the lease key was left with no expiry (PTTL -1), so the document would stay blocked forever. Take it with one command, SET key worker NX PX ttl: a lease then never exists without its expiry.`,
      2,
    );
  });

  test("acquireLease() leaves a rival's lease alone, even one taken while it works", async () => {
    const observer = await checkClient();
    const client = await learnerClient();
    const lease = `${HELD}lease-12`;
    const rival = fresh("ocr-worker");
    // A rival takes the lease right before the learner's second command on it, if there is one.
    const { taken, rivalTook } = await acquireAgainstRival(
      client,
      lease,
      fresh("ocr-worker"),
      5000,
      touches(lease),
      () =>
        observer.set(lease, rival, { condition: "NX", expiration: { type: "PX", value: 5000 } }),
    );
    const holder = await observer.get(lease);
    check(
      !rivalTook || (holder === rival && taken === false),
      `Your acquireLease() looked at the lease and then wrote it with a separate command; in between, a rival took it (SET NX succeeded for ${rival}). Your code then returned ${JSON.stringify(taken)} and the holder is now ${JSON.stringify(holder)}: it overwrote a lease it did not hold, and two workers would process the document at once. Take it with one command, SET key worker NX PX ttl.`,
      2,
    );
  });

  test("acquireLease() by the holder itself leaves the lease alone when it changes hands meanwhile", async () => {
    const observer = await checkClient();
    const client = await learnerClient();
    const lease = `${HELD}lease-31`;
    const [worker, rival] = [fresh("ocr-worker"), fresh("ocr-worker")];
    await observer.set(lease, worker, { expiration: { type: "PX", value: 4000 } });
    // A second write on the lease (say a PEXPIRE after a GET found the worker's own name): just
    // before it, the worker's lease expires and a rival takes it.
    const { taken, rivalTook } = await acquireAgainstRival(
      client,
      lease,
      worker,
      9000,
      (c) => touches(lease)(c) && LEASE_WRITES.has(c.name),
      async () => {
        await observer.del(lease);
        return observer.set(lease, rival, {
          condition: "NX",
          expiration: { type: "PX", value: 3000 },
        });
      },
    );
    if (!rivalTook) return;
    const [holder, ttl] = [await observer.get(lease), await observer.pTTL(lease)];
    check(
      holder === rival && ttl <= 3000 && taken === false,
      `${worker} already held the lease and called acquireLease() again; your code wrote the lease a second time (after its SET NX found it taken), and just before that second write the lease expired and ${rival} took it for 3000 ms. Afterwards the holder is ${JSON.stringify(holder)} with PTTL ${ttl}, and acquireLease() returned ${JSON.stringify(taken)}: it stretched or took a lease it no longer held. acquireLease() is one SET key worker NX PX ttl and nothing more; keeping a lease you hold is renewLease()'s job, checked and extended in one step.`,
      2,
    );
  });

  test("a timeout of acquireLease()'s or renewLease()'s own never answers before Redis does", async () => {
    const observer = await checkClient();
    const client = await learnerClient();
    const steps = [
      { name: "acquireLease()", lease: `${HELD}own-timeout-1`, take: undefined },
      { name: "renewLease()", lease: `${HELD}own-timeout-2`, take: fresh("ocr-worker") },
    ];
    for (const step of steps) {
      const worker = step.take ?? fresh("ocr-worker");
      if (step.take) {
        await observer.set(step.lease, worker, { expiration: { type: "PX", value: 5000 } });
      }
      // Its first command on the lease held at the socket while every timer your file started
      // fires at once: a race against a timer is lost here whatever its length, and nobody
      // waits for it.
      const run = await heldWithTimers(touches(step.lease), () =>
        step.take
          ? exercise.renewLease(client, step.lease, worker, 6000)
          : exercise.acquireLease(client, step.lease, worker, 6000),
      );
      const answer = run.whileHeld && "value" in run.whileHeld ? run.whileHeld.value : undefined;
      check(
        !(run.answeredEarly && answer !== undefined),
        `${step.name} returned ${JSON.stringify(answer)} while Redis had not answered it yet: the check held its command on the lease back and made ${timersFired(run.fired)} that your code had started fire early (a busy server or network is always slower than some limit you pick). That answer is a guess: the command still runs when it gets through, so ${step.name} can say ${answer ? "the worker holds a lease it may not hold, and two workers process the document at once" : "the worker lost a lease it then holds, and nobody works on the document until the lease expires"}. Await the command itself; if you want a time limit, let ${step.name} reject so the caller knows the answer is unknown.`,
        2,
      );
    }
  });

  test("renewLease() extends the lease of its holder only, to about the asked TTL", async () => {
    const client = await learnerClient();
    const observer = await checkClient();
    const lease = `${HELD}nda-4`;
    const [holder, stranger] = [fresh("ner-worker"), fresh("ner-worker")];
    await observer.set(lease, holder, { expiration: { type: "PX", value: 1000 } });
    const open = openLearnerConnections();
    const stolen = await call("renewLease()", () =>
      exercise.renewLease(client, lease, stranger, 60_000),
    );
    const ttlAfterStranger = await observer.pTTL(lease);
    check(
      ttlAfterStranger <= 1000,
      `renewLease() for ${stranger} extended a lease held by another worker (${holder}): it returned ${JSON.stringify(stolen)} and PTTL is now ${ttlAfterStranger}. Check the holder and extend in one atomic step: a short Lua script with EVAL.`,
      3,
    );
    check(
      stolen === false,
      `renewLease() for ${stranger}, who does not hold the lease, left it alone (PTTL ${ttlAfterStranger}, holder still ${holder}) but returned ${JSON.stringify(stolen)}: it reported a renewal that did not happen. Return true only when the lease was extended: a script like the lesson's answers 0, not null, when the holder differs, so test for the reply 1 (reply === 1).`,
      3,
    );
    const since = Date.now();
    const renewed = await call("renewLease()", () =>
      exercise.renewLease(client, lease, holder, 59_500),
    );
    check(
      renewed === true,
      `renewLease() by the holder should extend the lease and return true; it returned ${JSON.stringify(renewed)}.`,
      3,
    );
    await checkNearTtl(observer, lease, since, 59_500, "renewLease(..., 59500)", 3);
    // A worker that knows its task ends soon renews for less than what is left: the lease
    // gets ttlMs from now, as asked, not the longer of the two.
    const shortSince = Date.now();
    const shortened = await call("renewLease()", () =>
      exercise.renewLease(client, lease, holder, 2000),
    );
    const shortTtl = await observer.pTTL(lease);
    check(
      shortened === true && shortTtl <= 2000,
      `renewLease(..., 2000) by the holder, on a lease with about 59 s left, returned ${JSON.stringify(shortened)} and left PTTL ${shortTtl}: a renewal sets the lease to ttlMs from now, also when that is shorter than what is left. PEXPIRE with GT (or a script that keeps the longer TTL) refuses to shorten; use a plain PEXPIRE with the ttlMs passed in.`,
      3,
    );
    await checkNearTtl(observer, lease, shortSince, 2000, "renewLease(..., 2000)", 3);
    const gone = await call("renewLease()", () =>
      exercise.renewLease(client, `${HELD}never-taken`, holder, 1000),
    );
    check(gone === false, "renewLease() of a lease nobody holds should return false.", 3);
    // Four renewals, two of them refused: a connection opened per call (for WATCH) and not
    // closed on every path piles up.
    await eventually(
      () => openLearnerConnections() <= open,
      1000,
      `After four renewLease() calls (two of them refused: a stranger's, and one on a lease nobody holds) your code still had ${openLearnerConnections() - open} more connection(s) open than before them: renewals open connections and leave them open, so a worker renewing every few seconds runs the server out of connections. Close a connection you opened for WATCH on every path, the refused ones included (in a finally), or renew with a script on the client you were given.`,
      3,
    );
  });

  test("renewLease() does not extend a lease that changed hands while it was checking", async () => {
    const client = await learnerClient();
    const observer = await checkClient();
    await renewDuringHandover(observer, [{ client, lease: `${HELD}memo-8`, handedOver: true }]);
  });

  test("renewLease() keeps each lease's check when one client renews two leases at once", async () => {
    // A service renews all its leases through one client: a WATCH on that shared connection is
    // cleared by whichever EXEC comes first, leaving the other renewal unguarded.
    const client = await learnerClient();
    const observer = await checkClient();
    await renewDuringHandover(observer, [
      { client, lease: `${HELD}memo-21`, handedOver: false },
      { client, lease: `${HELD}memo-22`, handedOver: true },
    ]);
  });
});

/** renewLease(), with a WatchError that escapes it explained: the lease changed hands, so false. */
async function renewOrExplain(
  client: Redis,
  lease: string,
  worker: string,
  ttlMs: number,
): Promise<boolean> {
  try {
    return await exercise.renewLease(client, lease, worker, ttlMs);
  } catch (error) {
    if (!(error instanceof WatchError)) throw error;
    fail(
      `Your renewLease() WATCHed the lease, and the check let it change hands before your EXEC: EXEC refused to run, as it should, but the WatchError it threw came out of renewLease(). A lease that changed hands is an answer, not an error: catch it and return false. Test it with error instanceof WatchError (import { WatchError } from "redis"): node-redis does not set error.name, so error.name === "WatchError" never matches.`,
      3,
    );
  }
}

/**
 * Renews each lease (held by a fresh worker for 5000 ms) at the same time; just before the
 * learner's code extends a `handedOver` lease with a separate command, that lease expires and a
 * rival takes it, as a long GC pause or a slow network between two commands allows.
 */
async function renewDuringHandover(
  observer: Redis,
  renewals: { client: Redis; lease: string; handedOver: boolean }[],
): Promise<void> {
  const runs = renewals.map((r) => ({
    ...r,
    holder: fresh("ner-worker"),
    rival: fresh("ner-worker"),
  }));
  for (const r of runs)
    await observer.set(r.lease, r.holder, { expiration: { type: "PX", value: 5000 } });
  const handovers = runs
    .filter((r) => r.handedOver)
    .map((r) => {
      const seen: { write?: string; earlier: string[] } = { earlier: [] };
      const rule = beforeCommand(
        (c) => LEASE_WRITES.has(c.name) && touches(r.lease)(c),
        async (write) => {
          seen.earlier = sent((c) => c.seq < write.seq && touches(r.lease)(c)).map((c) => c.name);
          seen.write = write.name;
          await observer.del(r.lease);
          await observer.set(r.lease, r.rival, { expiration: { type: "PX", value: 5000 } });
        },
      );
      return { r, seen, rule };
    });
  let renewed: boolean[] = [];
  try {
    renewed = await call("renewLease()", () =>
      Promise.all(runs.map((r) => renewOrExplain(r.client, r.lease, r.holder, 60_000))),
    );
  } finally {
    for (const h of handovers) h.rule.cancel();
  }
  const together =
    runs.length > 1
      ? ` It renewed ${runs.length} leases at once on the same client; a WATCH belongs to a connection and the first EXEC clears every WATCH on it, so watch on a connection of your own per renewal (or use a script).`
      : "";
  for (const { r, seen } of handovers) {
    const ttl = await observer.pTTL(r.lease);
    const now = await observer.get(r.lease);
    const renewedIt = renewed[runs.indexOf(r)];
    if (seen.write && (ttl > 5000 || now !== r.rival)) {
      const steps = seen.earlier.length
        ? `checked the holder (${seen.earlier.join(", ")}) and then extended the lease with a separate ${seen.write}`
        : `extended the lease with ${seen.write} without checking the holder in the same step`;
      fail(
        `Your renewLease() ${steps}. Just before that ${seen.write} the check let the lease expire and ${r.rival} take it; your ${seen.write} then changed ${r.rival}'s lease (holder now ${JSON.stringify(now)}, PTTL ${ttl}; renewLease() returned ${JSON.stringify(renewedIt)}).${together} Check and extend in one atomic step: a Lua script with EVAL (or WATCH the key and extend inside MULTI).`,
        3,
      );
    }
    if (seen.write) {
      check(
        renewedIt === false,
        `The lease changed hands before your renewLease() extended it, so it should return false; it returned ${JSON.stringify(renewedIt)}.`,
        3,
      );
    }
  }
  for (const r of runs.filter((r) => !r.handedOver)) {
    const i = runs.indexOf(r);
    check(
      renewed[i] === true && (await observer.get(r.lease)) === r.holder,
      `renewLease() for ${r.holder}, who held ${r.lease} throughout, should extend it and return true; it returned ${JSON.stringify(renewed[i])}.${together}`,
      3,
    );
  }
}

describe("keyspace notifications", () => {
  test("enableExpiredEvents() turns on expired key events and keeps other flags", async () => {
    const client = await learnerClient();
    const observer = await checkClient();
    const original = await flags(observer);
    cleanup.push(() => observer.configSet(EVENTS, original));
    // Another part of the system already follows list events on keyspace channels.
    await observer.configSet(EVENTS, "Kl");
    // The CONFIG SET is held on its way for a few turns of the event loop, and then, if
    // enableExpiredEvents() has returned meanwhile, until the check has read the setting. A
    // function that awaits its CONFIG SET cannot return before it left; one that sent it
    // without await returns before node-redis even writes it, and then the check reads the
    // setting before Redis has seen the change, every run.
    let returned = false;
    const { promise: readDone, release: read } = heldUntilReleased();
    const holdSet = beforeCommand(
      (c) => c.name === "CONFIG" && /^set$/i.test(c.args[1] ?? "") && c.args.includes(EVENTS),
      async () => {
        for (let turn = 0; turn < 5; turn++) await new Promise((r) => setImmediate(r));
        if (returned) await Promise.race([readDone, sleep(5000)]);
      },
    );
    let now: string;
    let leftBeforeReturn: boolean;
    try {
      await call("enableExpiredEvents()", () => exercise.enableExpiredEvents(client));
      returned = true;
      leftBeforeReturn = holdSet.hasFired();
      // One sent without await leaves on a later turn of the event loop.
      if (!leftBeforeReturn) await until(() => holdSet.hasFired(), 1000);
      now = await flags(observer);
    } finally {
      read();
      holdSet.cancel();
    }
    check(
      leftBeforeReturn || !holdSet.hasFired(),
      `Your enableExpiredEvents() returned before its CONFIG SET had even left for Redis, so the setting was not on yet when it returned ("${now}"): it was sent without await. Whoever calls it next (a watcher, a lease with a short TTL) may run before the setting is on, and a refused CONFIG SET (managed Redis services such as Azure Cache for Redis refuse it) rejects where nobody listens. Await the CONFIG SET before returning.`,
      2,
    );
    check(
      /E/.test(now) && /[xA]/.test(now),
      `notify-keyspace-events is now "${now}": the __keyevent@<db>__:expired channel needs E (publish keyevent channels) and x (expired events). K only turns on the __keyspace@<db>__ channels.`,
      2,
    );
    check(
      /K/.test(now) && /[lA]/.test(now),
      `notify-keyspace-events was "Kl" and is now "${now}": you dropped flags another part of the system relies on. Read the current value with CONFIG GET and add your flags to it.`,
      2,
    );
    checkOnlyEx("Kl", now);
    // x is on already, E is not: both letters are needed, each checked on its own.
    await observer.configSet(EVENTS, "Kx");
    const beforeSecond = sent().at(-1)?.seq ?? 0;
    await call("enableExpiredEvents()", () => exercise.enableExpiredEvents(client));
    const later = await flags(observer);
    // A second call that sends no CONFIG at all, not even the GET, remembered the first one (a
    // flag in the module): the setting has changed since, as another part of the system (or a
    // Redis restart) may change it.
    const lookedAgain = sent((c) => c.seq > beforeSecond && c.name === "CONFIG");
    check(
      lookedAgain.length > 0 || (/E/.test(later) && /x|A/.test(later)),
      `The check set notify-keyspace-events to "Kx" (as another part of the system, or a Redis restart, may do) and called enableExpiredEvents() a second time in the same process; it sent no CONFIG command this time (no GET, no SET), and the setting stays "${later}", without E. It remembered its first call (a flag outside the function?) instead of looking again. Read the setting with CONFIG GET on every call and set what is missing.`,
      2,
    );
    check(
      /E/.test(later) && /x|A/.test(later) && /K/.test(later),
      `notify-keyspace-events was "Kx" (expired events on the keyspace channels only) and your enableExpiredEvents() left it "${later}": the __keyevent@<db>__:expired channel needs E as well. Add each letter that is missing (E and x), even when the other one is on already, and keep the rest.`,
      2,
    );
    checkOnlyEx("Kx", later);
    // E is on already, x is not: the keyevent channels exist, but no expired event reaches them.
    // And "$" (string commands) is a letter too, not punctuation to clean away.
    await observer.configSet(EVENTS, "E$");
    await call("enableExpiredEvents()", () => exercise.enableExpiredEvents(client));
    const third = await flags(observer);
    check(
      /x|A/.test(third) && /E/.test(third),
      `notify-keyspace-events was "E$" (keyevent channels for string commands only) and your enableExpiredEvents() left it "${third}": without x no expired event is published at all. Add each letter that is missing (E and x), whichever of them is on already, and keep the rest.`,
      2,
    );
    check(
      /\$|A/.test(third),
      `notify-keyspace-events was "E$" (keyevent channels for string commands) and your enableExpiredEvents() left it "${third}": the "$" is gone, and another part of the system relies on it. "$" is one of the flags (string commands): keep every character CONFIG GET returned and add yours.`,
      2,
    );
    checkOnlyEx("E$", third);
    // A (every command family) is on: whatever you add, the families it stands for stay on.
    await observer.configSet(EVENTS, "AK");
    await call("enableExpiredEvents()", () => exercise.enableExpiredEvents(client));
    const fourth = await flags(observer);
    check(
      /A/.test(fourth) && /K/.test(fourth) && /E/.test(fourth),
      `notify-keyspace-events was "AK" (keyspace events of every command family) and your enableExpiredEvents() left it "${fourth}": ${/E/.test(fourth) ? "the command families that A stands for (g$lshzxetd) are no longer all on, and another part of the system relies on them" : "E is missing"}. Keep every letter that was set, A included, and add the ones that are missing.`,
      2,
    );
    checkOnlyEx("AK", fourth);
    // m (key misses) and n (new keys) are letters too, outside A: a list of the letters one
    // knows, used to clean the value up, drops them.
    await observer.configSet(EVENTS, "Km");
    await call("enableExpiredEvents()", () => exercise.enableExpiredEvents(client));
    const fifth = await flags(observer);
    check(
      /K/.test(fifth) && /m/.test(fifth) && /E/.test(fifth),
      `notify-keyspace-events was "Km" (key-miss events on the keyspace channels) and your enableExpiredEvents() left it "${fifth}": ${/E/.test(fifth) ? "a letter that was set is gone, and another part of the system relies on it. m (key misses) and n (new keys) are flags too, and A does not include them: keep every character CONFIG GET returned, whatever it is, and add only E and x." : "E is missing."}`,
      2,
    );
    checkOnlyEx("Km", fifth);
  });

  test.skipIf(!ctx.privateServer)(
    "enableExpiredEvents() rejects when Redis refuses its CONFIG SET",
    async () => {
      const observer = await checkClient();
      const original = await flags(observer);
      cleanup.push(() => observer.configSet(EVENTS, original));
      // Nothing on yet, so there is something to set; an account that may read the setting
      // but not change it, as on a managed service that disables CONFIG SET.
      await observer.configSet(EVENTS, "");
      const client = await restrictedLearnerClient(["-config|set"]);
      const outcome = await within(
        settled(exercise.enableExpiredEvents(client)),
        5000,
        "enableExpiredEvents() as an account Redis refuses CONFIG SET",
      );
      check(
        "error" in outcome,
        `enableExpiredEvents() resolved although Redis refused its CONFIG SET (this account may not run it, as on managed services such as Azure Cache for Redis): notify-keyspace-events is still "${await flags(observer)}", so no expiry will ever be reported, and the caller was told all is well. Let the error reach the caller: it is the only one who can say "turn it on in the portal" or stop.`,
        2,
      );
    },
  );

  test("an expired lease is reported with its document id; a renewed one is not", async () => {
    const client = await learnerClient();
    const observer = await checkClient();
    await ensureExpiredEvents(observer);
    // Another part of the system follows generic commands (g: DEL, RENAME, ...) on the keyevent
    // channels too: a lease deleted by a worker that finished must not look like an expiry.
    await observer.configSet(EVENTS, `${await flags(observer)}g`);
    const expired: string[] = [];
    // The subscription is held on its way to Redis for a moment: a watchExpiredLeases() that
    // awaits it cannot resolve meanwhile.
    let watching = false;
    let resolvedFirst = false;
    let judged: Promise<void> | undefined;
    // Which connection is the caller's: the one this marker goes out on.
    const marker = fresh("caller");
    await client.sendCommand(["ECHO", marker]);
    const caller = sent((c) => c.name === "ECHO" && c.args[1] === marker)[0];
    const hold = beforeCommand(
      (c) => /^P?SUBSCRIBE$/.test(c.name),
      () => {
        judged = sleep(150).then(() => {
          resolvedFirst = watching;
        });
        return judged;
      },
    );
    try {
      await watch(client, (docId) => expired.push(docId));
      watching = true;
      await until(() => hold.hasFired(), 200);
    } finally {
      hold.cancel();
    }
    await judged;
    check(
      !resolvedFirst,
      "watchExpiredLeases() resolved before Redis had confirmed its subscription (the check held the SUBSCRIBE back for a moment): a lease expiring right after it returns would go unreported. await the subscribe() before returning.",
      2,
    );
    const onCaller = sent((c) => c.seq > (caller?.seq ?? 0) && /^P?SUBSCRIBE$/.test(c.name)).find(
      (c) => c.conn === caller?.conn,
    );
    check(
      !onCaller,
      `watchExpiredLeases() sent ${onCaller?.name} ${onCaller?.args.slice(1).join(" ")} on the client it was given, not on a connection of its own. node-redis on RESP3 lets that client go on, but the rest of the service shares it: on a RESP2 connection it could send nothing but (P)SUBSCRIBE and PING any more, a blocking read on it would hold your expiry events back, and a stop() that closes the subscriber would close everyone's client. Subscribe on client.duplicate() (connect it, give it an error listener) and close that one in stop().`,
      2,
    );

    // Another worker takes a lease and keeps renewing it: it must outlive its first 400 ms.
    const busy = `${LEASES}contract-busy`;
    await observer.set(busy, "ocr-worker-2", { expiration: { type: "PX", value: 400 } });
    cleanup.push(() => observer.del(busy));
    // The SET has been answered: by this time its own 400 ms are over.
    const lapsed = Date.now() + 400;
    let stopRenewing = false;
    const renewing = settled(
      (async () => {
        // Renewed past its first 400 ms, and until the stalled lease is reported (3 s at most).
        const renewingNow = () =>
          !stopRenewing &&
          (Date.now() < lapsed + 20 || (expired.length === 0 && Date.now() < lapsed + 2600));
        while (renewingNow()) {
          const renewed = await call("renewLease()", () =>
            exercise.renewLease(client, busy, "ocr-worker-2", 400),
          );
          check(renewed === true, "renewLease() by the lease's holder should return true.", 3);
          const left = lapsed + 20 - Date.now();
          await sleep(left > 0 ? Math.min(100, left) : 100);
        }
      })(),
    );
    // A test that fails before the end stops the renewals; the lease is deleted after them.
    cleanup.push(async () => {
      stopRenewing = true;
      await renewing;
    });
    // A worker finished its document and deleted its lease: done, not stalled.
    const done = `${LEASES}contract-done`;
    await observer.set(done, "ocr-worker-3", { expiration: { type: "PX", value: 60_000 } });
    await observer.del(done);
    // Redis evicted a lease to free memory (maxmemory with a volatile policy picks keys with a
    // TTL first), and publishes it as it does with e on (A includes it): the worker has not
    // stalled, it still works and learns at its next renewal that the lease is gone.
    const evicted = "contract-evicted";
    await observer.publish(
      `__keyevent@${client.options?.database ?? 0}__:evicted`,
      `${LEASES}${evicted}`,
    );
    // The stalled lease, the cache entry and an archived copy (it holds the lease prefix, but
    // not at its start: not a lease) run out now, and Redis notices at once.
    await expireNow(
      observer,
      `${LEASES}acme:contract-stalled`,
      key("cache:acme:contract-stalled"),
      `${key("archive:")}${LEASES}contract-copy`,
    );
    const renewal = await renewing;
    if ("error" in renewal) throw renewal.error;
    // Its first 400 ms are over: a lease renewLease() did not extend is gone by now, whether
    // Redis has published its expiry yet or not.
    check(
      (await observer.exists(busy)) === 1,
      `The worker of contract-busy renewed its lease with renewLease(..., 400) every 100 ms, and each call returned true, yet the lease was gone once its first 400 ms were over: the lease was not renewed (renewLease() must extend it with PEXPIRE).`,
      3,
    );
    await eventually(
      () => expired.length > 0,
      3000,
      `The lease of acme:contract-stalled (key ${LEASES}acme:contract-stalled) expired, but onExpired() was never called. Subscribe to __keyevent@<db>__:expired (with the database number of the client) on a duplicate connection, make sure notify-keyspace-events has E and x, and keep the keys that start with the leasePrefix you were given (here ${LEASES}). That prefix is a literal with . + ( ) and a ü in it: test it with key.startsWith(leasePrefix), not with a RegExp built from it, and take each message as the UTF-8 string node-redis hands you.`,
      2,
    );
    if (expired.some((docId) => docId.startsWith(LEASES))) {
      fail(
        `onExpired() received "${expired[0]}": the expired key's full name. Strip the lease prefix and report the document id, "acme:contract-stalled".`,
        2,
      );
    }
    check(
      !expired.includes("contract-done"),
      `onExpired() reported contract-done, whose lease a worker took and then deleted when it finished: that lease never expired. With g on (as here), taking a lease with PX publishes an "expire" event and deleting it a "del" event, each on its own keyevent channel: only __keyevent@<db>__:expired means a stalled worker. Subscribe to exactly that channel, not to a pattern.`,
      2,
    );
    check(
      !expired.includes(evicted),
      `onExpired() reported ${evicted}, a lease Redis evicted to free memory (an "evicted" event on __keyevent@<db>__:evicted), not one that expired. Its worker has not stalled: it is still working, and learns at its next renewal that the lease is gone. Requeue it and two workers run the same document. Only __keyevent@<db>__:expired means a worker stopped renewing: subscribe to that channel alone.`,
      2,
    );
    check(
      !expired.includes("contract-busy"),
      "onExpired() reported contract-busy, whose worker renewed its lease in time: the lease was not renewed (renewLease() must extend it with PEXPIRE).",
      3,
    );
    check(
      expired.length === 1 && expired[0] === "acme:contract-stalled",
      `Only the lease of acme:contract-stalled expired, so onExpired() should have been called once with "acme:contract-stalled"; it got ${JSON.stringify(expired)}. Keys that are not leases (a cache entry, an archived copy whose name holds the prefix further in) are not your business: check the prefix (keep the keys that start with it) and report everything after it, colons included.`,
      2,
    );
  });

  test("a watcher whose onExpired throws loses no expiry that came with it", async () => {
    const client = await learnerClient();
    const observer = await checkClient();
    await ensureExpiredEvents(observer);
    const expired: string[] = [];
    const thrown = "onExpired() threw on purpose (the check's simulated failed requeue).";
    const isThrown = (e: unknown) => e instanceof Error && e.message === thrown;
    const unheard = hearUnheardErrors(isThrown);
    const escaped = hearEscapedErrors(isThrown);
    const burst = ["scan-first", "scan-second", "scan-third"];
    try {
      const opened = await watchOpening(client, (docId) => {
        expired.push(docId);
        // The requeue of the first stalled document fails: the watcher must outlive it.
        if (expired.length === 1) throw new Error(thrown);
      });
      // Leases of workers that stalled together run out together, and their expiries reach the
      // watcher's socket together: the check makes the three share one read.
      await deliverTogether(
        opened,
        burst.map((docId) => `${LEASES}${docId}`),
        () => expireNow(observer, ...burst.map((docId) => `${LEASES}${docId}`)),
      );
      await until(() => expired.length >= burst.length, 2000);
      // The "error" event is emitted in the same turn as the throw: by now it was heard or not.
      // A rejection of an onExpired() called in a promise is reported once the microtasks have
      // run: one more turn lets it reach the hearer, not the runner outside any test.
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      unheard.stop();
      escaped.stop();
    }
    const first = expired[0] ?? "scan-first";
    escaped.expectNone("onExpired", first, "watcher", 2);
    unheard.expectNone("onExpired", first, "watcher", 2);
    check(
      expired.length > 0,
      `The leases of ${burst.join(", ")} expired, but onExpired() was never called.`,
      2,
    );
    if (expired.length === 1) {
      fail(
        `Three leases expired together, and their expiries reached the watcher's connection together, as a burst does. onExpired() threw for the first (the check made it fail, as a requeue can), and the ${burst.length - 1} after it never reached onExpired(): node-redis 6.3 drops the rest of a read when a message listener throws. An error listener hears the exception, but the expiries are gone, and those documents stay stalled. Catch around onExpired() inside your listener (try { onExpired(docId) } catch (error) { log it }), so one failed requeue costs only its own document.`,
        2,
      );
    }
    check(
      burst.every((docId) => expired.includes(docId)),
      `After onExpired() threw for ${first}, the watcher reported ${JSON.stringify(expired)} of the ${burst.length} leases that expired together (${JSON.stringify(burst)}). One failed requeue must not end the watcher.`,
      2,
    );
    await expireNow(observer, `${LEASES}scan-later`);
    await eventually(
      () => expired.includes("scan-later"),
      3000,
      `onExpired() threw for ${first} (the check made it fail, as a requeue can), and after that the lease of scan-later expired without being reported (onExpired() received ${JSON.stringify(expired)}). One failed requeue must not end the watcher: catch around onExpired() inside your listener.`,
      2,
    );
    // scan-second is requeued, taken again, and stalls again: a second expiry, a second report.
    const before = expired.length;
    await expireNow(observer, `${LEASES}scan-second`);
    await eventually(
      () => expired.length > before,
      3000,
      `The lease of scan-second expired a second time (the document was requeued, taken again and stalled again), and onExpired() was not called again (it received ${JSON.stringify(expired)}). Every expiry is a stalled worker: report each one, also for a document reported before; do not remember which ids you already reported.`,
      2,
    );
  });

  test("a watcher whose connection drops says so and keeps reporting", async () => {
    // Reconnecting, as node-redis's defaults do: the watcher's duplicate copies that option.
    const client = await learnerClient(undefined, { reconnect: true });
    const observer = await checkClient();
    await ensureExpiredEvents(observer);
    const expired: string[] = [];
    const opened = await watchOpening(client, (docId) => expired.push(docId));
    // Twice: an error listener added with once() hears the first drop and is gone.
    const drops = hearDropErrors();
    try {
      for (let n = 1; n <= 2; n++) {
        const addrs = learnerAddrs();
        for (const addr of opened) if (addrs.has(addr)) dropConnection(addr);
        // node-redis reconnects and subscribes again by itself; an expiry before that reaches no
        // one, so the check lets the lease run out again until one is reported.
        const docId = `after-drop-${n}`;
        const back = await until(async () => {
          if (expired.includes(docId)) return true;
          await expireNow(observer, `${LEASES}${docId}`);
          return false;
        }, 3000);
        opened.push(...[...learnerAddrs()].filter((a) => !addrs.has(a)));
        drops.expectHeard(
          n,
          "the watcher's connection",
          "watcher",
          'Listen with on("error", ...) on the watcher\'s own connection.',
          2,
        );
        check(
          back,
          `After the check cut the watcher's connection, a lease (${docId}) kept expiring for 3 s and onExpired() never heard of it. node-redis reconnects and subscribes again by itself: keep the watcher's connection open (do not close or quit it in the error listener).`,
          2,
        );
      }
      // Back twice: one more expiry must be reported once. node-redis subscribes again by
      // itself, with the listeners it had; a subscribe() of the learner's own on "ready" adds a
      // second one, and every expiry is then reported twice.
      const docId = "after-both-drops";
      const mark = expired.length;
      await expireNow(observer, `${LEASES}${docId}`);
      await eventually(
        () => expired.slice(mark).includes(docId),
        3000,
        `After node-redis had reconnected the watcher twice, the lease of ${docId} expired and onExpired() did not hear of it within 3 s.`,
        2,
      );
      const reports = expired.slice(mark).filter((d) => d === docId).length;
      check(
        reports === 1,
        `After node-redis had reconnected the watcher twice, the lease of ${docId} expired once and onExpired() was called ${reports} times for it: every expiry is now reported more than once, and each requeues the document again. node-redis subscribes again by itself after a reconnect, with the listeners the connection had; a subscribe() of your own in a "ready" or "connect" listener adds a second listener (or a second subscriber). Leave resubscribing to node-redis.`,
        2,
      );
    } finally {
      drops.stop();
    }
  });

  test("the watcher follows the database its client uses", async () => {
    const observer = await checkClient();
    await ensureExpiredEvents(observer);
    // A learner connection on database 3: its events come on __keyevent@3__:expired.
    const client: Redis = createClient({
      url: ctx.redisUrl,
      database: 3,
      name: LEARNER_CLIENT,
      socket: { reconnectStrategy: false },
    });
    client.on("error", () => {});
    await client.connect();
    cleanup.push(async () => client.destroy());
    // The check's own view of database 3, for the TTL the learner's lease got there.
    const db3 = createClient({
      url: ctx.redisUrl,
      database: 3,
      name: `wb:check:db3:${ctx.runId}`,
      socket: { reconnectStrategy: false },
    });
    db3.on("error", () => {});
    await db3.connect();
    cleanup.push(async () => db3.destroy());
    const expired: string[] = [];
    const from = sent().at(-1)?.seq ?? 0;
    await watch(client, (docId) => expired.push(docId));
    const subscribed = sent((c) => c.seq > from && /^P?SUBSCRIBE$/.test(c.name)).flatMap((c) =>
      c.args.slice(1),
    );

    // A lease with the same prefix expires on database 0 first: another application's, for a
    // watcher on database 3. Reading it makes Redis notice the expiry now, before the next one.
    await expireNow(observer, `${LEASES}lease-on-db0`);

    const lease = `${LEASES}lease-on-db3`;
    const since = Date.now();
    const taken = await call("acquireLease()", () =>
      exercise.acquireLease(client, lease, "embed-worker-1", 60_500),
    );
    check(taken === true, "acquireLease() of a free lease should return true.", 2);
    await checkNearTtl(db3, lease, since, 60_500, "acquireLease(..., 60500)", 2);
    // The worker stalls: its lease runs out now rather than in a minute.
    await expireNow(db3, lease);
    await eventually(
      () => expired.some((docId) => docId.endsWith("lease-on-db3")),
      3000,
      "A lease on database 3 expired, but onExpired() was never called. Keyspace events carry the database number in the channel name: use __keyevent@<db>__:expired with the client's database (client.options?.database, 0 if unset).",
      2,
    );
    check(
      !expired.some((docId) => docId.endsWith("lease-on-db0")),
      `onExpired() reported lease-on-db0, a lease that expired on database 0, but your client uses database 3 (you subscribed to ${JSON.stringify(subscribed)}). Keyspace events are per database, and another database may belong to another application: listen on __keyevent@3__:expired, built from client.options?.database, not on a pattern over every database such as __keyevent@*__:expired.`,
      2,
    );
    check(
      expired[0] === "lease-on-db3",
      `onExpired() should receive the document id "lease-on-db3"; it received ${JSON.stringify(expired[0])}. Strip the lease prefix from the expired key's name.`,
      2,
    );
  });

  test.skipIf(!ctx.privateServer)(
    "watchExpiredLeases() rejects when Redis refuses the subscription, and closes what it opened",
    async () => {
      const observer = await checkClient();
      await ensureExpiredEvents(observer);
      await expectRefusedSubscribeCleanedUp(
        "watchExpiredLeases()",
        (client) => exercise.watchExpiredLeases(client, LEASES, () => {}),
        (stop) => {
          if (typeof stop === "function") cleanup.push(() => stop());
        },
        3,
      );
    },
  );

  test("stop() unsubscribes and closes the watcher's connection", async () => {
    const observer = await checkClient();
    const client = await learnerClient();
    const since = Math.max(...(await learnerConnections(observer)).map((c) => Number(c.id)));
    await ensureExpiredEvents(observer);
    // Another watcher of the same service, on the same client, stays on: stopping one watcher
    // must not stop it.
    const heard: string[] = [];
    const other = await watch(client, (docId) => heard.push(docId));
    const given = learnerAddrs();
    const mark = sent().length;
    const stop = await watch(client, () => {});
    const own = subscribedOn(mark);
    const stopMark = sent().length;
    await call("stop()", () => stop());
    // An UNSUBSCRIBE on the client given drops its subscriptions to the channel, the other
    // watcher's included when they share it, and the caller's own.
    const elsewhere = unsubscribedElsewhere(stopMark, own);
    if (elsewhere.length > 0) {
      fail(
        `stop() sent ${describeUnsubscribes(elsewhere)} on a connection the watcher did not subscribe on (the client watchExpiredLeases() was given, or another watcher's). UNSUBSCRIBE without a listener drops every subscription that connection has to the channel. Unsubscribe on the watcher's own connection, the one stop() closes: subscriber.unsubscribe(channel, listener).`,
        3,
      );
    }
    // Seen from this process, the moment stop() resolves: a stop() that does not await the
    // close tells its caller "done" while the connection still lives.
    const stillOpen = [...learnerAddrs()].filter((addr) => !given.has(addr));
    check(
      stillOpen.length === 0,
      `stop() has resolved, and the watcher's connection is still open (${stillOpen.join(", ")}): whoever awaits stop() (a shutdown, a test) goes on as if it were closed. await the unsubscribe and the close() inside stop().`,
      3,
    );
    check(
      client.isOpen,
      "stop() closed the client watchExpiredLeases() was given: the rest of the service uses that client. Close only the connection the watcher opened.",
      3,
    );
    await expireNow(observer, `${LEASES}after-one-stop`);
    await eventually(
      () => heard.includes("after-one-stop"),
      3000,
      "Two watchers ran on the same client; after stop() of one, a lease expired and the other never reported it: stopping one watcher stopped the other too (a connection shared between calls, closed by the first stop()). Give each watchExpiredLeases() call a connection of its own, and let its stop() close only that one.",
      3,
    );
    await call("stop()", () => other());
    await eventually(
      async () =>
        (await learnerConnections(observer)).filter((c) => Number(c.id) > since).length === 0,
      2000,
      "After stop() the watcher's connection is still open: stop() should unsubscribe and close() the duplicate.",
      3,
    );
  });
});
