/**
 * WAIT after each write that acknowledges something (an intake's 202, a hand-off's XACK, a dead
 * letter, a batch's commit) on a cluster run: Redis replicates asynchronously, so a primary
 * SIGKILLed right after it answered may take the write with it, and its promoted replica then
 * hands the work out again: a status event published twice, a result redone. WAIT returns once
 * `replicas` replicas have the connection's writes, or after `timeoutMs` with fewer (a promoted
 * replica has no replica of its own until its old primary comes back): then the run goes on.
 */
import type { BatchParts } from "./batch-parts.ts";
import type { Parts, Redis } from "./parts.ts";

export interface ReplicaWait {
  replicas: number;
  timeoutMs: number;
}

/** How many replicas acknowledged the connection's writes so far. */
export async function waitForReplicas(client: Redis, wait: ReplicaWait): Promise<number> {
  return Number(await client.sendCommand(["WAIT", String(wait.replicas), String(wait.timeoutMs)]));
}

/** Lesson 13's parts, each write followed by WAIT on the same connection. */
export function partsThatWait(parts: Parts, wait: ReplicaWait | undefined): Parts {
  if (!wait) return parts;
  return {
    ...parts,
    async handOff(client, keys, work, result) {
      const handed = await parts.handOff(client, keys, work, result);
      await waitForReplicas(client, wait);
      return handed;
    },
    async deadLetter(client, keys, work, reason) {
      await parts.deadLetter(client, keys, work, reason);
      await waitForReplicas(client, wait);
    },
  };
}

/** Lesson 16's parts, each batch's commit followed by WAIT on the same connection. */
export function batchPartsThatWait(parts: BatchParts, wait: ReplicaWait | undefined): BatchParts {
  if (!wait) return parts;
  return {
    ...parts,
    async commitBatch(client, keys, outcomes) {
      const committed = await parts.commitBatch(client, keys, outcomes);
      await waitForReplicas(client, wait);
      return committed;
    },
  };
}
