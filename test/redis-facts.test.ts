/**
 * What the lesson texts claim about Redis and node-redis, shown on the real server: if a newer
 * Redis or node-redis behaves otherwise, this fails and the text must change with it.
 */
import { createClient } from "redis";
import { afterAll, beforeAll, expect, test } from "vitest";
import { openRedisTarget, type RedisTarget } from "../src/redis/target.ts";

let redis: RedisTarget;
const clients: { destroy(): void; isOpen: boolean }[] = [];

beforeAll(async () => {
  redis = await openRedisTarget({});
});

afterAll(async () => {
  for (const client of clients) if (client.isOpen) client.destroy();
  await redis.release();
});

async function connect(name?: string) {
  const client = createClient({ url: redis.url, name });
  client.on("error", () => {});
  clients.push(client);
  await client.connect();
  return client;
}

test("lesson 04: MULTI/EXEC has no rollback; a command that fails as it runs stops no other", async () => {
  const client = await connect();
  await client.set("facts:string", "not a hash");
  const error = await client
    .multi()
    .hSet("facts:string", "f", "v")
    .set("facts:other", "written")
    .exec()
    .catch((e: unknown) => e as { replies: unknown[]; errorIndexes: number[] });
  // node-redis rejects, and the reply of the failed command is its WRONGTYPE error.
  expect(error).toMatchObject({ errorIndexes: [0] });
  expect(String((error as { replies: unknown[] }).replies[0])).toMatch(/WRONGTYPE/);
  expect(await client.get("facts:other")).toBe("written");
});

test("lessons 09 and 10: re-reading your own pending entries with 0 counts as a delivery", async () => {
  const client = await connect();
  await client.xGroupCreate("facts:s", "g", "0", { MKSTREAM: true });
  const id = await client.xAdd("facts:s", "*", { doc: "1" });
  await client.xReadGroup("g", "c", { key: "facts:s", id: ">" });
  await client.xReadGroup("g", "c", { key: "facts:s", id: "0" });
  const [entry] = await client.xPendingRange("facts:s", "g", id, id, 1);
  expect(entry?.deliveriesCounter).toBe(2);
});

test("lesson 10: XCLAIM ... JUSTID resets the idle time without counting a delivery", async () => {
  const client = await connect();
  await client.xGroupCreate("facts:hb", "g", "0", { MKSTREAM: true });
  const id = await client.xAdd("facts:hb", "*", { doc: "1" });
  await client.xReadGroup("g", "c", { key: "facts:hb", id: ">" });
  await new Promise((resolve) => setTimeout(resolve, 30));
  await client.sendCommand(["XCLAIM", "facts:hb", "g", "c", "0", id, "JUSTID"]);
  const [entry] = await client.xPendingRange("facts:hb", "g", id, id, 1);
  expect(entry?.deliveriesCounter).toBe(1);
  expect(entry?.millisecondsSinceLastDelivery).toBeLessThan(30);
});

test("lesson 10: since Redis 7.0 XAUTOCLAIM skips an entry deleted while pending and reports it", async () => {
  const client = await connect();
  await client.xGroupCreate("facts:del", "g", "0", { MKSTREAM: true });
  const id = await client.xAdd("facts:del", "*", { doc: "1" });
  await client.xReadGroup("g", "c", { key: "facts:del", id: ">" });
  await client.xDel("facts:del", id);
  const reply = await client.xAutoClaim("facts:del", "g", "other", 0, "0-0");
  expect(reply.messages).toEqual([]);
  expect(reply.deletedMessages).toEqual([id]);
  expect((await client.xPending("facts:del", "g")).pending).toBe(0);
});

test("lesson 02: duplicate() copies the connection name; duplicate({ name }) gives its own", async () => {
  const client = await connect("facts-main");
  const copy = client.duplicate();
  const named = client.duplicate({ name: "facts-dashboard" });
  for (const c of [copy, named]) {
    c.on("error", () => {});
    clients.push(c);
    await c.connect();
  }
  expect(await copy.clientGetName()).toBe("facts-main");
  expect(await named.clientGetName()).toBe("facts-dashboard");
});

test("lesson 05: the A class of notify-keyspace-events leaves out m", async () => {
  const client = await connect();
  await client.configSet("notify-keyspace-events", "KEA");
  const flags = (await client.configGet("notify-keyspace-events"))["notify-keyspace-events"] ?? "";
  expect([...flags].sort().join("")).toBe([..."AKE"].sort().join(""));
  await client.configSet("notify-keyspace-events", "KEAm");
  const all = (await client.configGet("notify-keyspace-events"))["notify-keyspace-events"] ?? "";
  expect(all).toContain("m");
  await client.configSet("notify-keyspace-events", "");
});
