/**
 * The capstone against BullMQ, the library a Node developer would otherwise reach for: the same
 * four-stage flow (OCR -> NER -> classification -> embedding, zero service latency), the same
 * documents, alternating runs, each on an empty redis-server. Each is first tuned the same way
 * on a smaller run: BullMQ's worker concurrency, the capstone's worker processes. Then the
 * server's ceiling: pipelined XADDs per second divided by the commands one capstone document
 * costs.
 *
 *   npm run bench -- vs-bullmq       BENCH_DOCS=20000 BENCH_ROUNDS=2 BENCH_TUNE_DOCS=4000
 *                                    BENCH_CONCURRENCIES=8,32,128 (BullMQ's, tried in turn)
 *                                    BENCH_WORKERS=1,2,4 (the capstone's processes, in turn)
 *                                    BENCH_BULK=500 (documents per capstone upload request)
 */
import { createClient } from "redis";
import { startPrivateServer } from "../src/redis/server.ts";
import { runBullmq } from "./lib/bullmq-flow.ts";
import { type CapstoneSettings, runCapstone } from "./lib/capstone-run.ts";
import { pipelinedXaddRate } from "./lib/ceiling.ts";
import { percentile, printTable } from "./table.ts";

const DOCS = Number(process.env.BENCH_DOCS ?? 20_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const TUNE_DOCS = Number(process.env.BENCH_TUNE_DOCS ?? Math.min(DOCS, 4_000));
const CONCURRENCIES = (process.env.BENCH_CONCURRENCIES ?? "8,32,128").split(",").map(Number);
const WORKERS = (process.env.BENCH_WORKERS ?? "1,2,4").split(",").map(Number);
const BULK = Number(process.env.BENCH_BULK ?? 500);
const TRACE_DOCS = Number(process.env.BENCH_TRACE_DOCS ?? Math.min(DOCS, 4_000));
const CEILING_REQUESTS = Number(process.env.BENCH_CEILING_REQUESTS ?? 300_000);

interface Run {
  implementation: string;
  docsPerSecond: number;
  /** Upload to last stage done, this run's percentiles. */
  p50: number;
  p99: number;
  samples: number;
  /** Documents whose work was done again (BullMQ) or queued twice (the capstone's audit). */
  redone: number;
}

function row(run: Run, label: number | string) {
  return {
    implementation: run.implementation,
    run: label,
    "docs/s": run.docsPerSecond,
    "e2e p50 ms": run.p50,
    "e2e p99 ms": run.p99,
    "latency samples": run.samples,
    redone: run.redone,
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length / 2;
  return Number.isInteger(middle)
    ? ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2
    : (sorted[Math.floor(middle)] ?? 0);
}

/** The median over the runs of each figure. */
function summary(runs: Run[]) {
  return {
    docsPerSecond: median(runs.map((r) => r.docsPerSecond)),
    p50: median(runs.map((r) => r.p50)),
    p99: median(runs.map((r) => r.p99)),
  };
}

const fastest = (runs: Run[]) => runs.reduce((a, b) => (b.docsPerSecond > a.docsPerSecond ? b : a));

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
    const sorted = [...result.endToEndMs].sort((a, b) => a - b);
    return {
      implementation: `BullMQ, concurrency ${concurrency}, ${intake === "bulk" ? "addBulk" : `${Math.round(intake)} adds/s`}`,
      docsPerSecond: (result.docs / result.durationMs) * 1000,
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      samples: sorted.length,
      redone: result.redone,
    };
  };
  let capstoneRate = 0;
  // The CLI starts its own private server, with the same helper and settings as ours.
  const capstone = async (docs: number, settings: CapstoneSettings): Promise<Run> => {
    const { audit } = await runCapstone(docs, settings);
    capstoneRate = audit.docsPerSecond;
    return {
      implementation: `capstone, ${settings.workers} worker process${settings.workers > 1 ? "es" : ""}, bulk ${settings.bulk}`,
      docsPerSecond: audit.docsPerSecond,
      ...audit.endToEndMs,
      redone: audit.duplicated,
    };
  };

  const tuning: Run[] = [];
  for (const concurrency of CONCURRENCIES) tuning.push(await bullmq(TUNE_DOCS, concurrency));
  const concurrency = CONCURRENCIES[tuning.indexOf(fastest(tuning))] ?? 32;
  const ourTuning: Run[] = [];
  for (const workers of WORKERS) ourTuning.push(await capstone(TUNE_DOCS, { workers, bulk: BULK }));
  const settings = { workers: WORKERS[ourTuning.indexOf(fastest(ourTuning))] ?? 2, bulk: BULK };
  printTable(
    `Tuning, ${TUNE_DOCS} documents each: BullMQ's worker concurrency and the capstone's worker processes; the fastest of each is used below`,
    [...tuning, ...ourTuning].map((run) => row(run, "tuning")),
  );

  const contenders = [
    () => capstone(DOCS, settings),
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
    "Capstone ÷ BullMQ (the median over the runs of each figure)",
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

  const traced = await runCapstone(TRACE_DOCS, settings, true);
  const perDoc = [...(traced.commandsPerDoc ?? new Map<string, number>())].sort(
    (a, b) => b[1] - a[1],
  );
  const commandsPerDoc = perDoc.reduce((sum, [, n]) => sum + n, 0);
  printTable(
    `Commands one capstone document costs (MONITOR on a ${TRACE_DOCS}-document run, scripts' own calls included, batch commands shared by every document, the run's own polling left out)`,
    [
      // Two decimals: a batch's commands cost each document a few hundredths.
      ...perDoc.map(([command, n]) => ({ command, "per document": n.toFixed(2) })),
      { command: "all", "per document": commandsPerDoc.toFixed(2) },
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
