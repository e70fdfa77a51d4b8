/**
 * `npm run pipeline -- --cluster --chaos`: the pipeline on the local six-node cluster, one
 * partition per primary, workers SIGKILLed and one primary SIGKILLed mid-run. Its replica serves
 * the partition's slot at the end, the audit finds nothing lost and nothing twice, and nothing is
 * left behind: no process, no port (nodes, relays, APIs), no node directory.
 */
import { randomUUID } from "node:crypto";
import { expect, test } from "vitest";
import { redisServerVersion } from "../../src/redis/server.ts";
import { expectNothingLeft } from "./cluster-left.ts";
import { ended, runPipeline } from "./run-cli.ts";

interface ClusterShape {
  wait: boolean;
  partitions: {
    tag: string;
    slot: number;
    node: number;
    nodeAtEnd: number;
    relay: number;
    apiUrl: string;
    accepted: number;
  }[];
  failover: { killed: number; promoted: number } | null;
  nodes: { port: number; dir: string }[];
}

test.skipIf(!redisServerVersion())(
  "--cluster --chaos: a primary killed mid-run, its replica promoted, none lost, none twice, nothing left",
  async () => {
    const mark = randomUUID();
    const run = runPipeline(
      ["--cluster", "--chaos", "--docs", "150", "--workers", "3", "--json"],
      mark,
    );
    const { code, audit, context } = await ended(run);
    expect(code, context).toBe(0);
    expect(audit, context).toMatchObject({
      ok: true,
      accepted: 150,
      lost: 0,
      duplicated: 0,
      redis: "cluster",
    });
    const cluster = audit.cluster as ClusterShape;
    expect(cluster.wait).toBe(true);
    expect(cluster.nodes).toHaveLength(6);
    // One partition per primary, each under its own tag, each on a node of its own.
    expect(new Set(cluster.partitions.map((p) => p.node)).size).toBe(3);
    const failover = cluster.failover;
    expect(failover, context).not.toBeNull();
    const moved = cluster.partitions.find((p) => p.node === failover?.killed);
    expect(moved?.nodeAtEnd).toBe(failover?.promoted);
    expect(moved?.accepted).toBeGreaterThan(0);

    await expectNothingLeft(mark, cluster);
  },
  120_000,
);
