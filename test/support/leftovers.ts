import { expect } from "vitest";
import { newClient } from "../../src/redis/client.ts";
import { processesWithEnv } from "./sandbox.ts";

/**
 * After a check run on its own private server: no process that was given the server's URL
 * (the check, a learner's worker) is alive, and no connection but this observer's is open.
 */
export async function expectNothingLeft(redisUrl: string): Promise<void> {
  expect(processesWithEnv(`WORKBOOK_REDIS_URL=${redisUrl}\0`), "processes left").toEqual([]);
  const observer = newClient({ url: redisUrl });
  await observer.connect();
  const clients = String(await observer.sendCommand(["CLIENT", "LIST"]))
    .trim()
    .split("\n");
  observer.destroy();
  expect(clients, "connections left open").toHaveLength(1);
}
