/**
 * Against a user's own server (REDIS_URL) the workbook may only touch keys under its prefix and
 * must never send a global command. This runs every lesson's check against a server that holds
 * 1,000 unrelated keys and proves they are exactly as they were afterwards.
 */
import { createClient } from "redis";
import { afterAll, beforeAll, expect, test } from "vitest";
import { loadCatalog } from "../src/catalog.ts";
import { runCheck } from "../src/check/run.ts";
import { type PrivateServer, startPrivateServer } from "../src/redis/server.ts";
import { openRedisTarget } from "../src/redis/target.ts";
import { startTrace, type Trace, type TracedCommand } from "../src/redis/trace.ts";

/** Commands that reach beyond our own keys, or reconfigure the server. */
const GLOBAL =
  /^(FLUSHALL|FLUSHDB|CONFIG|KEYS|SHUTDOWN|DEBUG|SWAPDB|MOVE|RENAME|SCRIPT|FUNCTION|ACL|SAVE|BGSAVE|BGREWRITEAOF|REPLICAOF|SLAVEOF|FAILOVER|CLUSTER|MODULE)$/i;

const USER_PASSWORD = "s3cret-user-password";
let server: PrivateServer;
let url: string;
let trace: Trace;
const client = () => createClient({ url, name: "test:user-app" });

type Snapshot = Map<string, { dump: string; ttl: number }>;

async function snapshot(): Promise<Snapshot> {
  const c = client();
  await c.connect();
  const keys: string[] = [];
  for await (const batch of c.scanIterator({ COUNT: 1000 })) keys.push(...batch);
  const result: Snapshot = new Map();
  for (const key of keys.sort()) {
    const dump = String(await c.sendCommand(["DUMP", key]));
    // A TTL counts down while the test runs: compare only whether the key has one.
    const ttl = await c.pTTL(key);
    result.set(key, { dump, ttl: ttl > 0 ? 1 : ttl });
  }
  c.destroy();
  return result;
}

beforeAll(async () => {
  server = await startPrivateServer(["--requirepass", USER_PASSWORD]);
  url = `redis://:${USER_PASSWORD}@127.0.0.1:${server.port}`;
  const c = client();
  await c.connect();
  const multi = c.multi();
  for (let i = 0; i < 1000; i++) {
    switch (i % 5) {
      case 0:
        multi.set(`app:doc:${i}`, `contract ${i}`);
        break;
      case 1:
        multi.hSet(`app:status:${i}`, { stage: "ocr", attempt: String(i) });
        break;
      case 2:
        multi.rPush(`app:queue:${i}`, ["a", "b", String(i)]);
        break;
      case 3:
        multi.xAdd(`app:events:${i}`, "*", { docId: String(i) });
        break;
      default:
        multi.set(`app:cache:${i}`, "embedding", { EX: 3600 });
    }
  }
  await multi.exec();
  c.destroy();
  trace = await startTrace(server.port, USER_PASSWORD);
}, 60_000);

afterAll(async () => {
  await trace?.stop();
  await server?.stop();
});

test("every check leaves 1,000 unrelated keys untouched and sends no global command", async () => {
  const before = await snapshot();
  expect(before.size).toBe(1000);
  const redis = await openRedisTarget({ REDIS_URL: url });
  expect(redis.kind).toBe("external");
  expect(redis.display).not.toContain(USER_PASSWORD);

  // Three checks at a time, as several learners sharing one server would run them: each must
  // still keep to its own prefix, and the waits of one overlap the others'.
  const waiting = loadCatalog();
  const runNext = async (): Promise<void> => {
    const lesson = waiting.shift();
    if (!lesson) return;
    const verdict = await runCheck(
      lesson,
      {
        kind: "solution",
        file: lesson.solution,
        label: "the solution",
      },
      redis,
    );
    // Only lessons that need global commands may skip, and they must.
    expect(verdict.status, `${lesson.id}: ${verdict.reason ?? ""}`).toBe(
      lesson.needsPrivateServer ? "skipped" : "passed",
    );
    expect(JSON.stringify(verdict)).not.toContain(USER_PASSWORD);
    await runNext();
  };
  // Every run ends before the first failure is reported: none outlives the test.
  const ended = await Promise.allSettled([runNext(), runNext(), runNext()]);
  await redis.release();
  for (const end of ended) if (end.status === "rejected") throw end.reason;

  const after = await snapshot();
  expect(
    [...after.keys()].filter((key) => !before.has(key)),
    "keys left behind",
  ).toEqual([]);
  expect(after).toEqual(before);

  const sent: TracedCommand[] = await trace.stop();
  const global = sent.filter(
    (c) =>
      GLOBAL.test(c.args[0] ?? "") &&
      !(c.args[0]?.toUpperCase() === "CONFIG" && c.args[1]?.toUpperCase() === "GET"),
  );
  expect(global.map((c) => c.args.join(" "))).toEqual([]);
}, 600_000);
