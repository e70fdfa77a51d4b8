/**
 * The fault kit every check relies on (checks/wire.ts) must see each path a learner can take to
 * Redis, and its crashes and competitors must land exactly where they are asked to. A kit that
 * missed sendCommand or a client of the learner's own would let wrong solutions pass.
 */
import { createClient } from "redis";
import { afterAll, beforeAll, expect, test } from "vitest";
import {
  allLearnerAddrs,
  before,
  command,
  deliverTogether,
  holdIncoming,
  holdReply,
  received,
  scope,
  sent,
} from "../checks/wire.ts";
import { openRedisTarget, type RedisTarget } from "../src/redis/target.ts";

let redis: RedisTarget;
const open: { destroy(): void; isOpen: boolean }[] = [];

beforeAll(async () => {
  redis = await openRedisTarget({});
});

afterAll(async () => {
  for (const client of open) if (client.isOpen) client.destroy();
  await redis.release();
});

async function connect(name: string) {
  const client = createClient({ url: redis.url, name, socket: { reconnectStrategy: false } });
  client.on("error", () => {});
  open.push(client);
  await client.connect();
  return client;
}

function clientAddrs(list: string): Map<string, string> {
  const byAddr = new Map<string, string>();
  for (const line of list.split("\n").filter(Boolean)) {
    const addr = /addr=(\S+)/.exec(line)?.[1] ?? "";
    byAddr.set(addr, /name=(\S*)/.exec(line)?.[1] ?? "");
  }
  return byAddr;
}

test("sees typed calls, sendCommand, MULTI blocks, duplicates and clients built from options", async () => {
  const check = await connect("wb:check:test:1");
  const learner = await connect("anything-the-learner-likes");
  const dup = learner.duplicate({ name: "renamed" });
  dup.on("error", () => {});
  open.push(dup);
  await dup.connect();
  const own = createClient(learner.options);
  own.on("error", () => {});
  open.push(own);
  await own.connect();

  await learner.set("wire:a", "1");
  await learner.sendCommand(["XADD", "wire:s", "*", "f", "v"]);
  await dup.multi().hSet("wire:h", "k", "v").publish("wire:c", "x").exec();
  await own.get("wire:a");

  const names = sent((c) => /^(SET|XADD|MULTI|HSET|PUBLISH|EXEC|GET)$/.test(c.name));
  expect(names.map((c) => c.name)).toEqual([
    "SET",
    "XADD",
    "MULTI",
    "HSET",
    "PUBLISH",
    "EXEC",
    "GET",
  ]);
  const multi = names.find((c) => c.name === "MULTI")?.seq;
  expect(names.filter((c) => c.multi === multi).map((c) => c.name)).toEqual([
    "MULTI",
    "HSET",
    "PUBLISH",
    "EXEC",
  ]);
  expect(sent().some((c) => c.args.includes("wb:check:test:1"))).toBe(false);

  // Every learner connection is found by address, whatever its name; the check's is not.
  const listed = clientAddrs(String(await check.sendCommand(["CLIENT", "LIST"])));
  // (Connections opened and closed earlier, such as openRedisTarget's probe, are not listed.)
  const learnerNames = [...allLearnerAddrs()].flatMap((addr) => listed.get(addr) ?? []);
  expect(learnerNames.sort()).toEqual(
    ["anything-the-learner-likes", "anything-the-learner-likes", "renamed"].sort(),
  );
});

test("a competitor runs before the command reaches Redis, and the command follows it", async () => {
  const check = await connect("wb:check:test:2");
  const learner = await connect("learner");
  await check.del("wire:order");
  const rule = before(command("RPUSH", "wire:order"), async () => {
    await check.rPush("wire:order", "competitor");
  });
  await learner.sendCommand(["RPUSH", "wire:order", "learner"]);
  expect(rule.hasFired()).toBe(true);
  expect(await check.lRange("wire:order", 0, -1)).toEqual(["competitor", "learner"]);
});

test("a crash stops the command and every connection of its scope, and refuses new ones", async () => {
  const check = await connect("wb:check:test:3");
  const worker = scope("worker");
  const { main, reader } = await worker.run(async () => {
    const main = await connect("worker");
    const reader = main.duplicate();
    reader.on("error", () => {});
    open.push(reader);
    await reader.connect();
    return { main, reader };
  });
  const bystander = await connect("bystander");
  before(command("XACK"), "crash");

  await main.set("wire:before-crash", "1");
  await expect(main.sendCommand(["XACK", "wire:s", "g", "1-0"])).rejects.toThrow();
  expect(worker.crashed()).toBe(true);
  await expect(reader.ping()).rejects.toThrow();
  expect(await check.get("wire:before-crash")).toBe("1");
  // The bystander, outside the scope, lives on.
  expect(await bystander.ping()).toBe("PONG");
  // A crashed worker opens nothing more.
  const again = createClient({ url: redis.url, socket: { reconnectStrategy: false } });
  again.on("error", () => {});
  open.push(again);
  await expect(worker.run(() => again.connect())).rejects.toThrow();
});

test("a crash does not take the check down through a learner's client with no error listener", async () => {
  const worker = scope("careless");
  const reader = await worker.run(async () => {
    const main = await connect("careless");
    // duplicate() copies options, not listeners: this one reports its errors to nobody.
    const reader = main.duplicate();
    open.push(reader);
    await reader.connect();
    return reader;
  });
  before(command("XREAD"), "crash");
  await expect(reader.sendCommand(["XREAD", "STREAMS", "wire:none", "0"])).rejects.toThrow();
  // Reconnect attempts fail quietly until the test ends; an uncaught error would fail it.
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(worker.crashed()).toBe(true);
});

test("commands written while a connection is held are logged, matched and sent in order", async () => {
  const check = await connect("wb:check:test:5");
  const learner = await connect("held");
  await check.del("wire:held");
  let release!: () => void;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  before(command("RPUSH", "wire:held"), () => gate);
  const second = before(command("LPUSH", "wire:held"), async () => {
    await check.rPush("wire:held", "competitor");
  });
  const cancelled = before(command("GET", "never-sent"), "crash");
  cancelled.cancel();
  // Both leave in one tick: the second is written while the first is held.
  const replies = Promise.all([
    learner.rPush("wire:held", "first"),
    learner.lPush("wire:held", "second"),
  ]);
  await new Promise((resolve) => setTimeout(resolve, 50));
  expect(await check.lRange("wire:held", 0, -1)).toEqual([]);
  release();
  await replies;
  expect(second.hasFired()).toBe(true);
  expect(cancelled.hasFired()).toBe(false);
  expect(await check.lRange("wire:held", 0, -1)).toEqual(["second", "first", "competitor"]);
  const order = sent((c) => c.args[1] === "wire:held").map((c) => c.name);
  expect(order).toEqual(["RPUSH", "LPUSH"]);
});

test("a hold behind a blocking read on the same connection starts its competitor at once", async () => {
  const check = await connect("wb:check:test:10");
  const learner = await connect("behind-a-block");
  await check.del("wire:blocked");
  // The competitor is what ends the read: waiting for the read's reply first would hang.
  before(command("PING"), async () => {
    await check.xAdd("wire:blocked", "*", { n: "1" });
  });
  const [read] = await Promise.all([
    learner.xRead({ key: "wire:blocked", id: "$" }, { BLOCK: 0 }),
    learner.ping(),
  ]);
  expect(read?.[0]?.messages.length).toBe(1);
  await check.del("wire:blocked");
});

test("a pipeline written in one go is cut at the crash: the commands before it still arrive", async () => {
  const check = await connect("wb:check:test:6");
  const worker = scope("pipelined");
  const learner = await worker.run(() => connect("pipelined"));
  await check.del(["wire:p1", "wire:p2", "wire:p3"]);
  before(command("SET", "wire:p2"), "crash");
  await learner
    .multi()
    .set("wire:p1", "1")
    .set("wire:p2", "2")
    .set("wire:p3", "3")
    .execAsPipeline()
    .catch(() => {});
  expect(worker.crashed()).toBe(true);
  expect(await check.get("wire:p1")).toBe("1");
  expect(await check.get("wire:p2")).toBeNull();
  expect(await check.get("wire:p3")).toBeNull();
});

test("a crashed worker's loop that rejects afterwards does not fail the run", async () => {
  const worker = scope("looping");
  const client = await worker.run(() => connect("looping"));
  before(command("PING"), "crash");
  // Like a worker loop with no catch: its promise rejects after the crash, and nobody handles it.
  void worker.run(async () => {
    for (;;) await client.ping();
  });
  await new Promise((resolve) => setTimeout(resolve, 200));
  expect(worker.crashed()).toBe(true);
});

/** The conn number wire.ts gave `client`'s connection: the one that sent `marker` last. */
async function connOf(client: { sendCommand(args: string[]): Promise<unknown> }, marker: string) {
  await client.sendCommand(["ECHO", marker]);
  return sent((c) => c.name === "ECHO" && c.args[1] === marker).at(-1)?.conn ?? -1;
}

test("a held reply reaches the client only after release, while Redis has already run it", async () => {
  const check = await connect("wb:check:test:11");
  const learner = await connect("held-reply");
  await check.del("wire:reply");
  const hold = holdIncoming(await connOf(learner, "held-reply"));
  let answered = false;
  const reply = learner.incr("wire:reply").then((n) => {
    answered = true;
    return n;
  });
  // Redis ran it: the check sees the new value while the client still waits for its answer.
  while ((await check.get("wire:reply")) !== "1") await new Promise((r) => setTimeout(r, 5));
  await check.incr("wire:reply");
  await new Promise((resolve) => setTimeout(resolve, 50));
  expect(answered).toBe(false);
  hold.release();
  hold.release();
  expect(await reply).toBe(1);
  // Released once, exactly: the next reply is the next command's, not a repeat.
  expect(await learner.incr("wire:reply")).toBe(3);
});

test("a reply rule holds the matched reply, lets earlier ones through, and keeps order", async () => {
  const check = await connect("wb:check:test:12");
  const learner = await connect("reply-rule");
  await check.del(["wire:r1", "wire:r2"]);
  const got: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const rule = holdReply(
    (c, reply) => c.name === "INCR" && c.args[1] === "wire:r2" && reply.includes(":1\r\n"),
    () => gate,
  );
  // One pipeline: the first reply goes through, the second is held, the third waits behind it.
  const all = Promise.all([
    learner.incr("wire:r1").then(() => got.push("r1")),
    learner.incr("wire:r2").then(() => got.push("r2")),
    learner.ping().then(() => got.push("ping")),
  ]);
  await rule.fired;
  while (got.length === 0) await new Promise((r) => setTimeout(r, 5));
  await new Promise((resolve) => setTimeout(resolve, 50));
  expect(got).toEqual(["r1"]);
  expect(await check.get("wire:r2")).toBe("1");
  release();
  await all;
  expect(got).toEqual(["r1", "r2", "ping"]);
  expect(rule.hasFired()).toBe(true);
});

test("pushes are held with the replies, and received() sees them once delivered", async () => {
  const check = await connect("wb:check:test:13");
  const learner = await connect("held-pushes");
  const conn = await connOf(learner, "held-pushes");
  const messages: string[] = [];
  await learner.subscribe("wire:pushes", (m) => messages.push(m));
  const hold = holdIncoming(conn);
  const seen = received("third", { conn, ms: 3000 });
  for (const m of ["first", "second", "third"]) await check.publish("wire:pushes", m);
  expect(await received("second", { conn, ms: 100 })).toBe(false);
  expect(messages).toEqual([]);
  hold.release();
  expect(await seen).toBe(true);
  expect(messages).toEqual(["first", "second", "third"]);
  await learner.unsubscribe("wire:pushes");
});

test("texts outside ASCII are found as their UTF-8 bytes: received() and deliverTogether()", async () => {
  const check = await connect("wb:check:test:14");
  const learner = await connect("utf8-texts");
  const conn = await connOf(learner, "utf8-texts");
  const info = String(await learner.sendCommand(["CLIENT", "INFO"]));
  const addr = /addr=(\S+)/.exec(info)?.[1] ?? "";
  const messages: string[] = [];
  await learner.subscribe("wire:utf8", (m) => messages.push(m));
  const texts = ["doc-Ü1 résumé", "doc-Ü2 naïve"];
  const seen = received("doc-Ü2", { conn, ms: 3000 });
  const missing = await deliverTogether([addr], texts, async () => {
    for (const text of texts) await check.publish("wire:utf8", text);
  });
  expect(missing).toEqual([]);
  expect(await seen).toBe(true);
  expect(messages).toEqual(texts);
  await learner.unsubscribe("wire:utf8");
});

test("close() waits for held replies; destroy() drops them, as a destroyed socket reads nothing", async () => {
  const check = await connect("wb:check:test:14");
  await check.del("wire:close");
  const closing = await connect("closing");
  const hold = holdIncoming(await connOf(closing, "closing"));
  const reply = closing.incr("wire:close");
  const closed = closing.close();
  while ((await check.get("wire:close")) !== "1") await new Promise((r) => setTimeout(r, 5));
  hold.release();
  expect(await reply).toBe(1);
  await closed;

  const destroyed = await connect("destroyed");
  const conn = await connOf(destroyed, "destroyed");
  const dropped = holdIncoming(conn);
  const lost = destroyed.incr("wire:close");
  const delivered = received(":2\r\n", { conn, ms: 200 });
  while ((await check.get("wire:close")) !== "2") await new Promise((r) => setTimeout(r, 5));
  destroyed.destroy();
  await expect(lost).rejects.toThrow();
  dropped.release();
  expect(await delivered).toBe(false);
});

test("when Redis ends a held connection, the client reads the held replies before the end", async () => {
  const check = await connect("wb:check:test:15");
  const learner = await connect("killed-while-held");
  const conn = await connOf(learner, "killed-while-held");
  const id = String(await learner.clientId());
  await check.del("wire:ended");
  const hold = holdIncoming(conn);
  const reply = learner.incr("wire:ended");
  const ended = new Promise<void>((resolve) => learner.once("error", () => resolve()));
  // Killed only once Redis has run the command: its reply is on its way, held.
  while ((await check.get("wire:ended")) !== "1") await new Promise((r) => setTimeout(r, 5));
  await check.sendCommand(["CLIENT", "KILL", "ID", id]);
  await new Promise((resolve) => setTimeout(resolve, 50));
  hold.release();
  expect(await reply).toBe(1);
  await ended;
});
