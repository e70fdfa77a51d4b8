/**
 * The audit at the end of a run: did every accepted document come out right, exactly once?
 * `audit()` is pure arithmetic over what was read from Redis, so it is tested without Redis;
 * `collect()` does the reading.
 */

import type { PipelineKeys } from "./keys.ts";
import { STAGES, type Stage, type StatusEvent } from "./keys.ts";
import type { Redis } from "./parts.ts";
import { expectedResults } from "./services.ts";

export interface DeadLetter {
  doc: string;
  stage: string;
  reason: string;
}

export interface AuditData {
  /** Uploads the feeder tried to submit. */
  submitted: number;
  /** Documents the API accepted (202), with the text they were uploaded with. */
  accepted: { id: string; text: string }[];
  /** Uploads the API never accepted, even after retries, and the API's last answer. */
  notAccepted: number;
  notAcceptedReason?: string;
  /** The answers to the deliberately malformed requests. */
  rejected: { status: number; reason: string }[];
  /** Each accepted document's hash. */
  docs: Record<string, Record<string, string>>;
  /** The document id of every entry of each stage's stream, in order. */
  streams: Record<Stage, string[]>;
  /**
   * Entries ever added to each stage's stream (XINFO STREAM entries-added): a trimmed stream
   * no longer lists its entries, but this still counts a document queued twice.
   */
  added?: Record<Stage, number>;
  deadLetters: DeadLetter[];
  /** The status events a subscriber saw during the run. */
  events: StatusEvent[];
  /** Round trips of the answered POST requests, in milliseconds. */
  latencies: number[];
  durationMs: number;
  workersKilled: number;
  redisRestarts: number;
  retried: number;
}

export interface Audit {
  ok: boolean;
  submitted: number;
  accepted: number;
  notAccepted: number;
  rejected: number;
  /** Malformed requests that got something other than a 4xx. */
  rejectedWrongly: number;
  completed: number;
  deadLettered: number;
  lost: number;
  duplicated: number;
  wrongResults: number;
  /** Documents on the OCR stream that the feeder never had accepted. */
  unexpected: number;
  apiLatencyMs: { p50: number; p99: number };
  durationMs: number;
  docsPerSecond: number;
  workersKilled: number;
  redisRestarts: number;
  retried: number;
  /** Status events the audit's own subscriber heard, and how many were published. */
  statusEvents: { heard: number; published: number };
  deadLetters: DeadLetter[];
  /** A few examples of what went wrong, for people. */
  problems: string[];
}

/** Nearest-rank percentile; 0 for no samples. */
export function percentile(samples: number[], q: number): number {
  if (samples.length === 0) return 0;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)));
  return Math.round((sorted[rank - 1] ?? 0) * 10) / 10;
}

function countBy<T>(items: T[], key: (item: T) => string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const item of items) counts.set(key(item), (counts.get(key(item)) ?? 0) + 1);
  return counts;
}

export function audit(data: AuditData): Audit {
  const problems: string[] = [];
  const note = (problem: string) => {
    if (problems.length < 12) problems.push(problem);
  };
  const acceptedIds = new Set(data.accepted.map((a) => a.id));
  const deadByDoc = countBy(data.deadLetters, (d) => d.doc);

  let duplicated = 0;
  STAGES.forEach((stage, i) => {
    let listed = 0;
    for (const [doc, count] of countBy(data.streams[stage], (id) => id)) {
      if (count > 1) {
        listed += count - 1;
        note(`${doc} was queued for ${stage} ${count} times`);
      }
    }
    // Each accepted document enters OCR once, and each later stage once per earlier result.
    const previous = STAGES[i - 1];
    const expected = previous
      ? data.accepted.filter((a) => data.docs[a.id]?.[previous] !== undefined).length
      : data.accepted.length;
    const extra = Math.max(0, (data.added?.[stage] ?? 0) - expected);
    if (extra > listed) {
      note(`${stage} was queued ${extra} more times than documents reached it`);
    }
    duplicated += Math.max(listed, extra);
  });
  for (const [doc, count] of deadByDoc) {
    if (count > 1) {
      duplicated += count - 1;
      note(`${doc} was dead-lettered ${count} times`);
    }
  }
  for (const [event, count] of countBy(data.events, (e) => `${e.doc} ${e.stage} ${e.state}`)) {
    if (count > 1) {
      duplicated += count - 1;
      note(`the status event "${event}" was published ${count} times`);
    }
  }

  let completed = 0;
  let deadLettered = 0;
  let lost = 0;
  let wrongResults = 0;
  let published = 0;
  for (const { id, text } of data.accepted) {
    const doc = data.docs[id] ?? {};
    const expected = expectedResults(text);
    const wrong = STAGES.filter((s) => doc[s] !== undefined && doc[s] !== expected[s]);
    const finished = STAGES.every((s) => doc[s] !== undefined);
    const dead = deadByDoc.has(id);
    // "intake queued", one "done" per stage result, and "dead" for a dead letter.
    published += 1 + STAGES.filter((s) => doc[s] !== undefined).length + (dead ? 1 : 0);
    if (wrong.length > 0) {
      wrongResults++;
      note(`${id} has wrong results for ${wrong.join(", ")}`);
    }
    if (finished && dead) {
      duplicated++;
      note(`${id} was completed and also dead-lettered`);
    }
    if (finished) completed++;
    else if (dead) deadLettered++;
    else {
      lost++;
      note(`${id} was accepted but neither completed nor dead-lettered`);
    }
  }
  const deadLetters = data.deadLetters.filter((d) => acceptedIds.has(d.doc));
  for (const d of deadLetters) if (!d.reason) note(`${d.doc} was dead-lettered without a reason`);
  const unexpected = new Set(data.streams.ocr.filter((id) => !acceptedIds.has(id))).size;
  if (unexpected > 0)
    note(`${unexpected} documents were queued that the feeder never had accepted`);
  const rejectedWrongly = data.rejected.filter((r) => r.status < 400 || r.status >= 500).length;
  if (rejectedWrongly > 0)
    note(`${rejectedWrongly} malformed requests were not refused with a 4xx`);
  if (data.notAccepted > 0) {
    const why = data.notAcceptedReason ? ` (it answered: ${data.notAcceptedReason})` : "";
    note(`${data.notAccepted} uploads were never accepted by the API${why}`);
  }

  const seconds = data.durationMs / 1000;
  return {
    ok:
      lost === 0 &&
      duplicated === 0 &&
      wrongResults === 0 &&
      unexpected === 0 &&
      rejectedWrongly === 0 &&
      data.notAccepted === 0 &&
      deadLetters.every((d) => d.reason.length > 0),
    submitted: data.submitted,
    accepted: data.accepted.length,
    notAccepted: data.notAccepted,
    rejected: data.rejected.length,
    rejectedWrongly,
    completed,
    deadLettered,
    lost,
    duplicated,
    wrongResults,
    unexpected,
    apiLatencyMs: { p50: percentile(data.latencies, 0.5), p99: percentile(data.latencies, 0.99) },
    durationMs: Math.round(data.durationMs),
    docsPerSecond: seconds > 0 ? Math.round(((completed + deadLettered) / seconds) * 10) / 10 : 0,
    workersKilled: data.workersKilled,
    redisRestarts: data.redisRestarts,
    retried: data.retried,
    statusEvents: { heard: data.events.length, published },
    deadLetters,
    problems,
  };
}

/** Reads what the audit needs from Redis: documents, streams and dead letters. */
export async function collect(client: Redis, keys: PipelineKeys, ids: string[]) {
  const docs: Record<string, Record<string, string>> = {};
  const hashes = await Promise.all(ids.map((id) => client.hGetAll(keys.doc(id))));
  ids.forEach((id, i) => {
    docs[id] = hashes[i] ?? {};
  });
  const streams = {} as Record<Stage, string[]>;
  const added = {} as Record<Stage, number>;
  for (const stage of STAGES) {
    const entries = await client.xRange(keys.stream(stage), "-", "+");
    streams[stage] = (entries ?? []).map((e) => String(e.message.doc));
    const info = await client.xInfoStream(keys.stream(stage));
    added[stage] = Number(info["entries-added"] ?? streams[stage].length);
  }
  const dead = await client.xRange(keys.dead, "-", "+");
  const deadLetters = (dead ?? []).map((e) => ({
    doc: String(e.message.doc),
    stage: String(e.message.stage ?? ""),
    reason: String(e.message.reason ?? ""),
  }));
  const stats = await client.hGetAll(keys.stats);
  const retried = STAGES.reduce((sum, s) => sum + Number(stats[`${s}:retried`] ?? 0), 0);
  return { docs, streams, added, deadLetters, retried };
}

/** The audit for people: one line per figure. */
export function renderAudit(a: Audit): string {
  const lines = [
    "Audit",
    `  submitted       ${a.submitted}   (accepted ${a.accepted}, never accepted ${a.notAccepted})`,
    `  malformed       ${a.rejected} refused with 4xx${a.rejectedWrongly ? `, ${a.rejectedWrongly} NOT refused` : ""}`,
    `  completed       ${a.completed}   (wrong results: ${a.wrongResults})`,
    `  dead-lettered   ${a.deadLettered}`,
    `  lost            ${a.lost}`,
    `  duplicated      ${a.duplicated}`,
    `  API latency     p50 ${a.apiLatencyMs.p50} ms, p99 ${a.apiLatencyMs.p99} ms`,
    `  throughput      ${a.docsPerSecond} documents/s over ${(a.durationMs / 1000).toFixed(1)} s`,
    `  faults          ${a.workersKilled} workers killed, ${a.redisRestarts} Redis restarts, ${a.retried} redeliveries`,
    `  status events   ${a.statusEvents.heard} of ${a.statusEvents.published} heard live${a.statusEvents.heard < a.statusEvents.published ? " (pub/sub keeps nothing: missed while reconnecting; the status hash has them)" : ""}`,
  ];
  for (const d of a.deadLetters.slice(0, 8))
    lines.push(`  dead: ${d.doc} at ${d.stage}: ${d.reason}`);
  for (const p of a.problems) lines.push(`  problem: ${p}`);
  lines.push(
    a.ok ? "  verdict         OK: nothing lost, nothing twice" : "  verdict         FAILED",
  );
  return lines.join("\n");
}
