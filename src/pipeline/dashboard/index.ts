/**
 * The live dashboard of `npm run pipeline -- --dashboard`: one page on 127.0.0.1, fed over
 * Server-Sent Events. Each tab joins late the way lesson 04 teaches: the server is subscribed
 * before any tab connects; a new tab is put on the live fan-out first, then sent a snapshot read
 * from the latest-status hash, and it keeps per document only the newest version of what
 * arrives, so the snapshot and live events may overlap in any order. Stage counters are read
 * once a second for all tabs. Chaos (killed workers, the Redis restart) and the recovery that
 * follows arrive as log lines. The page's buttons kill a worker, add one, or upload a poison
 * document into the run, counted by its audit.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Audit } from "../audit.ts";
import type { Upload } from "../documents.ts";
import { type PipelineKeys, STAGES } from "../keys.ts";
import type { WorkerEvent } from "../supervisor.ts";
import { pageActions, spreadActions, type Who, type Workers } from "./actions.ts";
import { checkAction, checkHost, HttpError, listen, loadPage, sendJson } from "./http.ts";
import { type DashboardPartition, mergedSide, workerLabel } from "./partitions.ts";
import { follow, type HeldEntry, heldBy, type Recovery } from "./recovery.ts";
import { openRedisSide, type RedisSide, type StageCounters } from "./redis-side.ts";
import { type DocStatus, keepNewer } from "./status.ts";

export type { DashboardPartition } from "./partitions.ts";

/** A single-server run's pipeline: its Redis, keys, workers and uploads. */
interface OneRun {
  redisUrl: string;
  keys: PipelineKeys;
  supervisor: Workers;
  /** Uploads a document into the run (counted by the audit, like the feeder's); its id. */
  upload(upload: Upload): Promise<string>;
}

export type DashboardOptions = {
  /** 0: a free port. */
  port: number;
  /** Its connections' names start with this. */
  clientName: string;
} & (OneRun | { partitions: DashboardPartition[] });

export interface Dashboard {
  url: string;
  /** The name a document was uploaded with, when the run knows it first (the feeder). */
  named(id: string, name: string): void;
  /** `partition`: the index of the partition whose supervisor saw it (0 on a single server). */
  workerEvent(event: WorkerEvent, partition?: number): void;
  redisRestart(phase: "restarting" | "restarted"): void;
  /** A line about the cluster under the run (a failover, a relay that moved) for the log. */
  clusterEvent(text: string): void;
  /** The run is over: one last exact picture, with the audit's verdict, to every tab. */
  finish(audit: Audit): Promise<void>;
  close(): Promise<void>;
}

interface LogLine {
  at: number;
  kind: "worker" | "kill" | "claim" | "recovered" | "redis" | "action";
  text: string;
  /** The worker process it is about: its slot, and its pid (a replacement has another). */
  slot?: string;
  pid?: number;
}

const TICK_MS = 1000;
/** The page lists this many of the latest documents (and every dead letter, up to its cap). */
const LATEST = 12;
const DEAD_SHOWN = 100;
const KEEP_LOG = 200;
const KEEP_SERIES = 180;
/** Names fetched per second at most: the page lists few documents. */
const NAMES_PER_TICK = 50;

/** The documents the page lists: the latest few, and the dead letters. */
function listed(docs: Map<string, DocStatus>): string[] {
  const all = [...docs.values()];
  const latest = all
    .sort((a, b) => b.at - a.at || (a.doc < b.doc ? -1 : 1))
    .slice(0, LATEST)
    .map((s) => s.doc);
  const dead = all.filter((s) => s.state === "dead").map((s) => s.doc);
  return [...latest, ...dead.slice(0, DEAD_SHOWN)];
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  return Promise.race([
    promise.catch(() => undefined),
    new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), ms).unref()),
  ]);
}

export async function startDashboard(options: DashboardOptions): Promise<Dashboard> {
  const parts: DashboardPartition[] =
    "partitions" in options ? options.partitions : [{ tag: "", ...options }];
  const page = loadPage();
  const clients = new Set<ServerResponse>();
  const docs = new Map<string, DocStatus>();
  const names = new Map<string, string>();
  const log: LogLine[] = [];
  const series: { at: number; rates: number[] }[] = [];
  const recoveries: (Recovery & { part: number })[] = [];
  let counters: StageCounters[] = [];
  let redisUp = true;
  let doneSinceTick = STAGES.map(() => 0);
  let lastTick = Date.now();
  let ended: Record<string, unknown> | undefined;
  /** Each dead letter's reason, from the dead-letter stream, read on from `lastDead`. */
  const reasons = new Map<string, string>();
  let lastDead = "-";
  /** Names learned since the last tick: sent to the tabs together, once a second. */
  let newNames: Record<string, string> = {};

  const send = (res: ServerResponse, event: string, data: unknown) =>
    res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  const broadcast = (event: string, data: unknown) => {
    for (const res of clients) send(res, event, data);
  };
  const note = (kind: LogLine["kind"], text: string, who?: Who) => {
    const line: LogLine = { at: Date.now(), kind, text, slot: who?.slot, pid: who?.pid };
    log.push(line);
    if (log.length > KEEP_LOG) log.splice(0, log.length - KEEP_LOG);
    broadcast("log", line);
  };
  const workers = () =>
    parts.flatMap((p) =>
      [...p.supervisor.workers.values()].map((w) => ({
        slot: workerLabel(p.tag, w.slot),
        state: w.ended !== undefined ? "down" : w.isReady ? "up" : "starting",
      })),
    );

  const onStatus = (status: DocStatus) => {
    keepNewer(docs, status);
    if (status.state === "done") {
      const i = STAGES.indexOf(status.stage as (typeof STAGES)[number]);
      if (i >= 0) doneSinceTick[i] = (doneSinceTick[i] ?? 0) + 1;
    }
    // Every tab gets every live status; each drops what is not newer than what it has.
    broadcast("status", status);
  };
  // One subscriber per partition's channel; a side that fails to open closes those that did.
  const opening = await Promise.allSettled(
    parts.map((p) =>
      openRedisSide({
        redisUrl: p.redisUrl,
        keys: p.keys,
        clientName: `${options.clientName}${p.tag}`,
        onStatus,
        onResubscribed() {
          note("redis", "status channel subscribed again: every tab reads the status hash again");
          void snapshotTo([...clients]);
        },
        onConnection(up) {
          if (up === redisUp) return;
          redisUp = up;
          note("redis", up ? "Redis reachable again" : "Redis unreachable: reconnecting");
        },
      }),
    ),
  );
  const sides = opening.flatMap((o) => (o.status === "fulfilled" ? [o.value] : []));
  const refused = opening.find((o) => o.status === "rejected");
  if (refused) {
    for (const opened of sides) opened.close();
    throw refused.reason;
  }
  const side = mergedSide(sides);
  const partOf = (i: number) => ({
    reader: (sides[i] as RedisSide).reader,
    keys: (parts[i] as DashboardPartition).keys,
  });

  /** One HGETALL, sent to each of `targets`; a tab that missed it gets the next one. */
  const behind = new Set<ServerResponse>();
  async function snapshotTo(targets: ServerResponse[]): Promise<void> {
    if (targets.length === 0) return;
    try {
      const all = await side.snapshot();
      for (const status of all) keepNewer(docs, status);
      for (const res of targets) {
        behind.delete(res);
        if (clients.has(res)) send(res, "snapshot", all);
      }
    } catch {
      for (const res of targets) behind.add(res);
    }
  }

  /** A dead worker: as the page names it (`who`), its partition, and its slot there. */
  type Dead = { who: Who & { pid: number }; part: number; local: string };
  /** Starts watching what a dead worker held; retried on the next tick if Redis is away. */
  const toInspect = new Map<number, Dead>();
  /** What a worker the page froze before killing it held: read while it could not change. */
  const heldAtKill = new Map<number, HeldEntry[]>();
  async function inspect(dead: Dead): Promise<void> {
    const { who, part } = dead;
    const { slot } = who;
    try {
      const { reader, keys } = partOf(part);
      const entries = heldAtKill.get(who.pid) ?? (await heldBy(reader, keys, dead.local));
      heldAtKill.delete(who.pid);
      toInspect.delete(who.pid);
      if (entries.length === 0) {
        note("recovered", `worker ${slot} held no entries: nothing to recover`, who);
        return;
      }
      recoveries.push({ ...who, part, entries, done: false });
      const perStage = STAGES.map((s) => [s, entries.filter((e) => e.stage === s).length])
        .filter(([, n]) => n)
        .map(([s, n]) => `${s} ${n}`);
      note(
        "kill",
        `worker ${slot} held ${entries.length} entries (${perStage.join(", ")}): they wait for a live worker to claim them`,
        who,
      );
    } catch {
      toInspect.set(who.pid, dead);
    }
  }

  async function followRecoveries(): Promise<void> {
    for (const recovery of recoveries.filter((r) => !r.done)) {
      const { reader, keys } = partOf(recovery.part);
      const { claimed, finished } = await follow(reader, keys, recovery, docs);
      const { slot } = recovery;
      const who = { slot, pid: recovery.pid };
      const doc = (id: string) => names.get(id) ?? id;
      for (const e of claimed) {
        const by = e.claimedBy ? `claimed by ${e.claimedBy}` : "claimed and acknowledged";
        note("claim", `worker ${slot}'s ${e.stage} entry for ${doc(e.doc)}: ${by}`, who);
      }
      for (const e of finished) note("claim", `${doc(e.doc)} finished`, who);
      if (recovery.done) {
        note(
          "recovered",
          `worker ${slot}'s ${recovery.entries.length} entries recovered: all claimed, every document finished`,
          who,
        );
      }
    }
  }

  async function fetchNames(): Promise<void> {
    if (Object.keys(newNames).length > 0) broadcast("names", newNames);
    newNames = {};
    const missing = listed(docs)
      .filter((id) => !names.has(id))
      .slice(0, NAMES_PER_TICK);
    if (missing.length === 0) return;
    const found = await side.names(missing);
    for (const [id, name] of found) names.set(id, name);
    if (found.size > 0) broadcast("names", Object.fromEntries(found));
  }

  async function fetchReasons(): Promise<void> {
    const found = await side.deadLetters(lastDead);
    if (found.length === 0) return;
    lastDead = found.at(-1)?.id ?? lastDead;
    for (const letter of found) reasons.set(letter.doc, letter.reason);
    broadcast("reasons", Object.fromEntries(found.map((letter) => [letter.doc, letter.reason])));
  }

  let ticking: Promise<void> = Promise.resolve();
  async function tick(): Promise<void> {
    const now = Date.now();
    const seconds = Math.max(0.001, (now - lastTick) / 1000);
    const point = { at: now, rates: doneSinceTick.map((n) => Math.round((n / seconds) * 10) / 10) };
    doneSinceTick = STAGES.map(() => 0);
    lastTick = now;
    series.push(point);
    if (series.length > KEEP_SERIES) series.splice(0, series.length - KEEP_SERIES);
    broadcast("rate", point);
    try {
      counters = await side.counters();
      for (const dead of [...toInspect.values()]) await inspect(dead);
      await followRecoveries();
      await fetchNames();
      await fetchReasons();
      await snapshotTo([...behind]);
    } catch {
      // Redis is away (a chaos restart): the reader's error said so; try again next second.
    }
    broadcast("counters", { stages: counters, workers: workers(), redis: redisUp });
  }
  const timer = setInterval(() => {
    ticking = ticking.then(tick);
  }, TICK_MS);

  const actions = spreadActions(
    parts.map((p, i) =>
      pageActions({
        supervisor: p.supervisor,
        reader: partOf(i).reader,
        keys: p.keys,
        upload: p.upload,
        note: (text, who) =>
          note(
            "action",
            p.tag ? `${p.tag} ${text}` : text,
            who && { ...who, slot: workerLabel(p.tag, who.slot) },
          ),
        heldAtKill: (pid, entries) => heldAtKill.set(pid, entries),
        named(id, name) {
          names.set(id, name);
          broadcast("names", { [id]: name });
        },
      }),
    ),
    parts.map((p) => p.tag),
  );

  let port = 0;
  const route = async (req: IncomingMessage, res: ServerResponse) => {
    checkHost(req, port);
    const path = new URL(req.url ?? "/", "http://127.0.0.1").pathname;
    const action = actions[path];
    if (action) {
      if (req.method !== "POST") throw new HttpError(405, "Actions are POST requests.");
      checkAction(req, port, page.token);
      if (ended) throw new HttpError(409, "The run is over.");
      return sendJson(res, 200, await action(req), page.headers);
    }
    if (req.method !== "GET") throw new HttpError(405, "Only GET here.");
    if (path === "/") {
      res.writeHead(200, { ...page.headers, "content-type": "text/html; charset=utf-8" });
      return void res.end(page.html);
    }
    if (path === "/events") {
      res.writeHead(200, { ...page.headers, "content-type": "text/event-stream" });
      res.write("retry: 1000\n\n");
      // On the live fan-out before the snapshot is read: nothing published in between is lost.
      clients.add(res);
      req.on("close", () => {
        clients.delete(res);
        behind.delete(res);
      });
      send(res, "hello", {
        log,
        series,
        names: Object.fromEntries(names),
        reasons: Object.fromEntries(reasons),
        counters: { stages: counters, workers: workers(), redis: redisUp },
      });
      await snapshotTo([res]);
      if (ended) send(res, "end", ended);
      return;
    }
    throw new HttpError(404, "Nothing here: the dashboard is at /.");
  };
  const listening = await listen(options.port, route, page.headers).catch((error: Error) => {
    side.close();
    clearInterval(timer);
    throw new Error(`The dashboard cannot listen on 127.0.0.1:${options.port}: ${error.message}`);
  });
  port = listening.port;

  let closed = false;
  return {
    url: `http://127.0.0.1:${port}/`,
    named(id, name) {
      names.set(id, name);
      newNames[id] = name;
    },
    workerEvent(event, part = 0) {
      const who = { slot: workerLabel(parts[part]?.tag ?? "", event.slot), pid: event.pid };
      if (event.kind === "started") note("worker", `worker ${event.slot} starting`, who);
      if (event.kind === "ready") note("worker", `worker ${event.slot} ready`, who);
      if (event.kind === "ended") {
        const how = event.how === "SIGKILL" ? "killed (SIGKILL)" : `ended (${event.how})`;
        note("kill", `worker ${event.slot} ${how}`, who);
        void inspect({ who, part, local: event.slot });
      }
    },
    redisRestart(phase) {
      note("redis", phase === "restarting" ? "chaos: restarting Redis" : "chaos: Redis restarted");
    },
    clusterEvent(text) {
      note("redis", text);
    },
    async finish(audit) {
      // Every status published so far reaches the tabs, then the hash settles any it missed.
      await withTimeout(side.drain(), 2000);
      await withTimeout(snapshotTo([...clients]), 2000);
      ticking = ticking.then(tick);
      await withTimeout(ticking, 2000);
      ended = {
        ok: audit.ok,
        accepted: audit.accepted,
        completed: audit.completed,
        deadLettered: audit.deadLettered,
        lost: audit.lost,
        duplicated: audit.duplicated,
        workersKilled: audit.workersKilled,
        redisRestarts: audit.redisRestarts,
      };
      broadcast("end", ended);
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      await withTimeout(ticking, 2000);
      if (!ended) broadcast("end", { stopped: true });
      // A busy tab's socket may still hold unsent events, "end" among them: let them go out
      // (briefly) before the connections are destroyed, or the tab never learns the run ended.
      const flushed = [...clients].map(
        (res) =>
          new Promise<void>((resolve) => {
            res.once("finish", resolve);
            res.once("close", resolve);
            res.end();
          }),
      );
      clients.clear();
      await withTimeout(Promise.all(flushed), 1000);
      await new Promise<void>((resolve) => {
        listening.server.closeAllConnections();
        listening.server.close(() => resolve());
      });
      side.close();
    },
  };
}
