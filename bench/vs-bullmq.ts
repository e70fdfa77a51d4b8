/**
 * The capstone against BullMQ, the library a Node developer would otherwise reach for: the same
 * four-stage flow (OCR -> NER -> classification -> embedding, zero service latency), the same
 * documents, alternating runs, each on a fresh private redis-server. Then the server's ceiling:
 * pipelined XADDs per second divided by the commands one capstone document costs.
 *
 *   npm run bench -- vs-bullmq       BENCH_DOCS=20000 BENCH_ROUNDS=2 BENCH_TUNE_DOCS=4000
 */

import { createClient } from "redis";
import { startPrivateServer } from "../src/redis/server.ts";
import { runBullmq } from "./lib/bullmq-flow.ts";
import { runCapstone } from "./lib/capstone-run.ts";
import { pipelinedXaddRate } from "./lib/ceiling.ts";
import { percentile, printTable } from "./table.ts";

const DOCS = Number(process.env.BENCH_DOCS ?? 20_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const TUNE_DOCS = Number(process.env.BENCH_TUNE_DOCS ?? Math.min(DOCS, 4_000));
const CONCURRENCIES = [8, 32, 128];
const TRACE_DOCS = Math.min(DOCS, 1_000);

interface Run {
  implementation: string;
  docsPerSecond: number;
  endToEndMs: number[];
}

function row(run: Run, round: number | string) {
  const sorted = [...run.endToEndMs].sort((a, b) => a - b);
  return {
    implementation: run.implementation,
    run: round,
    "docs/s": run.docsPerSecond,
    "e2e p50 ms": percentile(sorted, 50),
    "e2e p99 ms": percentile(sorted, 99),
    "latency samples": sorted.length,
  };
}

const median = (values: number[]) =>
  percentile(
    [...values].sort((a, b) => a - b),
    50,
  );

const server = await startPrivateServer();
const admin = createClient({ url: server.url, name: "bench:admin" });
await admin.connect();
try {
  const bullmq = async (docs: number, concurrency: number): Promise<Run> => {
    await admin.flushAll();
    const result = await runBullmq(server.url, docs, concurrency);
    return {
      implementation: `BullMQ 6.7, concurrency ${concurrency}`,
      docsPerSecond: (result.docs / result.durationMs) * 1000,
      endToEndMs: result.endToEndMs,
    };
  };
  const capstone = async (docs: number): Promise<Run> => {
    const result = await runCapstone(docs);
    return {
      implementation: "capstone, 4 workers",
      docsPerSecond: result.audit.docsPerSecond,
      endToEndMs: result.endToEndMs,
    };
  };

  const tuning: Run[] = [];
  for (const concurrency of CONCURRENCIES) tuning.push(await bullmq(TUNE_DOCS, concurrency));
  const best = tuning.reduce((a, b) => (b.docsPerSecond > a.docsPerSecond ? b : a));
  const bestConcurrency = CONCURRENCIES[tuning.indexOf(best)] ?? 32;
  printTable(
    `BullMQ worker concurrency, ${TUNE_DOCS} documents each (the best is used below)`,
    tuning.map((run) => row(run, "tuning")),
  );

  const runs: Run[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    // Alternating which goes first, so neither always runs on the warmer (or busier) machine.
    const order = round % 2 === 1 ? ["capstone", "bullmq"] : ["bullmq", "capstone"];
    for (const which of order) {
      runs.push(which === "capstone" ? await capstone(DOCS) : await bullmq(DOCS, bestConcurrency));
    }
  }
  const of = (name: string) => runs.filter((r) => r.implementation.startsWith(name));
  const summary = (name: string) => {
    const mine = of(name);
    const pooled = mine.flatMap((r) => r.endToEndMs).sort((a, b) => a - b);
    return {
      docsPerSecond: median(mine.map((r) => r.docsPerSecond)),
      p50: percentile(pooled, 50),
      p99: percentile(pooled, 99),
    };
  };
  const ours = summary("capstone");
  const theirs = summary("BullMQ");
  printTable(`Capstone vs BullMQ: ${DOCS} documents per run, 4 stages, zero service latency`, [
    ...runs.map((run, i) => row(run, Math.floor(i / 2) + 1)),
  ]);
  printTable("Capstone ÷ BullMQ (median docs/s; latencies pooled over the runs)", [
    {
      measure: "docs/s",
      capstone: ours.docsPerSecond,
      BullMQ: theirs.docsPerSecond,
      ratio: `${(ours.docsPerSecond / theirs.docsPerSecond).toFixed(2)}x`,
    },
    {
      measure: "e2e p50 ms",
      capstone: ours.p50,
      BullMQ: theirs.p50,
      ratio: `${(ours.p50 / theirs.p50).toFixed(2)}x`,
    },
    {
      measure: "e2e p99 ms",
      capstone: ours.p99,
      BullMQ: theirs.p99,
      ratio: `${(ours.p99 / theirs.p99).toFixed(2)}x`,
    },
  ]);

  const traced = await runCapstone(TRACE_DOCS, true);
  const perDoc = [...(traced.commandsPerDoc ?? new Map<string, number>())].sort(
    (a, b) => b[1] - a[1],
  );
  const commandsPerDoc = perDoc.reduce((sum, [, n]) => sum + n, 0);
  printTable(
    `Commands one capstone document costs (MONITOR on a ${TRACE_DOCS}-document run, between 20% and 80% done, the run's own polling left out)`,
    [
      ...perDoc.map(([command, n]) => ({ command, "per document": n })),
      { command: "all", "per document": commandsPerDoc },
    ],
  );

  await admin.flushAll();
  const ceiling = pipelinedXaddRate(server.port);
  if ("missing" in ceiling) {
    console.log(`\nThe server's ceiling: skipped, ${ceiling.missing}.`);
  } else {
    const docsCeiling = ceiling.xaddPerSecond / commandsPerDoc;
    printTable("The server's ceiling for the capstone (redis-benchmark, XADD, pipeline 32)", [
      {
        "XADD/s": ceiling.xaddPerSecond,
        "commands/doc": commandsPerDoc,
        "ceiling docs/s": docsCeiling,
        "capstone docs/s": ours.docsPerSecond,
        share: `${((100 * ours.docsPerSecond) / docsCeiling).toFixed(1)}%`,
      },
    ]);
  }
} finally {
  admin.destroy();
  await server.stop();
}
