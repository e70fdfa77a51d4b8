/**
 * One stage worker's loop: take work (with recovery), call the simulated service, hand the
 * document on or park it. The Redis-facing steps are the lesson's parts; the policy (when to
 * retry, when to give up) lives here.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Stage, StageKeys } from "./keys.ts";
import { type PipelineKeys, stageKeys } from "./keys.ts";
import type { Parts, Redis, Work } from "./parts.ts";
import { callService, hasMarker, PermanentError, TransientError } from "./services.ts";

export interface LoopConfig {
  latencyMs: number;
  failureRate: number;
  /** A document is dead-lettered when its delivery number `maxDeliveries` fails. */
  maxDeliveries: number;
  claimIdleMs: number;
  blockMs: number;
}

export interface StageLoop {
  client: Redis;
  parts: Parts;
  keys: PipelineKeys;
  stage: Stage;
  consumer: string;
  config: LoopConfig;
  signal: AbortSignal;
  /** Called when a `[[crash:<stage>]]` document arrives for the first time: kill the process. */
  crash: () => void;
  log: (line: string) => void;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Waits `ms`, or less when `signal` aborts; never throws. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return sleep(ms, undefined, { signal }).catch(() => {});
}

export function deadLetterReason(stage: Stage, deliveries: number, lastError: string | null) {
  const why = lastError ?? "no worker finished it: each one stopped or crashed";
  return `gave up at ${stage} after ${deliveries} deliveries: ${why}`;
}

async function handle(loop: StageLoop, keysForStage: StageKeys, work: Work): Promise<void> {
  const { client, parts, keys, stage, config } = loop;
  const stat = (what: string) => client.hIncrBy(keys.stats, `${stage}:${what}`, 1);
  if (work.deliveries > 1) await stat("retried");
  if (work.deliveries > config.maxDeliveries) {
    const last = await client.hGet(keys.errors, `${work.doc}:${stage}`);
    const reason = deadLetterReason(stage, work.deliveries - 1, last ?? null);
    await parts.deadLetter(client, keysForStage, work, reason);
    await stat("dead");
    return;
  }
  const doc = await client.hGetAll(keys.doc(work.doc));
  let result: string;
  try {
    result = await callService(stage, doc, {
      latencyMs: config.latencyMs,
      failureRate: config.failureRate,
      attempt: work.deliveries,
    });
  } catch (error) {
    if (!(error instanceof PermanentError || error instanceof TransientError)) throw error;
    await client.hSet(keys.errors, `${work.doc}:${stage}`, error.message);
    await stat("failed");
    if (work.deliveries >= config.maxDeliveries) {
      await parts.deadLetter(
        client,
        keysForStage,
        work,
        deadLetterReason(stage, work.deliveries, error.message),
      );
      await stat("dead");
    }
    // Otherwise the entry stays pending and comes back after claimIdleMs: that is the retry.
    return;
  }
  if (work.deliveries === 1 && hasMarker(doc.text, "crash", stage)) loop.crash();
  if (await parts.handOff(client, keysForStage, work, result)) await stat("done");
}

/** Runs until `signal` aborts; a failing step is logged and retried, never fatal. */
export async function runStageLoop(loop: StageLoop): Promise<void> {
  const { signal, config } = loop;
  const keys = stageKeys(loop.keys, loop.stage);
  while (!signal.aborted) {
    let work: Work | undefined;
    try {
      work = await loop.parts.nextWork(loop.client, keys, {
        consumer: loop.consumer,
        claimIdleMs: config.claimIdleMs,
        blockMs: config.blockMs,
      });
    } catch (error) {
      if (signal.aborted) break;
      loop.log(`${loop.consumer}: nextWork() failed: ${messageOf(error)}`);
      await pause(250, signal);
      continue;
    }
    if (!work) continue;
    try {
      await handle(loop, keys, work);
    } catch (error) {
      if (signal.aborted) break;
      loop.log(`${loop.consumer}: ${work.doc} (entry ${work.id}): ${messageOf(error)}`);
      await pause(250, signal);
    }
  }
}
