/**
 * What a local cluster run must leave behind: nothing. No process of the run (found by its
 * mark), no port (nodes, relays, partition APIs) still listening, no node directory.
 */
import { existsSync } from "node:fs";
import { expect } from "vitest";
import { listening } from "../support/listening.ts";
import { processesWithEnv } from "../support/sandbox.ts";
import { waitFor } from "../support/wait.ts";

export interface ClusterRunPlaces {
  partitions: { relay: number; apiUrl: string }[];
  nodes: { port: number; dir: string }[];
}

export async function expectNothingLeft(mark: string, cluster: ClusterRunPlaces): Promise<void> {
  expect(await waitFor(() => processesWithEnv(mark).length === 0, 10_000), "processes left").toBe(
    true,
  );
  const ports = [
    ...cluster.nodes.map((n) => n.port),
    ...cluster.partitions.flatMap((p) => [p.relay, Number(new URL(p.apiUrl).port)]),
  ];
  for (const port of ports) expect(await listening(port), `port ${port}`).toBe(false);
  for (const node of cluster.nodes) expect(existsSync(node.dir), node.dir).toBe(false);
}
