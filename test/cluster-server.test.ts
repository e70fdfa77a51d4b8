/**
 * The local Redis Cluster of lesson 15: three primaries with one replica each, serving every
 * slot, and gone without a trace (process, port, directory) once stopped.
 */
import { existsSync } from "node:fs";
import { connect } from "node:net";
import { createCluster } from "redis";
import { expect, test } from "vitest";
import { type LocalCluster, startCluster } from "../src/redis/cluster-server.ts";
import { redisServerVersion } from "../src/redis/server.ts";

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
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
      expect(await listening(node.port), `port ${node.port}`).toBe(false);
    }
  },
  60_000,
);
