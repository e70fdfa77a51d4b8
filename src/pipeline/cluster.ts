/**
 * `--cluster`: the pipeline on the local six-node Redis Cluster. The documents are split into
 * partitions, one per primary, whose keys all carry the partition's hash tag
 * ("pipeline:{p0}:stage:ocr", "pipeline:{p0}:doc:<id>", ...), so every key of a partition is in
 * one slot: each partition is a whole single-server pipeline (lesson 13/16 parts unchanged, a
 * hand-off's MULTI in one slot, plain blocking reads) talking to the node that owns its slot
 * through a relay (partition-proxy.ts). With chaos, one primary is SIGKILLed mid-run; its replica
 * takes the slot over and the relay moves the partition's connections to it. With `tls` the
 * cluster is TLS-only: the relays carry TLS through, and every process verifies the nodes'
 * certificate with the cluster's CA against the name on it.
 */
import { type Failover, startCluster } from "../redis/cluster-server.ts";
import { type Audit, percentile } from "./audit.ts";
import { clusterDashboard } from "./cluster-dashboard.ts";
import { keySlotOf } from "./key-slot.ts";
import { pipelineKeys, type StatusEvent } from "./keys.ts";
import { trustForRun } from "./local-redis.ts";
import { type PartitionProxy, startPartitionProxy } from "./partition-proxy.ts";
import { connectClient } from "./parts.ts";
import {
  type PipelineOptions,
  type PipelineReport,
  runPipeline,
  sampleUploads,
} from "./pipeline.ts";
import {
  nodeUrl,
  oneShot,
  ownerOf,
  primaries,
  type SlotRange,
  slotMap,
  slotMapFromAny,
} from "./user-cluster.ts";

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
  /** The node serving the slot at the start, and at the end (a failover moves it). */
  host: string;
  node: number;
  hostAtEnd: string;
  nodeAtEnd: number;
  /** Whether its writes WAIT for a replica (not with --no-wait, nor on a primary without one). */
  wait: boolean;
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
  pythonNerDone: number;
  /**
   * Every node of the local cluster, stopped and removed by the time the report is returned;
   * none on the user's.
   */
  nodes: ClusterNodeAtEnd[];
}

export interface ClusterNodeAtEnd {
  port: number;
  dir: string;
  /** A TLS cluster's: each live node's plain port at the end (0: closed); the killed one's null. */
  plainPort?: number | null;
}

/** The cluster's part of the text report: where each partition ran, and the failover. */
export function renderCluster(report: ClusterReport, wait: boolean): string {
  const at = (host: string, port: number) =>
    host === "127.0.0.1" ? String(port) : `${host}:${port}`;
  const lines = report.partitions.map((p) => {
    const start = at(p.host, p.node);
    const end = at(p.hostAtEnd, p.nodeAtEnd);
    return `  ${p.tag.padEnd(6)} slot ${String(p.slot).padStart(5)}  node ${start}${end === start ? "" : ` -> ${end}`}  ${p.audit.accepted} accepted, ${p.audit.lost} lost, ${p.audit.duplicated} duplicated`;
  });
  const f = report.failover;
  if (f)
    lines.push(`  failover: ${f.killed} SIGKILLed, ${f.promoted} promoted (${f.how}, ${f.ms} ms)`);
  const unreplicated = report.partitions.filter((p) => !p.wait).map((p) => p.tag);
  const how = !wait
    ? "off (--no-wait)"
    : unreplicated.length > 0
      ? `on, but not for ${unreplicated.join(" ")} (its primary has no replica)`
      : "on";
  lines.push(`  WAIT 1 after each acknowledged write: ${how}`);
  const asked = report.nodes.filter((n) => typeof n.plainPort === "number");
  if (asked.length > 0) {
    const open = asked.filter((n) => n.plainPort !== 0).map((n) => n.port);
    lines.push(
      open.length === 0
        ? `  TLS only: no plain port open on any of the ${asked.length} live nodes at the end`
        : `  plain port OPEN on nodes ${open.join(" ")}`,
    );
  }
  return `Cluster partitions\n${lines.join("\n")}`;
}

/** What --json adds about the cluster: each partition's slot and node, and the failover. */
export function clusterShape(report: ClusterReport, wait: boolean) {
  return {
    wait,
    partitions: report.partitions.map((p) => ({
      tag: p.tag,
      slot: p.slot,
      host: p.host,
      node: p.node,
      hostAtEnd: p.hostAtEnd,
      nodeAtEnd: p.nodeAtEnd,
      wait: p.wait,
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

/** Where a partition runs: its tag, its slot, the primary serving it and how many replicas. */
interface Placement {
  tag: string;
  slot: number;
  host: string;
  node: number;
  replicas: number;
}

/** The first `count` of "{p0}", "{p1}", ... whose slots `primaryOf` gives to distinct primaries. */
async function chooseTags(
  count: number,
  slotsOf: (tags: string[]) => Promise<number[]>,
  primaryOf: (slot: number) => Promise<Omit<Placement, "tag" | "slot"> | undefined>,
): Promise<Placement[]> {
  const chosen: Placement[] = [];
  for (let from = 0; chosen.length < count && from < 1000; from += 32) {
    const tags = Array.from({ length: 32 }, (_, i) => `{p${from + i}}`);
    const slots = await slotsOf(tags);
    for (const [i, tag] of tags.entries()) {
      const slot = slots[i] ?? 0;
      const owner = chosen.length < count ? await primaryOf(slot) : undefined;
      if (owner && !chosen.some((c) => c.host === owner.host && c.node === owner.node))
        chosen.push({ tag, slot, ...owner });
    }
  }
  return chosen;
}

/**
 * The cluster a run uses: the local one it starts (which chaos may fail over), or the user's,
 * whose slot owners it only reads and follows.
 */
interface ClusterSide {
  placements: Placement[];
  /** What a partition's clients connect to, given its relay's port (with the user's password). */
  relayUrl(port: number): string;
  /** Local only: SIGKILL the slot's primary and wait for its replica to take over. */
  failover?: (slot: number) => Promise<Failover>;
  /** The user's only: the slot map now, read from any node that answers. */
  slotMap?: () => Promise<SlotRange[]>;
  /** The CA every process verifies the nodes with, on a local TLS cluster. */
  caFile?: string;
  /** The nodes as they are now, before stop(). */
  nodes(): Promise<ClusterNodeAtEnd[]>;
  stop(): Promise<void>;
}

async function localSide(count: number, tls: boolean): Promise<ClusterSide> {
  const cluster = await startCluster({ primaries: count, tls });
  // The relays are on 127.0.0.1, which the certificate does not name: give its name.
  const untrust = cluster.tls
    ? trustForRun(cluster.tls.caFile, cluster.tls.servername)
    : () => undefined;
  const stop = async () => {
    untrust();
    await cluster.stop();
  };
  const scheme = cluster.tls ? "rediss" : "redis";
  const killed = new Set<number>();
  try {
    const placements = await chooseTags(
      count,
      (tags) => Promise.all(tags.map((tag) => cluster.keySlot(tag))),
      async (slot) => {
        const [node] = await cluster.servers(slot);
        return node === undefined ? undefined : { host: "127.0.0.1", node, replicas: 1 };
      },
    );
    return {
      placements,
      relayUrl: (port) => `${scheme}://127.0.0.1:${port}`,
      failover: async (slot) => {
        const done = await cluster.failover(slot, { takeoverAfterMs: 1000 });
        killed.add(done.killed);
        return done;
      },
      caFile: cluster.tls?.caFile,
      nodes: () =>
        Promise.all(
          cluster.nodes.map(async ({ port, dir, url }) => {
            if (!cluster.tls) return { port, dir };
            // Asked the way the pipeline connects: if a plain port were open, it would say so.
            const plainPort = killed.has(port) ? null : await configPort(url);
            return { port, dir, plainPort };
          }),
        ),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** CONFIG GET port on one node. */
async function configPort(url: string): Promise<number> {
  const client = oneShot(url, "pipeline:cluster-check");
  try {
    await client.connect();
    return Number((await client.configGet("port")).port);
  } finally {
    client.destroy();
  }
}

/**
 * The user's cluster: one partition per primary. Its URL comes from openUserRedis, which also
 * named the certificate the relayed TLS connections check.
 */
async function usersSide(url: string): Promise<ClusterSide> {
  const map = await slotMap(url);
  const nodes = primaries(map).map((node) => nodeUrl(url, node));
  const placements = await chooseTags(
    primaries(map).length,
    async (tags) => tags.map(keySlotOf),
    async (slot) => {
      const range = ownerOf(map, slot);
      return (
        range && { ...range.primary, node: range.primary.port, replicas: range.replicas.length }
      );
    },
  );
  return {
    placements,
    relayUrl: (port) => nodeUrl(url, { host: "127.0.0.1", port }),
    slotMap: () => slotMapFromAny([url, ...nodes]),
    nodes: async () => [],
    async stop() {},
  };
}

/**
 * Every second, asks the user's cluster who serves each partition's slot; when a failover on
 * their side moved one, the partition's relay follows it (its clients reconnect, as after a
 * restart). Resolves when `signal` aborts.
 */
async function followSlots(options: {
  placements: Placement[];
  proxies: PartitionProxy[];
  slotMap: () => Promise<SlotRange[]>;
  signal: AbortSignal;
  log: (line: string) => void;
}): Promise<void> {
  const { signal } = options;
  while (!signal.aborted) {
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 1000);
      signal.addEventListener("abort", () => resolve(clearTimeout(timer)), { once: true });
    });
    // One slot map a second for every partition: each read is a connection (TLS on Azure).
    const map = await options.slotMap().catch(() => undefined);
    for (const [i, p] of options.placements.entries()) {
      const proxy = options.proxies[i];
      const now = map && ownerOf(map, p.slot)?.primary;
      if (signal.aborted || !proxy || !now) continue;
      if (now.port !== proxy.target || now.host !== proxy.targetHost) {
        options.log(`slot ${p.slot} moved to ${now.host}:${now.port}: its relay follows`);
        proxy.retarget(now.port, now.host);
      }
    }
  }
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
  options: PipelineOptions & {
    wait: boolean;
    clusterUrl?: string;
    /** With `dashboard`: where the one page for every partition is, once it is up. */
    onDashboard?: (url: string) => void;
    /** With `tls` (the local cluster): the CA every process verifies the nodes with. */
    onTls?: (caFile: string) => void;
  },
): Promise<ClusterReport> {
  const log = options.log ?? (() => {});
  const side = options.clusterUrl
    ? await usersSide(options.clusterUrl)
    : await localSide(PARTITIONS, options.tls === true);
  if (side.caFile) options.onTls?.(side.caFile);
  const proxies: PartitionProxy[] = [];
  const halt = new AbortController();
  const relay = () => halt.abort();
  options.signal?.addEventListener("abort", relay, { once: true });
  const page = options.dashboard
    ? clusterDashboard({
        partitions: side.placements.length,
        port: options.dashboard.port,
        signal: halt.signal,
      })
    : undefined;
  try {
    const tags = side.placements;
    page?.started.then(options.onDashboard, () => {});
    // What happens to the cluster goes to the page's log too.
    const tell = (line: string) => {
      log(line);
      page?.note(line);
    };
    for (const { node, host } of tags) proxies.push(await startPartitionProxy(node, host));
    const uploads = options.uploads ?? sampleUploads(options.docs, options.poison);
    const docShares = shares(uploads.length, tags.length);
    const workerShares = shares(Math.max(options.workers, tags.length), tags.length);
    const pythonShares = shares(options.pythonWorkers ?? 0, tags.length);
    let offset = 0;
    let firstError: { error: unknown } | undefined;
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
          pythonWorkers: pythonShares[i] ?? 0,
          redisUrl: side.relayUrl(proxies[i]?.port ?? 0),
          prefix,
          names: { system: `pipeline:${t.tag}:`, worker: `pipeline:${t.tag}:` },
          view: undefined,
          dashboard: undefined,
          joinDashboard: page?.join(i, t.tag),
          onStart: undefined,
          // A primary without a replica would only make every WAIT wait out its timeout.
          replicaWait: options.wait && t.replicas > 0 ? REPLICA_WAIT : undefined,
          signal: halt.signal,
          log: (line) => log(`${t.tag} ${line}`),
        }).catch((error: unknown) => {
          // The others stop too (and none waits for it on the dashboard); its error is the cause.
          firstError ??= { error };
          halt.abort();
          throw error;
        }),
      };
    });
    const target = runs[0];
    const proxy = proxies[0];
    const failover = side.failover;
    const chaos =
      options.chaos && failover && target && proxy && tags[0]
        ? failoverMidRun({
            url: side.relayUrl(proxy.port),
            prefix: target.prefix,
            half: Math.ceil(target.mine.length / 2),
            slot: tags[0].slot,
            proxy,
            failover,
            signal: halt.signal,
            log: tell,
          })
        : Promise.resolve(undefined);
    const slotMapNow = side.slotMap;
    const following = slotMapNow
      ? followSlots({
          placements: tags,
          proxies,
          slotMap: slotMapNow,
          signal: halt.signal,
          log: tell,
        })
      : Promise.resolve();
    // Settled at once, so that a failover that fails while the runs go on is no unhandled rejection.
    const failing = Promise.allSettled([chaos, following]);
    const settled = await Promise.allSettled(runs.map((r) => r.run));
    halt.abort();
    const [chaosEnded, followEnded] = await failing;
    if (firstError) throw firstError.error;
    const failed = [chaosEnded, followEnded].find((s) => s?.status === "rejected");
    if (failed?.status === "rejected") throw failed.reason;
    const failedOver = chaosEnded?.status === "fulfilled" ? chaosEnded.value : undefined;
    const reports = settled.map((s) => (s as PromiseFulfilledResult<PipelineReport>).value);
    const partitions = tags.map((t, i) => ({
      tag: t.tag,
      slot: t.slot,
      host: t.host,
      node: t.node,
      hostAtEnd: proxies[i]?.targetHost ?? t.host,
      nodeAtEnd: proxies[i]?.target ?? t.node,
      wait: options.wait && t.replicas > 0,
      relay: proxies[i]?.port ?? 0,
      apiUrl: (reports[i] as PipelineReport).apiUrl,
      audit: (reports[i] as PipelineReport).audit,
    }));
    const combined = combineAudits(
      reports.map((r) => r.audit),
      reports.flatMap((r) => r.feed.latencies),
    );
    await page?.finish(combined);
    return {
      audit: combined,
      partitions,
      failover: failedOver,
      reports,
      pythonNerDone: reports.reduce((n, r) => n + r.pythonNerDone, 0),
      workerLog: reports.flatMap((r) => r.workerLog),
      events: reports.flatMap((r) => r.events),
      nodes: await side.nodes(),
    };
  } finally {
    halt.abort();
    options.signal?.removeEventListener("abort", relay);
    await page?.close();
    for (const proxy of proxies) await proxy.close();
    await side.stop();
  }
}
