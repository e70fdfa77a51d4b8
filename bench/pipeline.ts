/**
 * Throughput of the document pipeline against the number of worker processes: while the
 * simulated AI services are the bottleneck, more workers finish more documents per second.
 * `npm run bench -- pipeline` (or PIPELINE_BENCH_DOCS=1000 for a longer run).
 */
import { SOLUTION_PARTS } from "../src/pipeline/parts.ts";
import { DEFAULTS, runPipeline } from "../src/pipeline/pipeline.ts";
import { printTable } from "./table.ts";

const docs = Number(process.env.PIPELINE_BENCH_DOCS ?? 300);
const latencyMs = 20;
const rows: Record<string, string | number>[] = [];
for (const workers of [1, 2, 4]) {
  const { audit } = await runPipeline({
    ...DEFAULTS,
    docs,
    workers,
    latencyMs,
    failureRate: 0,
    badRequests: false,
    parts: SOLUTION_PARTS,
    prefix: "bench:",
  });
  rows.push({
    workers,
    "consumers per stage": workers,
    documents: audit.completed,
    seconds: audit.durationMs / 1000,
    "docs/s": audit.docsPerSecond,
    "API p50 ms": audit.apiLatencyMs.p50,
    "API p99 ms": audit.apiLatencyMs.p99,
    audit: audit.ok ? "ok" : "FAILED",
  });
}
printTable(
  `Document pipeline: ${docs} documents, 4 stages, ${latencyMs} ms per service call, timed from the first upload to the last document`,
  rows,
);
