/**
 * The capstone against BullMQ, the library a Node developer would otherwise reach for: the same
 * four-stage flow (OCR -> NER -> classification -> embedding, zero service latency), the same
 * documents, alternating runs, each on an empty redis-server. Then the server's ceiling:
 * pipelined XADDs per second divided by the commands one capstone document costs.
 *
 *   npm run bench -- vs-bullmq       BENCH_DOCS=20000 BENCH_ROUNDS=2 BENCH_TUNE_DOCS=4000
 *                                    BENCH_CONCURRENCIES=8,32,128 (BullMQ's, tried in turn)
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
const CONCURRENCIES = (process.env.BENCH_CONCURRENCIES ?? "8,32,128").split(",").map(Number);
const TRACE_DOCS = Number(process.env.BENCH_TRACE_DOCS ?? Math.min(DOCS, 1_000));
const CEILING_REQUESTS = Number(process.env.BENCH_CEILING_REQUESTS ?? 300_000);

interface Run {
  implementation: string;
  docsPerSecond: number;
  endToEndMs: number[];
  /** Documents whose work was done again (BullMQ) or queued twice (the capstone's audit). */
  redone: number;
}

const sortedCopy = (values: number[]) => [...values].sort((a, b) => a - b);

function row(run: Run, label: number | string) {
  const sorted = sortedCopy(run.endToEndMs);
  return {
    implementation: run.implementation,
    run: label,
    "docs/s": run.docsPerSecond,
    "e2e p50 ms": percentile(sorted, 50),
    "e2e p99 ms": percentile(sorted, 99),
    "latency samples": sorted.length,
    redone: run.redone,
  };
}

function median(values: number[]): number {
  const sorted = sortedCopy(values);
  const middle = sorted.length / 2;
  return Number.isInteger(middle)
    ? ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2
    : (sorted[Math.floor(middle)] ?? 0);
}

/** Median docs/s over the runs; latencies pooled over them. */
function summary(runs: Run[]) {
  const pooled = sortedCopy(runs.flatMap((r) => r.endToEndMs));
  return {
    docsPerSecond: median(runs.map((r) => r.docsPerSecond)),
    p50: percentile(pooled, 50),
    p99: percentile(pooled, 99),
  };
}

const times = (ours: number, theirs: number) => `${(ours / theirs).toPrecision(2)}x`;

const server = await startPrivateServer();
const admin = createClient({ url: server.url, name: "bench:admin" });
await admin.connect();
try {
  const bullmq = async (
    docs: number,
    concurrency: number,
    intake: "bulk" | number = "bulk",
  ): Promise<Run> => {
    await admin.flushAll();
    const result = await runBullmq(server.url, docs, concurrency, intake);
    return {
      implementation: `BullMQ, concurrency ${concurrency}, ${intake === "bulk" ? "addBulk" : `${Math.round(intake)} adds/s`}`,
      docsPerSecond: (result.docs / result.durationMs) * 1000,
      endToEndMs: result.endToEndMs,
      redone: result.redone,
    };
  };
  let capstoneRate = 0;
  // The CLI starts its own private server, with the same helper and settings as ours.
  const capstone = async (docs: number): Promise<Run> => {
    const result = await runCapstone(docs);
    capstoneRate = result.audit.docsPerSecond;
    return {
      implementation: "capstone, 4 worker processes",
      docsPerSecond: result.audit.docsPerSecond,
      endToEndMs: result.endToEndMs,
      redone: result.audit.duplicated,
    };
  };

  const tuning: Run[] = [];
  for (const concurrency of CONCURRENCIES) tuning.push(await bullmq(TUNE_DOCS, concurrency));
  const fastest = tuning.reduce((a, b) => (b.docsPerSecond > a.docsPerSecond ? b : a));
  const concurrency = CONCURRENCIES[tuning.indexOf(fastest)] ?? 32;
  printTable(
    `BullMQ worker concurrency, ${TUNE_DOCS} documents each: the fastest is used below`,
    tuning.map((run) => row(run, "tuning")),
  );

  const contenders = [
    () => capstone(DOCS),
    () => bullmq(DOCS, concurrency),
    // Offered the capstone's last rate: upload-to-done without a backlog, like the capstone's.
    () => bullmq(DOCS, concurrency, capstoneRate),
  ];
  const runs: { run: Run; round: number }[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    // A different one goes first each round, so none always gets the warmer (or busier) machine.
    for (let k = 0; k < contenders.length; k++) {
      const start = contenders[(round - 1 + k) % contenders.length];
      if (start) runs.push({ run: await start(), round });
    }
  }
  printTable(
    `Capstone vs BullMQ: ${DOCS} documents per run, 4 stages, zero service latency; e2e = upload to last stage done, queueing included`,
    runs.map(({ run, round }) => row(run, round)),
  );
  const of = (name: string) =>
    runs.map(({ run }) => run).filter((run) => run.implementation.includes(name));
  const ours = summary(of("capstone"));
  const bulk = summary(of("addBulk"));
  const paced = summary(of("adds/s"));
  printTable(
    "Capstone ÷ BullMQ (median docs/s over the runs; latencies pooled)",
    [
      {
        measure: "docs/s",
        capstone: ours.docsPerSecond,
        bulk: bulk.docsPerSecond,
        paced: paced.docsPerSecond,
      },
      { measure: "e2e p50 ms", capstone: ours.p50, bulk: bulk.p50, paced: paced.p50 },
      { measure: "e2e p99 ms", capstone: ours.p99, bulk: bulk.p99, paced: paced.p99 },
    ].map(({ measure, capstone, bulk, paced }) => ({
      measure,
      capstone,
      "BullMQ addBulk": bulk,
      "capstone ÷ addBulk": times(capstone, bulk),
      "BullMQ at the capstone's rate": paced,
      "capstone ÷ that": times(capstone, paced),
    })),
  );

  const traced = await runCapstone(TRACE_DOCS, true);
  const perDoc = [...(traced.commandsPerDoc ?? new Map<string, number>())].sort(
    (a, b) => b[1] - a[1],
  );
  const commandsPerDoc = perDoc.reduce((sum, [, n]) => sum + n, 0);
  printTable(
    `Commands one capstone document costs (MONITOR on a ${TRACE_DOCS}-document run, from 20% to 80% done, the run's own polling left out)`,
    [
      ...perDoc.map(([command, n]) => ({ command, "per document": n })),
      { command: "all", "per document": commandsPerDoc },
    ],
  );

  await admin.flushAll();
  const ceiling = pipelinedXaddRate(server.port, CEILING_REQUESTS);
  if ("missing" in ceiling) {
    console.log(`\nThe server's ceiling: skipped, ${ceiling.missing}.`);
  } else {
    const docsCeiling = ceiling.xaddPerSecond / commandsPerDoc;
    printTable("The server's ceiling for the capstone (redis-benchmark XADD, pipeline 32)", [
      {
        "XADD/s": ceiling.xaddPerSecond,
        "commands/doc": commandsPerDoc,
        "ceiling docs/s": docsCeiling,
        "capstone docs/s": ours.docsPerSecond,
        "share of the ceiling": `${((100 * ours.docsPerSecond) / docsCeiling).toFixed(1)}%`,
      },
    ]);
  }
} finally {
  admin.destroy();
  await server.stop();
}
