/**
 * Upload-to-done time from the status events a run heard: each document's intake "queued"
 * event to its embed "done" event, both stamped by the writer. A document whose two events were
 * not both heard (a subscriber away during a Redis restart) is left out, not guessed.
 */
import { percentile } from "./audit.ts";
import type { StatusEvent } from "./keys.ts";

export function endToEnd(events: StatusEvent[]): { p50: number; p99: number; samples: number } {
  const queuedAt = new Map<string, number>();
  for (const e of events)
    if (e.stage === "intake" && e.state === "queued") queuedAt.set(e.doc, e.at);
  const samples: number[] = [];
  for (const e of events) {
    const from = e.stage === "embed" && e.state === "done" ? queuedAt.get(e.doc) : undefined;
    if (from !== undefined) samples.push(e.at - from);
  }
  return {
    p50: percentile(samples, 0.5),
    p99: percentile(samples, 0.99),
    samples: samples.length,
  };
}
