/**
 * The local Redis Cluster of lesson 15: three primaries with one replica each, serving every
 * slot, and gone without a trace (process, port, directory) once stopped.
 */
import { expect, test } from "vitest";
import { redisServerVersion } from "../src/redis/server.ts";
import { withCluster } from "./support/cluster.ts";

test.skipIf(!redisServerVersion())(
  "startCluster serves every slot from three primaries with a replica each, and stop() leaves nothing",
  () =>
    withCluster(async (cluster, client) => {
      expect(cluster.nodes).toHaveLength(6);
      // "<id> <addr> <flags> <primary id or -> ...": each replica follows a different primary.
      const nodes = String(await client.sendCommand(undefined, true, ["CLUSTER", "NODES"]))
        .trim()
        .split("\n")
        .map((line) => line.split(" "));
      const primaries = nodes.filter((n) => n[2]?.includes("master")).map((n) => n[0]);
      const followed = nodes.filter((n) => n[2]?.includes("slave")).map((n) => n[3]);
      expect(primaries).toHaveLength(3);
      expect(new Set(followed)).toEqual(new Set(primaries));
      // Keys in slots owned by different primaries all work through the one client.
      for (const name of ["a", "b", "c", "d", "e", "f"]) await client.set(`wb:test:${name}`, name);
      expect(await client.get("wb:test:f")).toBe("f");
    }),
  60_000,
);
