/**
 * The whole system in one call: a Redis, the intake API, the stage workers, the feeder, the
 * live view, chaos if asked, and the audit at the end. Everything started here is stopped here,
 * on every path out: finished, failed, or aborted (Ctrl+C).
 */
import { randomBytes } from "node:crypto";
import { type Api, startApi } from "./api.ts";
import { type Audit, audit, collect } from "./audit.ts";
import type { BatchSettings } from "./batch-loop.ts";
import { type Chaos, startChaos } from "./chaos.ts";
import { type Dashboard, type DashboardPartition, startDashboard } from "./dashboard/index.ts";
import { poisoned, sampleUpload, type Upload } from "./documents.ts";
import { type FeedResult, feed, type Submission } from "./feeder.ts";
import { pipelineKeys, STAGES, type StatusEvent } from "./keys.ts";
import { type LocalRedis, startLocalRedis } from "./local-redis.ts";
import { connectClient, loadParts } from "./parts.ts";
import { startPythonWorkers } from "./python.ts";
import { type ReplicaWait, waitForReplicas } from "./replica-wait.ts";
import type { LoopConfig } from "./stage-loop.ts";
import { Supervisor } from "./supervisor.ts";
import { startView } from "./view.ts";

export interface PipelineOptions extends LoopConfig {
  /** How many sample documents to upload (ignored when `uploads` is given). */
  docs: number;
  uploads?: Upload[];
  /** Poison documents among the samples. */
  poison: number;
  /** Worker processes; each runs one worker per stage. */
  workers: number;
  /** Python NER workers (lessons/13-capstone-pipeline/ner_worker.py) beside them; default 0. */
  pythonWorkers?: number;
  chaos: boolean;
  /** The file with the lesson's parts (nextWork, handOff, deadLetter, broadcast). */
  parts: string;
  /** Batched stages with lesson 16's parts; absent: one document at a time with `parts`. */
  batch?: BatchSettings;
  /** Uploads in flight at once. */
  concurrency: number;
  /** Documents per upload request (POST /documents/batch); absent or 1: one each. */
  bulk?: number;
  /** The API answers 429 while a stage has more documents waiting; absent: no limit. */
  maxBacklog?: number;
  badRequests: boolean;
  maxBytes: number;
  /** Stop waiting when no document has finished for this long. */
  stallMs: number;
  /** Use this server instead of starting one (no Redis restart then). */
  redisUrl?: string;
  /** Without redisUrl: start a TLS-only server, and connect everything over rediss://. */
  tls?: boolean;
  prefix: string;
  /** Connection names start with these: the system's own, and the workers' (CLIENT LIST). */
  names?: { system: string; worker: string };
  /** On a cluster: WAIT for replicas after every acknowledged write (replica-wait.ts). */
  replicaWait?: ReplicaWait;
  /** Replace workers that are killed (chaos does, the lesson's check does not). */
  replaceWorkers: boolean;
  view?: { tty: boolean; intervalMs: number; write: (text: string) => void };
  onSpawn?: (pid: number) => void;
  log?: (line: string) => void;
  /** Serve the live dashboard (src/pipeline/dashboard/) on 127.0.0.1; port 0: a free one. */
  dashboard?: { port: number };
  /** A partition of a cluster run: join the run's one dashboard instead (cluster.ts). */
  joinDashboard?: (part: Omit<DashboardPartition, "tag">) => Promise<Dashboard>;
  /** Called once everything is up: where to point redis-cli, curl and a browser. */
  onStart?: (where: {
    redisUrl: string;
    apiUrl: string;
    dashboardUrl?: string;
    /** The CA of the TLS server the run started. */
    caFile?: string;
  }) => void;
  signal?: AbortSignal;
}

export interface PipelineReport {
  audit: Audit;
  accepted: Submission[];
  feed: FeedResult;
  events: StatusEvent[];
  docs: Record<string, Record<string, string>>;
  /** The last lines the workers wrote on stderr: the learner's errors among them. */
  workerLog: string[];
  workerExits: { slot: string; how: string }[];
  redisUrl: string;
  apiUrl: string;
  /** Documents whose NER the Python workers did (the stats hash's "ner:done:python"). */
  pythonNerDone: number;
  /** The server's plain (non-TLS) port at the end of a --tls run: 0, nothing but TLS got in. */
  plainPort?: number;
}

export const DEFAULTS: Omit<PipelineOptions, "parts" | "prefix"> = {
  docs: 100,
  poison: 0,
  workers: 2,
  chaos: false,
  latencyMs: 20,
  failureRate: 0.02,
  maxDeliveries: 4,
  claimIdleMs: 1500,
  blockMs: 500,
  concurrency: 16,
  badRequests: true,
  maxBytes: 64 * 1024,
  stallMs: 30_000,
  replaceWorkers: true,
};

/** The sample uploads, with `poison` of them spread evenly, each failing at some stage. */
export function sampleUploads(count: number, poison: number): Upload[] {
  const uploads = Array.from({ length: count }, (_, i) => sampleUpload(i));
  for (let k = 0; k < Math.min(poison, count); k++) {
    const at = Math.floor(((k + 0.5) * count) / poison);
    uploads[at] = poisoned(uploads[at] as Upload, STAGES[k % STAGES.length] ?? "ocr");
  }
  return uploads;
}

/** Runs `read` again when it fails, as commands in flight do while Redis restarts. */
async function retry<T>(read: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await read();
    } catch (error) {
      if (attempt >= 5) throw error;
      await new Promise((resolve) => setTimeout(resolve, 300 * attempt));
    }
  }
}

function aborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new Error("stopped");
}

export async function runPipeline(options: PipelineOptions): Promise<PipelineReport> {
  const log = options.log ?? (() => {});
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  const keys = pipelineKeys(options.prefix);
  const workerLog: string[] = [];
  const names = options.names ?? { system: "pipeline:", worker: "pipeline:" };
  // Stops the feeder on every way out, not only when the caller aborts.
  const halt = new AbortController();
  const relay = () => halt.abort();
  options.signal?.addEventListener("abort", relay, { once: true });
  cleanup.push(() => options.signal?.removeEventListener("abort", relay));
  try {
    const parts = await loadParts(options.parts);
    let server: LocalRedis | undefined;
    let url = options.redisUrl;
    if (!url) {
      server = await startLocalRedis({ tls: options.tls, aof: options.chaos });
      cleanup.push(() => server?.stop());
      url = server.url;
    }
    const redisUrl = url;
    aborted(options.signal);
    const control = await connectClient(redisUrl, `${names.system}control`);
    cleanup.push(() => control.destroy());
    for (const stage of STAGES) {
      await control
        .xGroupCreate(keys.stream(stage), stage, "0", { MKSTREAM: true })
        .catch((error: Error) => {
          if (!/BUSYGROUP/.test(error.message)) throw error;
        });
    }

    const replicaWait = options.replicaWait;
    const apiClient = await connectClient(redisUrl, `${names.system}api`);
    cleanup.push(() => apiClient.destroy());
    const api: Api = await startApi({
      client: apiClient,
      keys,
      broadcast: parts.broadcast,
      maxBytes: options.maxBytes,
      maxBacklog: options.maxBacklog,
      afterQueued: replicaWait && ((client) => waitForReplicas(client, replicaWait)),
    });
    cleanup.push(() => api.close());

    const events: StatusEvent[] = [];
    // Documents whose last event (embed done, or dead) was heard: probably finished.
    const settled = new Set<string>();
    const subscriber = control.duplicate();
    subscriber.on("error", () => {});
    await subscriber.connect();
    cleanup.push(() => subscriber.destroy());
    await subscriber.subscribe(keys.channel, (message) => {
      try {
        const event = JSON.parse(message) as StatusEvent;
        events.push(event);
        if (event.state === "dead" || (event.stage === "embed" && event.state === "done")) {
          settled.add(event.doc);
        }
      } catch {
        // not ours to judge here: the audit only counts what it can read
      }
    });

    let dashboard: Dashboard | undefined;
    const supervisor = new Supervisor({
      replace: options.replaceWorkers,
      onSpawn: options.onSpawn,
      onEvent: (event) => dashboard?.workerEvent(event),
      onLog: (slot, line) => {
        workerLog.push(`worker ${slot}: ${line}`);
        if (workerLog.length > 200) workerLog.splice(0, 100);
      },
      settings: (slot) => ({
        redisUrl,
        prefix: options.prefix,
        slot,
        clientName: names.worker,
        stages: [...STAGES],
        parts: options.parts,
        batch: options.batch,
        replicaWait,
        loop: {
          latencyMs: options.latencyMs,
          failureRate: options.failureRate,
          maxDeliveries: options.maxDeliveries,
          claimIdleMs: options.claimIdleMs,
          blockMs: options.blockMs,
        },
      }),
    });
    cleanup.push(() => supervisor.stopAll());

    const unfinished = new Set<string>();
    let finished = 0;
    // Documents the dashboard's button uploads during the run: accounted for like the feeder's.
    const extra: FeedResult = { accepted: [], failed: [], rejected: [], latencies: [], retries: 0 };
    let extraInFlight = 0;
    let acceptingExtra = true;
    const uploadExtra = async (upload: Upload): Promise<string> => {
      if (!acceptingExtra) throw new Error("The run is finishing: it takes no more uploads.");
      extraInFlight++;
      try {
        const fed = await feed({
          apiUrl: api.url,
          uploads: [upload],
          runId: randomBytes(4).toString("hex"),
          concurrency: 1,
          badRequests: false,
          maxBytes: options.maxBytes,
          signal: halt.signal,
          onAccepted: (s) => unfinished.add(s.id),
        });
        extra.accepted.push(...fed.accepted);
        extra.failed.push(...fed.failed);
        extra.latencies.push(...fed.latencies);
        const accepted = fed.accepted[0];
        if (!accepted) throw new Error(`The API refused it: ${fed.failed[0]?.reason ?? "?"}`);
        return accepted.id;
      } finally {
        extraInFlight--;
      }
    };
    if (options.joinDashboard) {
      dashboard = await options.joinDashboard({ redisUrl, keys, supervisor, upload: uploadExtra });
    } else if (options.dashboard) {
      dashboard = await startDashboard({
        redisUrl,
        keys,
        port: options.dashboard.port,
        clientName: `${names.system}dashboard-`,
        supervisor,
        upload: uploadExtra,
      });
      cleanup.push(() => dashboard?.close());
    }

    const first = Array.from({ length: options.workers }, (_, i) =>
      supervisor.start(String(i + 1)),
    );
    const ready = await Promise.all(first.map((w) => w.ready));
    if (ready.includes(false)) {
      throw new Error(`a worker stopped while starting:\n${workerLog.slice(-10).join("\n")}`);
    }
    const python = startPythonWorkers({
      count: options.pythonWorkers ?? 0,
      redisUrl,
      prefix: options.prefix,
      loop: options,
      onSpawn: options.onSpawn,
      onLog: (slot, line) => workerLog.push(`worker ${slot}: ${line}`),
    });
    cleanup.push(() => python.stop());
    if (!(await python.ready)) {
      throw new Error(
        `a Python worker stopped while starting:\n${workerLog.slice(-10).join("\n")}`,
      );
    }
    aborted(options.signal);
    options.onStart?.({
      redisUrl,
      apiUrl: api.url,
      dashboardUrl: dashboard?.url,
      caFile: server?.caFile,
    });

    const uploads = options.uploads ?? sampleUploads(options.docs, options.poison);
    let chaos: Chaos | undefined;
    const view = options.view
      ? startView(
          {
            client: control,
            keys,
            status: () => ({
              submitted: uploads.length,
              accepted: finished + unfinished.size,
              workersAlive: supervisor.alive().length,
              workersTotal: options.workers,
              kills: chaos?.kills ?? 0,
              restarts: chaos?.restarts ?? 0,
            }),
          },
          options.view,
        )
      : undefined;
    cleanup.push(() => view?.stop());

    // Throughput is measured from the first upload, not from starting processes.
    const started = performance.now();
    let feeding = true;
    const feeder = feed({
      apiUrl: api.url,
      uploads,
      runId: randomBytes(4).toString("hex"),
      concurrency: options.concurrency,
      bulk: options.bulk,
      badRequests: options.badRequests,
      maxBytes: options.maxBytes,
      signal: halt.signal,
      onAccepted: (s) => {
        unfinished.add(s.id);
        dashboard?.named(s.id, s.upload.name);
      },
    }).finally(() => {
      feeding = false;
    });
    if (options.chaos) {
      chaos = startChaos({
        supervisor,
        redis: server,
        progress: () => ({
          accepted: finished + unfinished.size,
          total: uploads.length,
          finished,
        }),
        log,
        onRestart: (phase) => dashboard?.redisRestart(phase),
      });
      cleanup.push(() => chaos?.stop());
    }

    // Wait until every accepted document is finished: all results in, or dead-lettered.
    let lastDead = "-";
    const deadDocs = new Set<string>();
    let lastChange = performance.now();
    let nextPoll = 0;
    while (feeding || extraInFlight > 0 || unfinished.size > 0) {
      aborted(options.signal);
      await new Promise((resolve) => setTimeout(resolve, 200));
      // Redis decides what is finished; the events heard say which documents to ask about.
      // Pub/sub keeps nothing for a subscriber that was away (a Redis restart), so every 2 s
      // ask about all of them: asking every round would cost more commands than the pipeline.
      const all = performance.now() >= nextPoll;
      if (all) nextPoll = performance.now() + 2000;
      const ids = all ? [...unfinished] : [...unfinished].filter((id) => settled.has(id));
      // One round trip for the whole batch: is each document's last result (embed) in?
      const batch = control.multi();
      for (const id of ids) batch.hExists(keys.doc(id), "embed");
      const read = await Promise.all([
        batch.execAsPipeline(),
        control.xRange(keys.dead, lastDead === "-" ? "-" : `(${lastDead}`, "+"),
      ]).catch(() => undefined);
      // Commands in flight when Redis restarts fail; ask again on the next round.
      if (!read) continue;
      const [done, dead] = read;
      for (const entry of dead ?? []) {
        lastDead = entry.id;
        deadDocs.add(String(entry.message.doc));
      }
      const before = unfinished.size;
      ids.forEach((id, i) => {
        if (done[i] || deadDocs.has(id)) unfinished.delete(id);
      });
      finished += before - unfinished.size;
      if (unfinished.size < before || feeding) lastChange = performance.now();
      if (performance.now() - lastChange > options.stallMs) {
        log(`nothing finished for ${options.stallMs / 1000}s: giving up on ${unfinished.size}`);
        break;
      }
    }
    acceptingExtra = false;
    // Ctrl+C stops the feeder too: the loop can end with every accepted document finished.
    aborted(options.signal);
    const fed = await feeder;
    fed.accepted.push(...extra.accepted);
    fed.failed.push(...extra.failed);
    fed.latencies.push(...extra.latencies);
    await chaos?.stop();
    await view?.stop();
    // A reply on the subscriber's connection comes after every message published before it.
    await retry(() => subscriber.ping());
    const durationMs = performance.now() - started;
    const ids = fed.accepted.map((s) => s.id);
    const found = await retry(() => collect(control, keys, ids));
    const result = audit({
      submitted: uploads.length + extra.accepted.length + extra.failed.length,
      accepted: fed.accepted.map((s) => ({ id: s.id, text: s.upload.text })),
      notAccepted: fed.failed.length,
      notAcceptedReason: fed.failed[0]?.reason,
      rejected: fed.rejected,
      docs: found.docs,
      streams: found.streams,
      added: found.added,
      deadLetters: found.deadLetters,
      events,
      latencies: fed.latencies,
      durationMs,
      workersKilled: chaos?.kills ?? 0,
      redisRestarts: chaos?.restarts ?? 0,
      retried: found.retried,
    });
    await dashboard?.finish(result);
    const pythonNerDone = options.pythonWorkers
      ? Number((await retry(() => control.hGet(keys.stats, "ner:done:python"))) ?? 0)
      : 0;
    const plainPort = server?.caFile
      ? Number((await retry(() => control.configGet("port"))).port)
      : undefined;
    return {
      audit: result,
      accepted: fed.accepted,
      feed: fed,
      events,
      docs: found.docs,
      workerLog,
      workerExits: supervisor.ended,
      redisUrl,
      apiUrl: api.url,
      pythonNerDone,
      plainPort,
    };
  } finally {
    halt.abort();
    for (const step of cleanup.reverse()) {
      try {
        await step();
      } catch (error) {
        log(`cleanup: ${(error as Error).message}`);
      }
    }
  }
}
