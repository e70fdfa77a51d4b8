/**
 * `npm run pipeline -- --cluster --tls --chaos`: the local six-node cluster TLS-only (clients,
 * bus and replication), the pipeline over TLS through its relays, verifying the cluster's CA
 * against the name on the certificate, and one primary SIGKILLed mid-run. At the end every live
 * node, asked over TLS, says its plain port is 0; the audit finds nothing lost and nothing twice;
 * nothing is left: no process, no port, no node directory, no certificate.
 */
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { dirname } from "node:path";
import { expect, test } from "vitest";
import {
  type ClusterNodeAtEnd,
  type ClusterReport,
  renderCluster,
} from "../../src/pipeline/cluster.ts";
import { redisServerVersion } from "../../src/redis/server.ts";
import { opensslMissing } from "../../src/redis/tls-server.ts";
import { expectNothingLeft } from "./cluster-left.ts";
import { ended, pythonWorkers, runPipeline } from "./run-cli.ts";

const missing = redisServerVersion() ? opensslMissing() : "redis-server is not installed";

interface ClusterShape {
  partitions: { node: number; nodeAtEnd: number; relay: number; apiUrl: string }[];
  failover: { killed: number; promoted: number } | null;
  nodes: ClusterNodeAtEnd[];
}

test.skipIf(missing)(
  `--cluster --tls --chaos: TLS-only nodes, a primary killed mid-run, none lost, none twice, nothing left${missing ? ` (skipped: ${missing})` : ""}`,
  async () => {
    const mark = randomUUID();
    const python = pythonWorkers(1, "with --cluster --tls");
    const run = runPipeline(
      ["--cluster", "--tls", "--chaos", "--docs", "200", "--workers", "2", ...python, "--json"],
      mark,
    );
    const { code, audit, context } = await ended(run);
    expect(code, context).toBe(0);
    expect(audit, context).toMatchObject({
      ok: true,
      accepted: 200,
      lost: 0,
      duplicated: 0,
      redis: "tls cluster",
      python: { workers: python.length > 0 ? 1 : 0 },
    });
    const cluster = audit.cluster as ClusterShape;
    const failover = cluster.failover;
    expect(failover, context).not.toBeNull();
    const moved = cluster.partitions.find((p) => p.node === failover?.killed);
    expect(moved?.nodeAtEnd, context).toBe(failover?.promoted);
    // Every node that still ran had no plain port; the killed one could not be asked.
    expect(cluster.nodes).toHaveLength(6);
    for (const node of cluster.nodes) {
      expect(node.plainPort, `node ${node.port}`).toBe(node.port === failover?.killed ? null : 0);
    }
    const ca = /verified with the CA in (\S+)/.exec(run.output.stderr)?.[1];
    expect(ca, context).toBeDefined();

    await expectNothingLeft(mark, cluster);
    expect(existsSync(dirname(ca as string)), "the certificates' directory").toBe(false);
  },
  120_000,
);

test("the text report says whether a TLS cluster's live nodes kept their plain ports closed", () => {
  const report = (nodes: ClusterNodeAtEnd[]) =>
    renderCluster({ partitions: [], nodes } as unknown as ClusterReport, true);
  const closed = report([
    { port: 1, dir: "a", plainPort: 0 },
    { port: 2, dir: "b", plainPort: null },
  ]);
  expect(closed).toContain("no plain port open on any of the 1 live nodes");
  expect(report([{ port: 1, dir: "a", plainPort: 6379 }])).toContain("plain port OPEN on nodes 1");
  // A plain cluster's nodes were not asked: nothing said about TLS.
  expect(report([{ port: 1, dir: "a" }])).not.toMatch(/TLS|plain port/);
});
