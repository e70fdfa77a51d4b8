import { existsSync } from "node:fs";
import { createCluster } from "redis";
import { expect } from "vitest";
import { type LocalCluster, startCluster } from "../../src/redis/cluster-server.ts";
import { listening } from "./listening.ts";

function clusterClient(rootNodes: { url: string }[]) {
  return createCluster({ rootNodes });
}
type ClusterClient = ReturnType<typeof clusterClient>;

/**
 * Starts the local cluster, runs `body` with it and a cluster client, stops both whatever
 * happens, then proves nothing of any node is left: no directory, no listening port.
 */
export async function withCluster(
  body: (cluster: LocalCluster, client: ClusterClient) => Promise<void>,
): Promise<void> {
  let cluster: LocalCluster | undefined;
  try {
    cluster = await startCluster();
    const client = clusterClient(cluster.rootNodes);
    client.on("error", () => {});
    await client.connect();
    try {
      await body(cluster, client);
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
}
