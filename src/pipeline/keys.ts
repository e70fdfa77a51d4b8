/**
 * The pipeline's names: every key, stream, group and channel, derived from one prefix. This is
 * the contract a worker written in any language follows (lessons/13-capstone-pipeline/README.md
 * documents it), so change it only together with the lesson text.
 */
export const STAGES = ["ocr", "ner", "classify", "embed"] as const;
export type Stage = (typeof STAGES)[number];

export type EventStage = "intake" | Stage;
export type EventState = "queued" | "done" | "dead";

/** One status event: published on the channel, and the latest one per document kept in a hash. */
export interface StatusEvent {
  doc: string;
  stage: EventStage;
  state: EventState;
  /** Milliseconds since the epoch. */
  at: number;
  /** Why a document was dead-lettered. */
  reason?: string;
}

/** What one stage's worker needs to know: the names the exercise's functions receive. */
export interface StageKeys {
  stage: Stage;
  /** This stage's work stream, e.g. "pipeline:stage:ocr". */
  stream: string;
  /** The consumer group every worker of this stage joins: the stage's name. */
  group: string;
  /** The next stage's stream; null for the last stage. */
  next: string | null;
  /** The dead-letter stream shared by all stages. */
  dead: string;
  /** The latest-status hash: field = document id, value = the last StatusEvent as JSON. */
  status: string;
  /** The pub/sub channel every StatusEvent is published on. */
  channel: string;
  /** The hash holding a document's upload and its results, one field per stage. */
  doc(id: string): string;
}

export interface PipelineKeys {
  prefix: string;
  stream(stage: Stage): string;
  doc(id: string): string;
  dead: string;
  status: string;
  channel: string;
  /** Hash: "<doc>:<stage>" -> the last error a service raised for it (for dead-letter reasons). */
  errors: string;
  /** Hash of counters for the live view ("ocr:done", "ner:retried", ...): best effort. */
  stats: string;
}

export function pipelineKeys(prefix: string): PipelineKeys {
  return {
    prefix,
    stream: (stage) => `${prefix}stage:${stage}`,
    doc: (id) => `${prefix}doc:${id}`,
    dead: `${prefix}dead`,
    status: `${prefix}status`,
    channel: `${prefix}events`,
    errors: `${prefix}errors`,
    stats: `${prefix}stats`,
  };
}

export function stageKeys(keys: PipelineKeys, stage: Stage): StageKeys {
  const next = STAGES[STAGES.indexOf(stage) + 1];
  return {
    stage,
    stream: keys.stream(stage),
    group: stage,
    next: next ? keys.stream(next) : null,
    dead: keys.dead,
    status: keys.status,
    channel: keys.channel,
    doc: keys.doc,
  };
}

/** The position of an event in a document's life: intake, then the stages in order. */
export function eventRank(event: Pick<StatusEvent, "stage">): number {
  return event.stage === "intake" ? 0 : STAGES.indexOf(event.stage) + 1;
}
