/** The pipeline's pure parts: arguments, the audit's arithmetic, the simulated services. */
import { describe, expect, test } from "vitest";
import { documentId, validateUpload } from "../../src/pipeline/api.ts";
import { PipelineUsageError, parsePipelineArgs, poisonCount } from "../../src/pipeline/args.ts";
import { type AuditData, audit, percentile } from "../../src/pipeline/audit.ts";
import { mayKill } from "../../src/pipeline/chaos.ts";
import { crashing, poisoned, sampleUpload } from "../../src/pipeline/documents.ts";
import { eventRank, pipelineKeys, STAGES, stageKeys } from "../../src/pipeline/keys.ts";
import { PART_NAMES, type Parts } from "../../src/pipeline/parts.ts";
import { sampleUploads } from "../../src/pipeline/pipeline.ts";
import {
  callService,
  classify,
  compute,
  embed,
  expectedResults,
  hasMarker,
  ner,
  ocr,
  PermanentError,
  TransientError,
} from "../../src/pipeline/services.ts";
import { deadLetterReason } from "../../src/pipeline/stage-loop.ts";
import { renderPlain, renderSnapshot, type Snapshot } from "../../src/pipeline/view.ts";

describe("pipeline arguments", () => {
  test("defaults, flags and numbers", () => {
    expect(parsePipelineArgs([])).toMatchObject({ docs: 100, workers: 2, chaos: false });
    const args = parsePipelineArgs([
      "--docs",
      "1000",
      "--workers=4",
      "--latency",
      "5",
      "--failure-rate",
      "0.1",
      "--chaos",
      "--json",
      "--parts",
      "x.ts",
    ]);
    expect(args).toMatchObject({
      docs: 1000,
      workers: 4,
      latencyMs: 5,
      failureRate: 0.1,
      chaos: true,
      json: true,
      parts: "x.ts",
    });
  });

  test("refuses what it cannot use, saying why", () => {
    expect(() => parsePipelineArgs(["--docs"])).toThrow(/--docs needs a number/);
    expect(() => parsePipelineArgs(["--docs", "ten"])).toThrow(/needs a number \(got ten\)/);
    expect(() => parsePipelineArgs(["--workers", "1.5"])).toThrow(/whole number/);
    expect(() => parsePipelineArgs(["--workers", "0"])).toThrow(/between 1 and 32/);
    expect(() => parsePipelineArgs(["--failure-rate", "2"])).toThrow(/between 0 and 0.9/);
    expect(() => parsePipelineArgs(["--fast"])).toThrow(PipelineUsageError);
  });

  test("chaos brings a few poison documents unless told otherwise", () => {
    expect(poisonCount({ chaos: false, docs: 1000 })).toBe(0);
    expect(poisonCount({ chaos: true, docs: 1000 })).toBe(5);
    expect(poisonCount({ chaos: true, docs: 50 })).toBe(2);
    expect(poisonCount({ chaos: true, docs: 1 })).toBe(1);
    expect(poisonCount({ chaos: false, docs: 10, poison: 3 })).toBe(3);
  });
});

describe("the simulated services", () => {
  test("are pure: the same text always gives the same results", () => {
    for (let n = 0; n < 12; n++) {
      const { text } = sampleUpload(n);
      expect(expectedResults(text)).toEqual(expectedResults(text));
      expect(sampleUpload(n)).toEqual(sampleUpload(n));
    }
  });

  test("OCR joins hyphenated lines, counts pages and drops test markers", () => {
    expect(ocr("Con-\nfidential  terms\fpage two\n[[poison:ner]]")).toEqual({
      text: "Confidential terms page two",
      pages: 2,
      words: 4,
    });
  });

  test("NER finds organisations, people, dates and amounts once each, in order", () => {
    const { entities } = ner(
      "Acme Legal LLP pays Ms. Ana Silva EUR 12,000.00 on 2024-03-01; Acme Legal LLP agrees.",
    );
    expect(entities).toEqual([
      { type: "ORG", text: "Acme Legal LLP" },
      { type: "PERSON", text: "Ms. Ana Silva" },
      { type: "MONEY", text: "EUR 12,000.00" },
      { type: "DATE", text: "2024-03-01" },
    ]);
  });

  test("classification follows the keywords", () => {
    const category = (n: number) => {
      const results = expectedResults(sampleUpload(n).text);
      return (JSON.parse(results.classify) as { category: string }).category;
    };
    expect([0, 1, 2, 3, 4, 5].map(category)).toEqual([
      "nda",
      "lease",
      "employment",
      "court-filing",
      "invoice",
      "correspondence",
    ]);
    expect(classify("nothing relevant", [])).toEqual({
      category: "correspondence",
      confidence: 0.4,
    });
  });

  test("embeddings are unit vectors that depend on text and category", () => {
    const a = embed("same text", "nda").vector;
    expect(a).toHaveLength(8);
    expect(Math.hypot(...a)).toBeCloseTo(1, 4);
    expect(embed("same text", "lease").vector).not.toEqual(a);
  });

  test("each stage reads the results of the stages before it", () => {
    expect(() => compute("ner", { text: "x" })).toThrow(PermanentError);
    const { text } = sampleUpload(3);
    const results = expectedResults(text);
    expect(compute("embed", { text, ...results })).toBe(results.embed);
  });

  test("poison fails at its stage on every delivery; transient failures stop after two", async () => {
    const doc = { text: poisoned(sampleUpload(0), "ner").text };
    for (const attempt of [1, 2, 3, 9]) {
      await expect(
        callService("ner", doc, { latencyMs: 0, failureRate: 0, attempt }),
      ).rejects.toThrow(PermanentError);
    }
    const healthy = { text: sampleUpload(0).text };
    const always = { latencyMs: 0, failureRate: 0.9, random: () => 0 };
    await expect(callService("ocr", healthy, { ...always, attempt: 1 })).rejects.toThrow(
      TransientError,
    );
    await expect(callService("ocr", healthy, { ...always, attempt: 2 })).rejects.toThrow(
      TransientError,
    );
    await expect(callService("ocr", healthy, { ...always, attempt: 3 })).resolves.toBe(
      expectedResults(healthy.text).ocr,
    );
  });

  test("crash markers name their stage", () => {
    const { text } = crashing(sampleUpload(1), "ner");
    expect(hasMarker(text, "crash", "ner")).toBe(true);
    expect(hasMarker(text, "crash", "ocr")).toBe(false);
    expect(hasMarker(text, "poison", "ner")).toBe(false);
  });

  test("poison documents are spread over the run and over the stages", () => {
    const uploads = sampleUploads(1000, 5);
    const poison = uploads
      .map((u, i) => ({ i, stage: STAGES.find((s) => hasMarker(u.text, "poison", s)) }))
      .filter((p) => p.stage);
    expect(poison.map((p) => p.i)).toEqual([100, 300, 500, 700, 900]);
    expect(poison.map((p) => p.stage)).toEqual(["ocr", "ner", "classify", "embed", "ocr"]);
  });
});

describe("names and events", () => {
  test("stage keys chain the stages and end with no next stream", () => {
    const keys = pipelineKeys("p:");
    expect(stageKeys(keys, "ocr")).toMatchObject({
      stream: "p:stage:ocr",
      group: "ocr",
      next: "p:stage:ner",
      dead: "p:dead",
      status: "p:status",
      channel: "p:events",
    });
    expect(stageKeys(keys, "embed").next).toBeNull();
    expect(stageKeys(keys, "ner").doc("d1")).toBe("p:doc:d1");
  });

  test("events rank in stage order", () => {
    const ranks = (["intake", ...STAGES] as const).map((stage) => eventRank({ stage }));
    expect(ranks).toEqual([0, 1, 2, 3, 4]);
  });

  test("a dead letter says where, after how many deliveries, and why", () => {
    expect(deadLetterReason("ocr", 4, "blank scan")).toBe(
      "gave up at ocr after 4 deliveries: blank scan",
    );
    expect(deadLetterReason("ner", 5, null)).toMatch(/crashed/);
  });
});

describe("intake validation", () => {
  test("accepts a named document and refuses anything else with a reason", () => {
    expect(validateUpload('{"name":"a.pdf","text":"x"}')).toEqual({ name: "a.pdf", text: "x" });
    expect(() => validateUpload("{")).toThrow(/not valid JSON/);
    expect(() => validateUpload("[1]")).toThrow(/JSON object/);
    expect(() => validateUpload('{"name":"a.pdf"}')).toThrow(/"text"/);
    expect(() => validateUpload('{"name":"","text":"x"}')).toThrow(/"name"/);
  });

  test("the same idempotency key always gives the same document id", () => {
    expect(documentId("feed-1-7")).toBe(documentId("feed-1-7"));
    expect(documentId("feed-1-7")).not.toBe(documentId("feed-1-8"));
    expect(documentId(undefined)).not.toBe(documentId(undefined));
  });
});

function data(overrides: Partial<AuditData> = {}): AuditData {
  const texts = [0, 1, 2].map((n) => sampleUpload(n).text);
  const results = texts.map((t) => expectedResults(t));
  return {
    submitted: 3,
    accepted: texts.map((text, i) => ({ id: `d${i}`, text })),
    notAccepted: 0,
    rejected: [{ status: 400, reason: "bad" }],
    docs: { d0: { ...results[0] }, d1: { ...results[1] }, d2: { ...results[2] } },
    streams: {
      ocr: ["d0", "d1", "d2"],
      ner: ["d0", "d1", "d2"],
      classify: ["d0", "d1", "d2"],
      embed: ["d0", "d1", "d2"],
    },
    deadLetters: [],
    events: [],
    latencies: [5, 1, 3, 2, 4],
    durationMs: 2000,
    workersKilled: 0,
    redisRestarts: 0,
    retried: 0,
    ...overrides,
  };
}

describe("the audit", () => {
  test("a clean run: everything completed, nothing lost or twice", () => {
    const a = audit(data());
    expect(a).toMatchObject({
      ok: true,
      completed: 3,
      deadLettered: 0,
      lost: 0,
      duplicated: 0,
      wrongResults: 0,
      apiLatencyMs: { p50: 3, p99: 5 },
      docsPerSecond: 1.5,
      // Per document: intake queued, then four stages done.
      statusEvents: { heard: 0, published: 15 },
    });
  });

  test("a dead-lettered document counts as finished, a missing one as lost", () => {
    const d = data();
    d.docs.d1 = { ocr: d.docs.d1?.ocr ?? "" };
    d.docs.d2 = {};
    d.deadLetters = [{ doc: "d1", stage: "ner", reason: "gave up" }];
    const a = audit(d);
    expect(a).toMatchObject({ ok: false, completed: 1, deadLettered: 1, lost: 1 });
    expect(a.problems.join("\n")).toMatch(/d2 was accepted but neither/);
  });

  test("twice queued, twice dead, twice announced, or both completed and dead: duplicated", () => {
    const d = data();
    d.streams.ner.push("d0");
    d.deadLetters = [
      { doc: "d1", stage: "ocr", reason: "x" },
      { doc: "d1", stage: "ocr", reason: "x" },
    ];
    d.events = [
      { doc: "d2", stage: "ocr", state: "done", at: 1 },
      { doc: "d2", stage: "ocr", state: "done", at: 2 },
    ];
    // d1 also has all results: completed and dead-lettered.
    expect(audit(d).duplicated).toBe(1 + 1 + 1 + 1);
  });

  test("a trimmed stream still shows a document queued twice: more entries added than reached it", () => {
    const d = data({ added: { ocr: 3, ner: 4, classify: 3, embed: 3 } });
    d.streams = { ocr: [], ner: ["d2"], classify: [], embed: [] };
    const a = audit(d);
    expect(a.duplicated).toBe(1);
    expect(a.problems.join("\n")).toMatch(/ner was queued 1 more times/);
    expect(audit(data({ added: { ocr: 3, ner: 3, classify: 3, embed: 3 } })).duplicated).toBe(0);
  });

  test("a result that differs from the service's is wrong", () => {
    const d = data();
    d.docs.d0 = { ...d.docs.d0, classify: '{"category":"lease","confidence":1}' };
    expect(audit(d)).toMatchObject({ ok: false, wrongResults: 1 });
  });

  test("malformed uploads must be refused with a 4xx, and nothing unknown may be queued", () => {
    expect(audit(data({ rejected: [{ status: 202, reason: "" }] })).rejectedWrongly).toBe(1);
    const d = data();
    d.streams.ocr.push("stranger");
    expect(audit(d)).toMatchObject({ ok: false, unexpected: 1 });
  });

  test("percentiles are nearest-rank", () => {
    const samples = Array.from({ length: 100 }, (_, i) => i + 1);
    expect(percentile(samples, 0.5)).toBe(50);
    expect(percentile(samples, 0.99)).toBe(99);
    expect(percentile([], 0.5)).toBe(0);
    expect(percentile([7], 0.99)).toBe(7);
  });
});

describe("the chaos", () => {
  const up = { isReady: true };
  test("kills only while every worker is up, one down at a time", () => {
    expect(mayKill([up, up], 0, undefined)).toBe(true);
    expect(mayKill([up, { isReady: false }], 5, 0)).toBe(false);
    expect(mayKill([up, { isReady: true, ended: "SIGKILL" }], 5, 0)).toBe(false);
  });

  test("kills again only once a document finished since the last kill", () => {
    // A loaded machine: the replacement is up, but nothing got through since the kill. Killing
    // again would take the same batch from its worker before it could finish, for ever.
    expect(mayKill([up, up], 3, 3)).toBe(false);
    expect(mayKill([up, up], 4, 3)).toBe(true);
  });
});

describe("the live view", () => {
  const snapshot: Snapshot = {
    elapsedMs: 3200,
    rows: STAGES.map((stage, i) => ({
      stage,
      queued: 10 - i,
      inProgress: 2,
      done: 100 - 10 * i,
      retried: i,
      dead: stage === "ner" ? 1 : 0,
      rate: 12.34,
    })),
    submitted: 200,
    accepted: 150,
    workersAlive: 3,
    workersTotal: 4,
    redis: "up",
    kills: 2,
    restarts: 1,
  };

  test("draws a row per stage and a summary line", () => {
    const lines = renderSnapshot(snapshot);
    expect(lines).toHaveLength(6);
    expect(lines[0]).toMatch(/stage\s+queued\s+working\s+done\s+retried\s+dead\s+docs\/s last 5 s/);
    expect(lines[2]).toMatch(/^ner\s+9\s+2\s+90\s+1\s+1\s+12\.3$/);
    expect(lines[5]).toContain("accepted 150/200  completed 70  dead 1  workers 3/4");
    expect(lines[5]).toContain("chaos: 2 kills, 1 restarts");
  });

  test("prints one plain line for pipes and logs", () => {
    const line = renderPlain(snapshot);
    expect(line).toMatch(/^\[3\.2s\] accepted 150\/200 completed 70 \| ocr q10 w2 d100 r0 x0/);
    expect(line.split("\n")).toHaveLength(1);
  });
});

test("the lesson 13 solution and starter fit the pipeline's Parts contract", async () => {
  // The exercise mirrors the system's types so that it stays self-contained; these assignments
  // make `tsc --noEmit` fail the moment the two drift apart.
  const solution: Parts = await import("../../solutions/13-capstone-pipeline/stage.ts");
  const starter: Parts = await import("../../lessons/13-capstone-pipeline/stage.ts");
  for (const name of PART_NAMES) {
    expect(typeof solution[name]).toBe("function");
    expect(typeof starter[name]).toBe("function");
  }
});
