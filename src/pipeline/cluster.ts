/**
 * `--cluster`: the pipeline on the local six-node Redis Cluster. The documents are split into
 * partitions, one per primary, whose keys all carry the partition's hash tag
 * ("pipeline:{p0}:stage:ocr", "pipeline:{p0}:doc:<id>", ...), so every key of a partition is in
 * one slot: each partition is a whole single-server pipeline (lesson 13/16 parts unchanged, a
 * hand-off's MULTI in one slot, plain blocking reads) talking to the node that owns its slot
 * through a relay (partition-proxy.ts). With chaos, one primary is SIGKILLed mid-run; its replica
 * takes the slot over and the relay moves the partition's connections to it.
 */
import { type Failover, keySlot, servers, startCluster } from "../redis/cluster-server.ts";
import { type Audit, percentile } from "./audit.ts";
import { pipelineKeys, type StatusEvent } from "./keys.ts";
import { type PartitionProxy, startPartitionProxy } from "./partition-proxy.ts";
import { connectClient } from "./parts.ts";
import {
  type PipelineOptions,
  type PipelineReport,
  runPipeline,
  sampleUploads,
} from "./pipeline.ts";

/**
 * One replica per primary; a short timeout, because after the failover the promoted replica has
 * none, and its partition then pays this on every write until the run ends.
 */
/** One partition per primary of the local cluster; each gets at least one worker process. */
export const PARTITIONS = 3;

export const REPLICA_WAIT = { replicas: 1, timeoutMs: 100 };

export interface Partition {
  /** The hash tag every key of the partition carries, e.g. "{p0}". */
  tag: string;
  slot: number;
  /** The port of the node serving the slot at the start, and at the end. */
  node: number;
  nodeAtEnd: number;
  /** The relay's port, and the partition's API. */
  relay: number;
  apiUrl: string;
  audit: Audit;
}

export interface ClusterReport {
  audit: Audit;
  partitions: Partition[];
  failover?: Failover;
  reports: PipelineReport[];
  workerLog: string[];
  /** Every partition's status events, for the run's upload-to-done times. */
  events: StatusEvent[];
  plainPort?: undefined;
  /** Every node of the cluster, stopped and removed by the time the report is returned. */
  nodes: { port: number; dir: string }[];
}

/** The cluster's part of the text report: where each partition ran, and the failover. */
export function renderCluster(report: ClusterReport, wait: boolean): string {
  const lines = report.partitions.map(
    (p) =>
      `  ${p.tag.padEnd(6)} slot ${String(p.slot).padStart(5)}  node ${p.node}${p.nodeAtEnd === p.node ? "" : ` -> ${p.nodeAtEnd}`}  ${p.audit.accepted} accepted, ${p.audit.lost} lost, ${p.audit.duplicated} duplicated`,
  );
  const f = report.failover;
  if (f)
    lines.push(`  failover: ${f.killed} SIGKILLed, ${f.promoted} promoted (${f.how}, ${f.ms} ms)`);
  lines.push(`  WAIT 1 after each acknowledged write: ${wait ? "on" : "off (--no-wait)"}`);
  return `Cluster partitions\n${lines.join("\n")}`;
}

/** What --json adds about the cluster: each partition's slot and node, and the failover. */
export function clusterShape(report: ClusterReport, wait: boolean) {
  return {
    wait,
    partitions: report.partitions.map((p) => ({
      tag: p.tag,
      slot: p.slot,
      node: p.node,
      nodeAtEnd: p.nodeAtEnd,
      relay: p.relay,
      apiUrl: p.apiUrl,
      accepted: p.audit.accepted,
      lost: p.audit.lost,
      duplicated: p.audit.duplicated,
    })),
    failover: report.failover ?? null,
    nodes: report.nodes,
  };
}

/** One tag per primary: "{p<i>}" for the first i whose slot a primary not yet taken owns. */
async function partitionTags(port: number, primaries: number) {
  const chosen: { tag: string; slot: number; node: number }[] = [];
  for (let i = 0; chosen.length < primaries && i < 1000; i++) {
    const tag = `{p${i}}`;
    const slot = await keySlot(port, tag);
    const [node] = await servers(port, slot);
    if (node !== undefined && !chosen.some((c) => c.node === node))
      chosen.push({ tag, slot, node });
  }
  return chosen;
}

/** Each partition's share of `total`, as even as it goes: 5 over 3 is [2, 2, 1]. */
export function shares(total: number, parts: number): number[] {
  return Array.from(
    { length: parts },
    (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0),
  );
}

/** The partitions' audits as one: counts add up, latencies and rates over the whole run. */
export function combineAudits(audits: Audit[], latencies: number[]): Audit {
  const sum = (pick: (a: Audit) => number) => audits.reduce((n, a) => n + pick(a), 0);
  const durationMs = Math.max(0, ...audits.map((a) => a.durationMs));
  const finished = sum((a) => a.completed + a.deadLettered);
  return {
    ok: audits.every((a) => a.ok),
    submitted: sum((a) => a.submitted),
    accepted: sum((a) => a.accepted),
    notAccepted: sum((a) => a.notAccepted),
    rejected: sum((a) => a.rejected),
    rejectedWrongly: sum((a) => a.rejectedWrongly),
    completed: sum((a) => a.completed),
    deadLettered: sum((a) => a.deadLettered),
    lost: sum((a) => a.lost),
    duplicated: sum((a) => a.duplicated),
    wrongResults: sum((a) => a.wrongResults),
    unexpected: sum((a) => a.unexpected),
    apiLatencyMs: { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) },
    durationMs,
    docsPerSecond: durationMs > 0 ? Math.round((finished / (durationMs / 1000)) * 10) / 10 : 0,
    workersKilled: sum((a) => a.workersKilled),
    redisRestarts: sum((a) => a.redisRestarts),
    retried: sum((a) => a.retried),
    statusEvents: {
      heard: sum((a) => a.statusEvents.heard),
      published: sum((a) => a.statusEvents.published),
    },
    deadLetters: audits.flatMap((a) => a.deadLetters),
    problems: audits.flatMap((a) => a.problems).slice(0, 12),
  };
}

/**
 * Waits until `partition` has taken half its documents (its status hash holds one field per
 * accepted document), then fails its slot's primary over and moves the relay to the replica.
 */
async function failoverMidRun(options: {
  url: string;
  prefix: string;
  half: number;
  slot: number;
  proxy: PartitionProxy;
  failover: (slot: number) => Promise<Failover>;
  signal: AbortSignal;
  log: (line: string) => void;
}): Promise<Failover | undefined> {
  const client = await connectClient(options.url, "pipeline:cluster-chaos");
  try {
    const status = pipelineKeys(options.prefix).status;
    while (!options.signal.aborted && (await client.hLen(status)) < options.half) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  } finally {
    client.destroy();
  }
  if (options.signal.aborted) return undefined;
  options.log(`chaos: SIGKILL the primary of slot ${options.slot} (port ${options.proxy.target})`);
  const done = await options.failover(options.slot);
  options.proxy.retarget(done.promoted);
  options.log(
    `chaos: port ${done.promoted} serves slot ${options.slot} (${done.how}, ${done.ms} ms)`,
  );
  return done;
}

export async function runClusterPipeline(
  options: PipelineOptions & { wait: boolean },
): Promise<ClusterReport> {
  const log = options.log ?? (() => {});
  const cluster = await startCluster({ primaries: PARTITIONS });
  const proxies: PartitionProxy[] = [];
  const halt = new AbortController();
  const relay = () => halt.abort();
  options.signal?.addEventListener("abort", relay, { once: true });
  try {
    const first = cluster.nodes[0]?.port ?? 0;
    const tags = await partitionTags(first, PARTITIONS);
    for (const { node } of tags) proxies.push(await startPartitionProxy(node));
    const uploads = options.uploads ?? sampleUploads(options.docs, options.poison);
    const docShares = shares(uploads.length, tags.length);
    const workerShares = shares(Math.max(options.workers, tags.length), tags.length);
    let offset = 0;
    const runs = tags.map((t, i) => {
      const mine = uploads.slice(offset, offset + (docShares[i] ?? 0));
      offset += mine.length;
      const prefix = `${options.prefix}${t.tag}:`;
      return {
        prefix,
        mine,
        run: runPipeline({
          ...options,
          uploads: mine,
          workers: workerShares[i] ?? 1,
          redisUrl: proxies[i]?.url,
          prefix,
          names: { system: `pipeline:${t.tag}:`, worker: `pipeline:${t.tag}:` },
          view: undefined,
          dashboard: undefined,
          onStart: undefined,
          replicaWait: options.wait ? REPLICA_WAIT : undefined,
          signal: halt.signal,
          log: (line) => log(`${t.tag} ${line}`),
        }),
      };
    });
    const target = runs[0];
    const proxy = proxies[0];
    const chaos =
      options.chaos && target && proxy && tags[0]
        ? failoverMidRun({
            url: proxy.url,
            prefix: target.prefix,
            half: Math.ceil(target.mine.length / 2),
            slot: tags[0].slot,
            proxy,
            failover: (slot) => cluster.failover(slot, { takeoverAfterMs: 1000 }),
            signal: halt.signal,
            log,
          })
        : Promise.resolve(undefined);
    // Settled at once, so that a failover that fails while the runs go on is no unhandled rejection.
    const failing = Promise.allSettled([chaos]);
    const settled = await Promise.allSettled(runs.map((r) => r.run));
    halt.abort();
    const [chaosEnded] = await failing;
    const failed = [chaosEnded, ...settled].find((s) => s?.status === "rejected");
    if (failed) throw failed.reason;
    const failover = chaosEnded?.status === "fulfilled" ? chaosEnded.value : undefined;
    const reports = settled.map((s) => (s as PromiseFulfilledResult<PipelineReport>).value);
    const partitions = tags.map((t, i) => ({
      ...t,
      nodeAtEnd: proxies[i]?.target ?? t.node,
      relay: Number(new URL(proxies[i]?.url ?? "redis://x:0").port),
      apiUrl: (reports[i] as PipelineReport).apiUrl,
      audit: (reports[i] as PipelineReport).audit,
    }));
    return {
      audit: combineAudits(
        reports.map((r) => r.audit),
        reports.flatMap((r) => r.feed.latencies),
      ),
      partitions,
      failover,
      reports,
      workerLog: reports.flatMap((r) => r.workerLog),
      events: reports.flatMap((r) => r.events),
      nodes: cluster.nodes.map(({ port, dir }) => ({ port, dir })),
    };
  } finally {
    halt.abort();
    options.signal?.removeEventListener("abort", relay);
    for (const proxy of proxies) await proxy.close();
    await cluster.stop();
  }
}
