/**
 * The local Redis Cluster of lesson 15: three primaries with one replica each, serving every
 * slot, and gone without a trace (process, port, directory) once stopped.
 */
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { createCluster } from "redis";
import { expect, test } from "vitest";
import { type LocalCluster, startCluster } from "../src/redis/cluster-server.ts";
import { redisServerVersion } from "../src/redis/server.ts";

/** Whether `port` can be bound again: no server of the cluster holds it. */
function free(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

test.skipIf(!redisServerVersion())(
  "startCluster serves every slot from three primaries with a replica each, and stop() leaves nothing",
  async () => {
    let cluster: LocalCluster | undefined;
    try {
      cluster = await startCluster();
      expect(cluster.nodes).toHaveLength(6);
      const client = createCluster({ rootNodes: cluster.rootNodes });
      client.on("error", () => {});
      await client.connect();
      try {
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
        for (const name of ["a", "b", "c", "d", "e", "f"])
          await client.set(`wb:test:${name}`, name);
        expect(await client.get("wb:test:f")).toBe("f");
      } finally {
        client.destroy();
      }
    } finally {
      await cluster?.stop();
    }
    for (const node of cluster?.nodes ?? []) {
      expect(existsSync(node.dir), node.dir).toBe(false);
      expect(await free(node.port), `port ${node.port}`).toBe(true);
    }
  },
  60_000,
);
