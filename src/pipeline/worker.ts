/**
 * A worker process: one stage loop per stage it serves, each on its own connection (a blocking
 * XREADGROUP and a WATCH both need a connection to themselves). Started by the supervisor with
 * its settings in PIPELINE_WORKER; it stops on SIGTERM, and on its own when the parent's pipe to
 * its stdin closes, so a killed parent never leaves workers behind.
 */
import { runBatchLoop } from "./batch-loop.ts";
import { loadBatchParts } from "./batch-parts.ts";
import { type PipelineKeys, pipelineKeys } from "./keys.ts";
import { connectClient, loadParts, type Redis } from "./parts.ts";
import { batchPartsThatWait, partsThatWait } from "./replica-wait.ts";
import { runStageLoop } from "./stage-loop.ts";
import { READY_LINE, type WorkerSettings } from "./worker-settings.ts";

async function main(): Promise<void> {
  const settings = JSON.parse(process.env.PIPELINE_WORKER ?? "null") as WorkerSettings | null;
  if (!settings) throw new Error("PIPELINE_WORKER is not set: start workers with the supervisor.");
  const parts = partsThatWait(await loadParts(settings.parts), settings.replicaWait);
  const batch = settings.batch;
  const batchParts = batch
    ? batchPartsThatWait(await loadBatchParts(batch.parts), settings.replicaWait)
    : undefined;
  const keys: PipelineKeys = pipelineKeys(settings.prefix);
  const stop = new AbortController();
  const clients = await Promise.all(
    settings.stages.map((stage) => {
      const name = `${settings.clientName}${stage}-${settings.slot}`;
      return connectClient(settings.redisUrl, name, (error) =>
        process.stderr.write(`${name}: ${error.message}\n`),
      );
    }),
  );
  // No 5-second timer per command (node-redis's default): at thousands of commands a second
  // the timers cost more CPU than the commands. A command whose connection drops still fails.
  const quick = clients.map((client) => client.withCommandOptions({ timeout: 0 }) as Redis);
  const shutdown = () => {
    if (stop.signal.aborted) return;
    stop.abort();
    // A loop blocked in XREADGROUP returns within blockMs; do not wait for a hung one forever.
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
  process.stdin.on("end", shutdown);
  process.stdin.on("close", shutdown);
  process.stdin.resume();

  process.stdout.write(`${READY_LINE}\n`);
  await Promise.all(
    settings.stages.map((stage, i) => {
      const loop = {
        client: quick[i] as Redis,
        parts,
        keys,
        stage,
        consumer: `${stage}-${settings.slot}`,
        config: settings.loop,
        signal: stop.signal,
        crash: () => process.kill(process.pid, "SIGKILL"),
        log: (line: string) => process.stderr.write(`${line}\n`),
      };
      return batch && batchParts ? runBatchLoop(loop, batchParts, batch) : runStageLoop(loop);
    }),
  );
  for (const client of clients) client.destroy();
  process.exit(0);
}

main().catch((error: Error) => {
  process.stderr.write(`worker failed: ${error.message}\n`);
  process.exit(1);
});
