/**
 * What the lesson 15 check needs around the learner's functions: a local six-node cluster,
 * the check's own cluster client, learner cluster clients in crashable scopes, and where a key's
 * slot lives (which primary, which replica).
 */
import { createClient, createCluster } from "redis";
import { afterAll } from "vitest";
import type { Cluster, PartitionKeys, Stage } from "../../lessons/15-redis-cluster/partitions.ts";
import { type LocalCluster, startCluster } from "../../src/redis/cluster-server.ts";
import { call, ctx, loadExercise, type Redis } from "../kit.ts";
import { type Scope, scope } from "../wire.ts";

export type {
  Cluster,
  PartitionKeys,
  Pipeline,
  Stage,
  Work,
} from "../../lessons/15-redis-cluster/partitions.ts";

type Exercise = typeof import("../../lessons/15-redis-cluster/partitions.ts");

export const exercise = await loadExercise<Exercise>(
  "partitionOf",
  "partitionKeys",
  "handOff",
  "workRound",
);

export const STAGES: Stage[] = ["ocr", "ner", "classify", "embed"];

export function nextStage(stage: Stage): Stage | null {
  return STAGES[STAGES.indexOf(stage) + 1] ?? null;
}

const local: LocalCluster = await startCluster();

const opened: { destroy(): void; isOpen: boolean }[] = [];

afterAll(async () => {
  for (const client of opened.splice(0)) if (client.isOpen) client.destroy();
  await local.stop();
});

/** The check's own cluster client: its connections are named so wire.ts leaves them out. */
export const observer: Cluster = createCluster({
  rootNodes: local.rootNodes,
  defaults: { name: `wb:check:cluster:${ctx.runId}`, socket: { reconnectStrategy: false } },
});
observer.on("error", () => {});
await observer.connect();
opened.push(observer);

/**
 * A cluster client for the learner's functions, opened inside `where`, so that a crash of that
 * scope takes every connection to every node along.
 */
export async function learnerCluster(where: Scope = scope("worker")): Promise<Cluster> {
  const cluster: Cluster = where.run(() => createCluster({ rootNodes: local.rootNodes }));
  cluster.on("error", () => {});
  opened.push(cluster);
  await where.run(() => cluster.connect());
  return cluster;
}

export async function slotOf(key: string): Promise<number> {
  return Number(await observer.sendCommand(undefined, true, ["CLUSTER", "KEYSLOT", key]));
}

interface NodeLine {
  id: string;
  port: number;
  primaryOf?: string;
  slots: [number, number][];
}

async function nodes(): Promise<NodeLine[]> {
  const text = String(await observer.sendCommand(undefined, true, ["CLUSTER", "NODES"]));
  return text
    .trim()
    .split("\n")
    .map((line) => {
      const [id = "", addr = "", flags = "", primary = "-", , , , , ...slots] = line.split(" ");
      return {
        id,
        port: Number(/:(\d+)@/.exec(addr)?.[1]),
        primaryOf: flags.includes("slave") ? primary : undefined,
        slots: slots
          .filter((s) => /^\d/.test(s))
          .map((s) => {
            const [from = 0, to = from] = s.split("-").map(Number);
            return [from, to] as [number, number];
          }),
      };
    });
}

/** The port of every node, primaries and replicas. */
export async function allNodePorts(): Promise<number[]> {
  return (await nodes()).map((n) => n.port);
}

/** Every primary of the cluster: its node id and port. */
export async function primaries(): Promise<{ id: string; port: number }[]> {
  return (await nodes())
    .filter((n) => n.primaryOf === undefined && n.slots.length > 0)
    .map(({ id, port }) => ({ id, port }));
}

/** The port of the primary that serves `slot`. */
export async function primaryOf(slot: number): Promise<number> {
  const owner = (await nodes()).find((n) => n.slots.some(([a, b]) => slot >= a && slot <= b));
  return owner?.port ?? 0;
}

/** A replica of the primary that serves `slot`: a node other than the one the writes go to. */
export async function replicaOf(slot: number): Promise<number> {
  const all = await nodes();
  const owner = all.find((n) => n.slots.some(([a, b]) => slot >= a && slot <= b));
  return all.find((n) => owner && n.primaryOf === owner.id)?.port ?? 0;
}

/** A plain connection of the check's to one node. */
export async function nodeClient(port: number, label: string): Promise<Redis> {
  const client: Redis = createClient({
    url: `redis://127.0.0.1:${port}`,
    name: `wb:check:${label}:${ctx.runId}`,
    socket: { reconnectStrategy: false },
  });
  client.on("error", () => {});
  opened.push(client);
  await client.connect();
  return client;
}

/** Creates `group` at 0 on every partition's stream of every stage, as the pipeline does at start. */
export async function createGroups(
  keysOf: (partition: number) => PartitionKeys,
  partitions: number,
  group: string,
): Promise<void> {
  const creating: Promise<unknown>[] = [];
  for (let p = 0; p < partitions; p++) {
    const keys = keysOf(p);
    for (const stage of STAGES) {
      creating.push(observer.xGroupCreate(keys.stream(stage), group, "0", { MKSTREAM: true }));
    }
  }
  await Promise.all(creating);
}

/** The learner's partitionKeys(), called through call() so a TODO or a throw is explained. */
export function keysFor(base: string): (partition: number) => Promise<PartitionKeys> {
  return (partition) =>
    call(`partitionKeys("${base}", ${partition})`, () => exercise.partitionKeys(base, partition));
}

/** How many entries of `stream` are pending in `group`. */
export async function pendingCount(stream: string, group: string): Promise<number> {
  return (await observer.xPending(stream, group)).pending;
}
