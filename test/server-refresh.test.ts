/**
 * PrivateServer.refresh() gives the next check the server as it was started, whatever the last
 * run did to it, and leaves an untouched server alone.
 */
import { createClient } from "redis";
import { afterAll, beforeAll, expect, test } from "vitest";
import { type PrivateServer, startPrivateServer } from "../src/redis/server.ts";

let server: PrivateServer;

beforeAll(async () => {
  server = await startPrivateServer();
});

afterAll(() => server.stop());

/** Sends `args` on a connection of its own, without waiting for an answer that may never come. */
async function poison(...args: string[]): Promise<void> {
  const client = createClient({ url: server.url, socket: { reconnectStrategy: false } });
  client.on("error", () => {});
  await client.connect();
  await Promise.race([
    client.sendCommand(args).catch(() => {}),
    new Promise((resolve) => setTimeout(resolve, 200)),
  ]);
  client.destroy();
}

/** The server's run_id after a write and a read: it answers, writes, and is the same process or not. */
async function usable(): Promise<string> {
  const client = createClient({ url: server.url, socket: { reconnectStrategy: false } });
  await client.connect();
  try {
    await client.set("refresh:probe", "x");
    expect((await client.configGet("maxmemory")).maxmemory).toBe("0");
    return /run_id:(\w+)/.exec(await client.info("server"))?.[1] ?? "";
  } finally {
    client.destroy();
  }
}

test("an untouched server is kept", async () => {
  const before = await usable();
  await server.refresh();
  expect(await usable()).toBe(before);
});

test.each([
  ["CONFIG SET maxmemory 1", ["CONFIG", "SET", "maxmemory", "1"]],
  ["CONFIG SET notify-keyspace-events KEA", ["CONFIG", "SET", "notify-keyspace-events", "KEA"]],
  ["CONFIG SET requirepass", ["CONFIG", "SET", "requirepass", "secret"]],
  ["SHUTDOWN", ["SHUTDOWN", "NOSAVE"]],
  ["CLIENT PAUSE ALL", ["CLIENT", "PAUSE", "300000", "ALL"]],
  ["CLIENT PAUSE WRITE", ["CLIENT", "PAUSE", "300000", "WRITE"]],
])("after %s the server is as started", async (_name, args) => {
  await poison(...args);
  const started = Date.now();
  await server.refresh();
  expect(Date.now() - started).toBeLessThan(5_000);
  await usable();
});
