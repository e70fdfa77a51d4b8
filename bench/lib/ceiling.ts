/** The server's own limit: how many XADDs per second redis-benchmark gets in, pipelined. */
import { spawnSync } from "node:child_process";

export type Ceiling = { xaddPerSecond: number } | { missing: string };

export function pipelinedXaddRate(port: number, requests = 300_000): Ceiling {
  const result = spawnSync(
    "redis-benchmark",
    [
      ...["-h", "127.0.0.1", "-p", String(port), "-P", "32", "-n", String(requests), "--csv"],
      ...["XADD", "bench:ceiling", "*", "doc", "1"],
    ],
    { encoding: "utf8", timeout: 120_000 },
  );
  if (result.error) {
    return { missing: "redis-benchmark is not installed (Debian: apt-get install redis-tools)" };
  }
  // --csv: a header line, then "XADD bench:ceiling * doc 1","<requests per second>",...
  const rate = Number(/^"XADD[^"]*","([\d.]+)"/m.exec(result.stdout)?.[1]);
  if (!Number.isFinite(rate) || rate <= 0) {
    return { missing: `redis-benchmark gave no rate: ${result.stderr || result.stdout}`.trim() };
  }
  return { xaddPerSecond: rate };
}
