import { expect } from "vitest";
import { newClient } from "../../src/redis/client.ts";
import { processesInRemovedCheckScratch, processesWithEnv } from "./sandbox.ts";

/**
 * `read()` until `done` holds of it, for up to 5 s: what it last read. On a machine at a load of
 * 30 or more the server took longer than 2 s to read the end of a killed run's sockets (two
 * mistakes of lesson 09 and one variant of 16 reported "connections left open" once each, then
 * never again alone); a connection really left open is still reported, 3 s later.
 */
async function settled<T>(read: () => T | Promise<T>, done: (value: T) => boolean): Promise<T> {
  let value = await read();
  for (let waited = 0; !done(value) && waited < 5000; waited += 20) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    value = await read();
  }
  return value;
}

/**
 * After a check run on its own private server: no process that was given the server's URL
 * (the check, a learner's worker) is alive, and no connection but this observer's is open.
 */
export async function expectNothingLeft(redisUrl: string): Promise<void> {
  expect(processesWithEnv(`WORKBOOK_REDIS_URL=${redisUrl}\0`), "processes left").toEqual([]);
  const observer = newClient({ url: redisUrl });
  await observer.connect();
  const list = async () =>
    String(await observer.sendCommand(["CLIENT", "LIST"]))
      .trim()
      .split("\n");
  // The processes are gone, but the server may not have read the end of their sockets yet:
  // it drops them within a turn or two of its event loop. A connection of a process still
  // alive (this one's) never goes, and is still reported after the wait.
  const clients = await settled(list, (found) => found.length <= 1);
  observer.destroy();
  expect(clients, "connections left open").toHaveLength(1);
  // A server the check started itself (lessons 14 and 15) is killed with its run; SIGKILL
  // takes a moment to land. Runs go on side by side: this sees any run's leftovers, not only
  // this one's, and each is a defect all the same.
  const orphans = await settled(processesInRemovedCheckScratch, (found) => found.length === 0);
  expect(orphans, "processes a removed check run left running").toEqual([]);
}
