import { createClient } from "redis";
import { afterEach, describe, test } from "vitest";
import {
  call,
  check,
  checkClient,
  ctx,
  eventually,
  fail,
  key,
  LEARNER_CLIENT,
  learnerClient,
  learnerConnections,
  loadExercise,
  type Redis,
  sleep,
} from "../kit.ts";

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

const LEASES = key("lease:");
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

/** Turns expired events on the way the lesson teaches, if the learner's function does not. */
async function ensureExpiredEvents(observer: Redis): Promise<void> {
  const current = await flags(observer);
  if (!/E/.test(current) || !/[xA]/.test(current)) await observer.configSet(EVENTS, `${current}Ex`);
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

describe("leases", () => {
  test("acquireLease() takes a free lease, with a TTL, and only once", async () => {
    const client = await learnerClient();
    const observer = await checkClient();
    const lease = `${LEASES}contract-17`;
    const first = await call("acquireLease()", () =>
      exercise.acquireLease(client, lease, "ocr-worker-1", 5000),
    );
    check(
      first === true,
      `The lease was free, so acquireLease() should return true; it returned ${JSON.stringify(first)}.`,
      2,
    );
    const holder = await observer.get(lease);
    check(
      holder === "ocr-worker-1",
      `The lease key should hold the worker's name, "ocr-worker-1"; it holds ${JSON.stringify(holder)}.`,
      2,
    );
    const ttl = await observer.pTTL(lease);
    check(
      ttl > 0 && ttl <= 5000,
      `The lease should expire by itself within 5000 ms; PTTL says ${ttl}. Set it with PX, in the same SET.`,
      2,
    );
    const second = await call("acquireLease()", () =>
      exercise.acquireLease(client, lease, "ocr-worker-2", 5000),
    );
    const after = await observer.get(lease);
    check(
      second === false && after === "ocr-worker-1",
      `The lease was already held by ocr-worker-1, yet acquireLease() for ocr-worker-2 returned ${JSON.stringify(second)} and the holder is now ${JSON.stringify(after)}. Two workers would process contract-17 at once: SET it with NX, only if it does not exist.`,
      2,
    );
  });

  test("renewLease() extends the lease of its holder only", async () => {
    const client = await learnerClient();
    const observer = await checkClient();
    const lease = `${LEASES}nda-4`;
    await observer.set(lease, "ner-worker-1", { expiration: { type: "PX", value: 1000 } });
    const stolen = await call("renewLease()", () =>
      exercise.renewLease(client, lease, "ner-worker-2", 60_000),
    );
    const ttlAfterStranger = await observer.pTTL(lease);
    check(
      stolen === false && ttlAfterStranger <= 1000,
      `renewLease() for ner-worker-2 extended a lease held by another worker (ner-worker-1): it returned ${JSON.stringify(stolen)} and PTTL is now ${ttlAfterStranger}. Check the holder and extend in one atomic step: a short Lua script with EVAL.`,
      3,
    );
    const renewed = await call("renewLease()", () =>
      exercise.renewLease(client, lease, "ner-worker-1", 60_000),
    );
    const ttl = await observer.pTTL(lease);
    check(
      renewed === true && ttl > 1000,
      `renewLease() by the holder should extend the lease to 60 s and return true; it returned ${JSON.stringify(renewed)} and PTTL is ${ttl}.`,
      3,
    );
    const gone = await call("renewLease()", () =>
      exercise.renewLease(client, `${LEASES}never-taken`, "ner-worker-1", 1000),
    );
    check(gone === false, "renewLease() of a lease nobody holds should return false.", 3);
  });
});

describe("keyspace notifications", () => {
  test("enableExpiredEvents() turns on expired key events and keeps other flags", async () => {
    const client = await learnerClient();
    const observer = await checkClient();
    const original = await flags(observer);
    cleanup.push(() => observer.configSet(EVENTS, original));
    // Another part of the system already follows list events on keyspace channels.
    await observer.configSet(EVENTS, "Kl");
    await call("enableExpiredEvents()", () => exercise.enableExpiredEvents(client));
    const now = await flags(observer);
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
  });

  test("an expired lease is reported with its document id; a renewed one is not", async () => {
    const client = await learnerClient();
    const observer = await checkClient();
    const original = await flags(observer);
    cleanup.push(() => observer.configSet(EVENTS, original));
    await ensureExpiredEvents(observer);
    const expired: string[] = [];
    await watch(client, (docId) => expired.push(docId));

    // A worker takes a lease and stalls; another keeps renewing; a cache entry expires too.
    await observer.set(`${LEASES}contract-stalled`, "ocr-worker-1", {
      expiration: { type: "PX", value: 200 },
    });
    const busy = `${LEASES}contract-busy`;
    await observer.set(busy, "ocr-worker-2", { expiration: { type: "PX", value: 400 } });
    cleanup.push(() => observer.del(busy));
    await observer.set(key("cache:contract-stalled"), "{}", {
      expiration: { type: "PX", value: 200 },
    });

    const until = Date.now() + 1500;
    while (Date.now() < until) {
      const renewed = await call("renewLease()", () =>
        exercise.renewLease(client, busy, "ocr-worker-2", 400),
      );
      check(renewed === true, "renewLease() by the lease's holder should return true.", 3);
      await sleep(100);
    }
    await eventually(
      () => expired.length > 0,
      3000,
      "The lease of contract-stalled expired, but onExpired() was never called. Subscribe to __keyevent@<db>__:expired (with the database number of the client) on a duplicate connection, and make sure notify-keyspace-events has E and x.",
      2,
    );
    if (expired.some((docId) => docId.includes("lease:"))) {
      fail(
        `onExpired() received "${expired[0]}": the expired key's full name. Strip the lease prefix and report the document id, "contract-stalled".`,
        2,
      );
    }
    check(
      !expired.includes("contract-busy"),
      "onExpired() reported contract-busy, whose worker renewed its lease in time: the lease was not renewed (renewLease() must extend it with PEXPIRE).",
      3,
    );
    check(
      expired.length === 1 && expired[0] === "contract-stalled",
      `Only the lease of contract-stalled expired, so onExpired() should have been called once with "contract-stalled"; it got ${JSON.stringify(expired)}. Keys that are not leases (the cache entry) are not your business: check the prefix.`,
      2,
    );
  });

  test("the watcher follows the database its client uses", async () => {
    const observer = await checkClient();
    const original = await flags(observer);
    cleanup.push(() => observer.configSet(EVENTS, original));
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
    const expired: string[] = [];
    await watch(client, (docId) => expired.push(docId));
    const taken = await call("acquireLease()", () =>
      exercise.acquireLease(client, `${LEASES}lease-on-db3`, "embed-worker-1", 150),
    );
    check(taken === true, "acquireLease() of a free lease should return true.", 2);
    await eventually(
      () => expired.some((docId) => docId.endsWith("lease-on-db3")),
      3000,
      "A lease on database 3 expired, but onExpired() was never called. Keyspace events carry the database number in the channel name: use __keyevent@<db>__:expired with the client's database (client.options?.database, 0 if unset).",
      2,
    );
    check(
      expired[0] === "lease-on-db3",
      `onExpired() should receive the document id "lease-on-db3"; it received ${JSON.stringify(expired[0])}. Strip the lease prefix from the expired key's name.`,
      2,
    );
  });

  test("stop() unsubscribes and closes the watcher's connection", async () => {
    const observer = await checkClient();
    const client = await learnerClient();
    const since = Math.max(...(await learnerConnections(observer)).map((c) => Number(c.id)));
    const stop = await watch(client, () => {});
    await call("stop()", () => stop());
    await eventually(
      async () =>
        (await learnerConnections(observer)).filter((c) => Number(c.id) > since).length === 0,
      2000,
      "After stop() the watcher's connection is still open: stop() should unsubscribe and close() the duplicate.",
      3,
    );
  });
});
