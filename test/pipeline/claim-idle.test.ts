/**
 * The capstone's guarantees hold whatever --claim-idle the CLI accepts: even when entries are
 * taken over while their first worker is still busy with them (claim-idle far below the
 * service's latency), no document is dead-lettered twice, completed and dead-lettered, or
 * announced twice.
 */
import { expect, test } from "vitest";
import { SOLUTION_PARTS } from "../../src/pipeline/parts.ts";
import { DEFAULTS, runPipeline } from "../../src/pipeline/pipeline.ts";

test("the smallest --claim-idle with slow services and poison: nothing twice", async () => {
  const report = await runPipeline({
    ...DEFAULTS,
    docs: 120,
    poison: 12,
    workers: 4,
    latencyMs: 100,
    // The smallest --claim-idle the CLI accepts: half the latency of one service call.
    claimIdleMs: 50,
    badRequests: false,
    parts: SOLUTION_PARTS,
    prefix: "claim-idle:",
  });
  const { audit } = report;
  expect(audit.problems.slice(0, 5), JSON.stringify(audit.problems.slice(0, 5))).toEqual([]);
  expect(audit).toMatchObject({ accepted: 120, lost: 0, duplicated: 0, wrongResults: 0 });
  expect(audit.completed + audit.deadLettered).toBe(120);
}, 120_000);
