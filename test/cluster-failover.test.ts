/**
 * A primary of the local cluster SIGKILLed: its replica takes over its slots (elected by the
 * cluster, or told to by failover() when the election is slow), a write acknowledged by WAIT 1
 * before the kill is still there, a cluster client finds the new primary by itself, and stop()
 * leaves nothing of any node, the killed one included.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { expect, test } from "vitest";
import { redisServerVersion } from "../src/redis/server.ts";
import { withCluster } from "./support/cluster.ts";
import { listening } from "./support/listening.ts";

test.skipIf(!redisServerVersion())(
  "failover(slot) kills the slot's primary and returns once its replica serves the slot",
  () =>
    withCluster(async (cluster, client) => {
      const key = "wb:failover:{doc}";
      await client.set(key, "kept");
      // Acknowledged by the replica before the primary dies: the promoted replica has it.
      expect(await client.sendCommand(key, false, ["WAIT", "1", "2000"])).toBe(1);
      const slot = Number(await client.sendCommand(key, true, ["CLUSTER", "KEYSLOT", key]));
      const failover = await cluster.failover(slot, { takeoverAfterMs: 1000 });
      expect(failover.promoted).not.toBe(failover.killed);
      expect(await listening(failover.killed)).toBe(false);
      let value: string | null | undefined;
      for (let attempt = 0; attempt < 100 && value === undefined; attempt++) {
        value = await client.get(key).catch(() => undefined);
        if (value === undefined) await sleep(100);
      }
      expect(value).toBe("kept");
    }),
  90_000,
);
