/**
 * `npm run pipeline -- --cluster --redis-url URL`: the pipeline on the user's own cluster, here
 * the local six-node one with a password on every node, started as if it were someone else's.
 * Mid-run "their side" fails a primary over: the run's relay follows the slot. The audit finds
 * nothing lost and nothing twice; no key of the run is left on any node; no node received a
 * global command; the password never prints. A plain server refused with what to do.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { createClient } from "redis";
import { afterAll, beforeAll, expect, test } from "vitest";
import { pipelineKeys } from "../../src/pipeline/keys.ts";
import { type LocalCluster, startCluster } from "../../src/redis/cluster-server.ts";
import {
  type PrivateServer,
  redisServerVersion,
  startPrivateServer,
} from "../../src/redis/server.ts";
import { processesWithEnv } from "../support/sandbox.ts";
import { waitFor } from "../support/wait.ts";
import { commandLinesWithPython, ended, pythonWorkers, runPipeline } from "./run-cli.ts";

const installed = Boolean(redisServerVersion());
const password = `pw-${randomBytes(8).toString("hex")}`;
let cluster: LocalCluster | undefined;

/** Commands a run on someone else's cluster must never send (the test's RESETSTAT aside). */
const GLOBAL =
  /^cmdstat_(flushall|flushdb|config\|(?!resetstat)|shutdown|debug|keys|client\|kill|client\|pause|monitor|script\|flush|function\|flush|cluster\|(failover|reset|forget|meet|addslots|delslots|setslot|replicate))\b/;

const admin = (port: number) => {
  const client = createClient({ url: `redis://:${password}@127.0.0.1:${port}` });
  client.on("error", () => {});
  return client;
};

/** Each live node's answer to `ask`. */
async function everyNode(
  ports: number[],
  ask: (client: ReturnType<typeof admin>) => Promise<string[]>,
) {
  return Promise.all(
    ports.map(async (port) => {
      const client = admin(port);
      try {
        await client.connect();
        return await ask(client);
      } finally {
        client.destroy();
      }
    }),
  );
}

async function until(condition: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await condition()) return true;
    await sleep(100);
  }
  return false;
}

beforeAll(async () => {
  if (installed) cluster = await startCluster({ password });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
});

test.skipIf(!installed)(
  "--cluster --redis-url: on the user's cluster, a failover on their side followed, none lost, no key left, no global command, no password printed",
  async () => {
    const c = cluster as LocalCluster;
    const ports = c.nodes.map((n) => n.port);
    await everyNode(ports, async (client) => [await client.configResetStat()]);
    const mark = randomUUID();
    const url = `redis://:${password}@127.0.0.1:${ports[0]}`;
    const python = pythonWorkers(3, "on a user's cluster");
    const run = runPipeline(
      [...["--cluster", "--chaos", "--docs", "150", "--latency", "40"], ...[...python, "--json"]],
      mark,
      // Not --redis-url: the test's own command line would show the password.
      { REDIS_URL: url },
    );
    const commandLines = python.length > 0 ? await commandLinesWithPython(mark, 30_000) : [];
    expect(commandLines.length > 0 || python.length === 0, "no Python worker came up").toBe(true);
    expect(commandLines.filter((line) => line.includes(password))).toEqual([]);
    // Their side: once the first partition is under way, its primary is failed over.
    const keysUnder = /Keys under (pipeline:[0-9a-f]+:)/;
    expect(await waitFor(() => keysUnder.test(run.output.stderr), 30_000), run.output.stderr).toBe(
      true,
    );
    const prefix = keysUnder.exec(run.output.stderr)?.[1] ?? "?";
    const status = pipelineKeys(`${prefix}{p0}:`).status;
    const client = admin(ports[0] ?? 0);
    let failover: Awaited<ReturnType<LocalCluster["failover"]>> | undefined;
    try {
      await client.connect();
      const slot = Number(await client.sendCommand(["CLUSTER", "KEYSLOT", status]));
      const busy = await until(async () => {
        // Only the slot's primary holds it: the others answer MOVED.
        const counts = await everyNode(ports, async (n) => [
          String(await n.hLen(status).catch(() => 0)),
        ]);
        return counts.some(([count]) => Number(count) >= 10);
      }, 30_000);
      expect(busy, "the first partition never took 10 documents").toBe(true);
      failover = await c.failover(slot, { takeoverAfterMs: 1000 });
    } finally {
      client.destroy();
    }
    const { code, audit, all, context } = await ended(run);
    expect(code, context).toBe(0);
    expect(audit, context).toMatchObject({
      ok: true,
      accepted: 150,
      lost: 0,
      duplicated: 0,
      redisRestarts: 0,
      redis: "your cluster",
      // One per partition, each on its partition's relay.
      python: { workers: python.length > 0 ? 3 : 0 },
    });
    expect(all).toContain("no node is killed, restarted or failed over");
    expect(all).not.toContain(password);
    const shape = audit.cluster as {
      nodes: unknown[];
      partitions: { tag: string; node: number; nodeAtEnd: number; accepted: number }[];
    };
    expect(shape.nodes).toEqual([]);
    expect(new Set(shape.partitions.map((p) => p.node)).size).toBe(3);
    const moved = shape.partitions.find((p) => p.tag === "{p0}");
    expect(moved?.node, context).toBe(failover?.killed);
    expect(moved?.nodeAtEnd, context).toBe(failover?.promoted);

    const live = ports.filter((port) => port !== failover?.killed);
    // Read first: the KEYS below, and a TAKEOVER the failover above may have sent, are the test's.
    const stats = await everyNode(live, async (n) =>
      (await n.info("commandstats")).split("\r\n").filter((line) => GLOBAL.test(line)),
    );
    const ours = failover?.how === "takeover" ? ["cmdstat_cluster|failover:calls=1,"] : [];
    expect(
      stats.flat().filter((line) => !ours.some((own) => line.startsWith(own))),
      "global commands on a node",
    ).toEqual([]);
    const left = await everyNode(live, (n) => n.keys(`${prefix}*`));
    expect(left.flat(), "keys of the run left on a node").toEqual([]);
    expect(await waitFor(() => processesWithEnv(mark).length === 0, 10_000), "processes left").toBe(
      true,
    );
  },
  90_000,
);

let plain: PrivateServer | undefined;
afterAll(async () => {
  await plain?.stop();
});

test.skipIf(!installed)(
  "--cluster --redis-url with a URL that is not a cluster, or not reachable: refused, naming the option given",
  async () => {
    plain = await startPrivateServer();
    const notCluster = runPipeline(["--cluster", "--redis-url", plain.url], randomUUID());
    const refused = await ended(notCluster);
    expect(refused.code).toBe(2);
    expect(refused.all).toContain("is not a Redis Cluster");
    expect(refused.all).toContain("Leave out --cluster");
    await plain.stop();
    const gone = runPipeline(["--cluster", "--redis-url", plain.url], randomUUID());
    const unreachable = await ended(gone);
    expect(unreachable.code).toBe(2);
    expect(unreachable.all).toContain("Could not connect to --redis-url");
    expect(unreachable.all).toContain("leave out --redis-url");
    expect(unreachable.all).not.toContain("REDIS_URL");
  },
  30_000,
);
