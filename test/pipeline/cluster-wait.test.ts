/**
 * A cluster run's WAIT (replica-wait.ts): the API sends it before each 202, and the workers after
 * each batch commit, hand-off and dead letter, on the connection that wrote. Counted by the
 * server itself (INFO commandstats) on a private server, where WAIT 1 1 simply times out.
 */
import { afterAll, beforeAll, expect, test } from "vitest";
import { BATCH_DEFAULTS } from "../../src/pipeline/batch-loop.ts";
import { SOLUTION_BATCH_PARTS } from "../../src/pipeline/batch-parts.ts";
import { connectClient, type Parts, type Redis, SOLUTION_PARTS } from "../../src/pipeline/parts.ts";
import { DEFAULTS, runPipeline } from "../../src/pipeline/pipeline.ts";
import { partsThatWait } from "../../src/pipeline/replica-wait.ts";
import { type PrivateServer, startPrivateServer } from "../../src/redis/server.ts";

let redis: PrivateServer;
let client: Redis;
beforeAll(async () => {
  redis = await startPrivateServer();
  client = await connectClient(redis.url, "wait-test");
});
afterAll(async () => {
  client?.destroy();
  await redis?.stop();
});

async function waits(): Promise<number> {
  const stats = String(await client.sendCommand(["INFO", "commandstats"]));
  return Number(/cmdstat_wait:calls=(\d+)/.exec(stats)?.[1] ?? 0);
}

test("a batched run with replicaWait sends WAITs: at least one per upload and one per stage", async () => {
  const before = await waits();
  const report = await runPipeline({
    ...DEFAULTS,
    docs: 12,
    workers: 1,
    latencyMs: 0,
    failureRate: 0,
    badRequests: false,
    bulk: 1,
    parts: SOLUTION_PARTS,
    batch: { ...BATCH_DEFAULTS, parts: SOLUTION_BATCH_PARTS },
    redisUrl: redis.url,
    prefix: "wait-test:",
    replicaWait: { replicas: 1, timeoutMs: 1 },
  });
  expect(report.audit).toMatchObject({ ok: true, accepted: 12 });
  // 12 uploads, one a request, then at least one commit per stage: a floor, not a proof of each.
  expect((await waits()) - before).toBeGreaterThanOrEqual(12 + 4);
}, 60_000);

test("lesson 13's parts: WAIT after each hand-off and dead letter, on the same connection", async () => {
  const written: string[] = [];
  const parts = {
    handOff: async () => {
      written.push("handOff");
      return true;
    },
    deadLetter: async () => {
      written.push("deadLetter");
    },
  } as unknown as Parts;
  const waiting = partsThatWait(parts, { replicas: 1, timeoutMs: 1 });
  const before = await waits();
  const work = { id: "1-0", doc: "d", deliveries: 1 };
  const keys = {} as Parameters<Parts["handOff"]>[1];
  expect(await waiting.handOff(client, keys, work, "r")).toBe(true);
  await waiting.deadLetter(client, keys, work, "why");
  expect(written).toEqual(["handOff", "deadLetter"]);
  expect((await waits()) - before).toBe(2);
  expect(partsThatWait(parts, undefined)).toBe(parts);
});
