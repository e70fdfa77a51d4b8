/**
 * A document's status as the dashboard handles it: the StatusEvent the pipeline publishes (and
 * keeps in its latest-status hash), plus a version. A document's events happen in one order
 * (intake, then each stage done, or dead at one of them), so that order is the version: a tab
 * keeps, per document, the status with the highest version it has seen, whether it came from
 * the snapshot or live, and drops any that is not newer (lesson 04).
 */
import { type EventStage, type EventState, eventRank, STAGES, type StatusEvent } from "../keys.ts";

export interface DocStatus extends StatusEvent {
  v: number;
}

const STATES: readonly EventState[] = ["queued", "done", "dead"];

export function statusVersion(event: Pick<StatusEvent, "stage" | "state">): number {
  return eventRank(event) * STATES.length + STATES.indexOf(event.state);
}

/**
 * The status in `json`, or undefined when it is not one: the hash and the channel are written by
 * the learner's broadcast(), so the page shows only what it can make sense of.
 */
export function parseStatus(json: string): DocStatus | undefined {
  let data: Partial<StatusEvent>;
  try {
    data = JSON.parse(json) as Partial<StatusEvent>;
  } catch {
    return undefined;
  }
  if (typeof data !== "object" || data === null) return undefined;
  const { doc, stage, state, at, reason } = data;
  const stages: readonly string[] = ["intake", ...STAGES];
  if (typeof doc !== "string" || typeof stage !== "string" || !stages.includes(stage)) {
    return undefined;
  }
  if (typeof state !== "string" || !STATES.includes(state) || typeof at !== "number") {
    return undefined;
  }
  const event: DocStatus = { doc, stage: stage as EventStage, state, at, v: 0 };
  if (typeof reason === "string") event.reason = reason;
  event.v = statusVersion(event);
  return event;
}

/** Keeps `status` in `docs` when it is newer than what is there; true when it was. */
export function keepNewer(docs: Map<string, DocStatus>, status: DocStatus): boolean {
  const current = docs.get(status.doc);
  if (current && current.v >= status.v) return false;
  docs.set(status.doc, status);
  return true;
}

/** Finished: through the last stage, or dead-lettered. */
export function isFinished(status: Pick<StatusEvent, "stage" | "state">): boolean {
  return status.state === "dead" || (status.stage === STAGES.at(-1) && status.state === "done");
}
