/** `--cluster` and `--no-wait` arguments, and the arithmetic that splits and adds up a run. */
import { expect, test } from "vitest";
import { PIPELINE_USAGE, parsePipelineArgs } from "../../src/pipeline/args.ts";
import { audit } from "../../src/pipeline/audit.ts";
import { combineAudits, shares } from "../../src/pipeline/cluster.ts";
import { crc16, keySlotOf } from "../../src/pipeline/key-slot.ts";
import { expectedResults } from "../../src/pipeline/services.ts";

test("--cluster: a local cluster (TLS-only with --tls), or the user's with --redis-url; --no-wait only with it", () => {
  expect(parsePipelineArgs([])).toMatchObject({ cluster: false, noWait: false });
  expect(parsePipelineArgs(["--cluster", "--no-wait"])).toMatchObject({
    cluster: true,
    noWait: true,
  });
  expect(parsePipelineArgs(["--cluster", "--tls"])).toMatchObject({ cluster: true, tls: true });
  expect(parsePipelineArgs(["--cluster", "--redis-url", "rediss://h:6380"])).toMatchObject({
    cluster: true,
    redisUrl: "rediss://h:6380",
  });
  expect(parsePipelineArgs(["--cluster", "--dashboard-port", "8080"])).toMatchObject({
    cluster: true,
    dashboard: true,
  });
  expect(() => parsePipelineArgs(["--no-wait"])).toThrow("--no-wait only applies to --cluster");
  expect(PIPELINE_USAGE).toContain("--cluster");
  expect(PIPELINE_USAGE).toContain("--no-wait");
});

test("a key's slot is computed as Redis Cluster does: CRC16 of the key or of its hash tag", () => {
  expect(crc16(Buffer.from("123456789"))).toBe(0x31c3);
  expect(keySlotOf("foo")).toBe(12182);
  expect(keySlotOf("pipeline:ab12cd34:{p0}:doc:1")).toBe(keySlotOf("p0"));
  // An empty tag is no tag: the whole key is hashed.
  expect(keySlotOf("a{}b")).toBe(crc16(Buffer.from("a{}b")) % 16384);
});

test("documents and workers are shared out as evenly as they go", () => {
  expect(shares(5, 3)).toEqual([2, 2, 1]);
  expect(shares(2, 3)).toEqual([1, 1, 0]);
  expect(shares(300, 3)).toEqual([100, 100, 100]);
});

test("the partitions' audits add up, and one that is not ok makes the whole not ok", () => {
  const part = (id: string, lost: boolean) =>
    audit({
      submitted: 1,
      accepted: [{ id, text: "x" }],
      notAccepted: 0,
      rejected: [],
      docs: lost ? {} : { [id]: expectedResults("x") },
      streams: {
        ocr: [id],
        ner: lost ? [] : [id],
        classify: lost ? [] : [id],
        embed: lost ? [] : [id],
      },
      deadLetters: [],
      events: [],
      latencies: [5],
      durationMs: 1000,
      workersKilled: 1,
      redisRestarts: 0,
      retried: 0,
    });
  const whole = combineAudits([part("a", false), part("b", true)], [5, 7]);
  expect(whole).toMatchObject({ submitted: 2, accepted: 2, workersKilled: 2, durationMs: 1000 });
  expect(whole.lost).toBe(1);
  expect(whole.ok).toBe(false);
  expect(part("a", false).ok).toBe(true);
  expect(combineAudits([part("a", false), part("c", false)], [5]).ok).toBe(true);
});
