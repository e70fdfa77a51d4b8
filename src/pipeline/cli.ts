/**
 * `npm run pipeline -- --docs N --workers K [--latency MS] [--chaos] [--json]`: runs the whole
 * document analysis pipeline on a private Redis (or a TLS-only one with --tls, or the user's with
 * --redis-url / REDIS_URL), shows it live, and ends with the audit.
 */
import { resolve } from "node:path";
import kleur from "kleur";
import { watchLaunchers } from "../launchers.ts";
import { redact } from "../redis/redact.ts";
import { guardOutput } from "../stdio.ts";
import { PIPELINE_USAGE, PipelineUsageError, parsePipelineArgs, poisonCount } from "./args.ts";
import { renderAudit } from "./audit.ts";
import { BATCH_DEFAULTS } from "./batch-loop.ts";
import { SOLUTION_BATCH_PARTS } from "./batch-parts.ts";
import { clusterShape, PARTITIONS, renderCluster, runClusterPipeline } from "./cluster.ts";
import { endToEnd } from "./end-to-end.ts";
import { SOLUTION_PARTS } from "./parts.ts";
import { DEFAULTS, type PipelineOptions, runPipeline } from "./pipeline.ts";
import { findPython } from "./python.ts";
import { openUserRedis, type UserRedis } from "./user-redis.ts";

async function main(argv: string[]): Promise<number> {
  const args = parsePipelineArgs(argv);
  if (args.help) {
    console.log(PIPELINE_USAGE);
    return 0;
  }
  const stop = new AbortController();
  let signals = 0;
  const onSignal = () => {
    signals++;
    // A second Ctrl+C does not wait: the exit hooks SIGKILL the workers and the server.
    if (signals > 1) process.exit(130);
    process.stderr.write("\nStopping: shutting down workers, API and Redis...\n");
    stop.abort();
  };
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(signal, onSignal);
  // npm killed alone: stop as if interrupted, rather than run on with nobody watching.
  watchLaunchers(onSignal);

  const tty = Boolean(process.stdout.isTTY) && !args.json;
  const out = args.json ? process.stderr : process.stdout;
  const claimIdleMs = args.claimIdleMs ?? Math.max(DEFAULTS.claimIdleMs, args.latencyMs * 10);
  // Lesson 13's parts take one document at a time; otherwise the stages run batched.
  const batchSize = args.parts ? 1 : (args.batch ?? BATCH_DEFAULTS.count);
  const batch =
    batchSize > 1
      ? {
          ...BATCH_DEFAULTS,
          parts: args.batchParts ? resolve(args.batchParts) : SOLUTION_BATCH_PARTS,
          count: batchSize,
          inFlight: args.inFlight ?? BATCH_DEFAULTS.inFlight,
          sweepMs: Math.min(BATCH_DEFAULTS.sweepMs, claimIdleMs / 3),
        }
      : undefined;
  const bulk = args.bulk ?? (batch ? 100 : 1);
  const userUrl = args.tls ? undefined : (args.redisUrl ?? process.env.REDIS_URL?.trim());
  const user: UserRedis | undefined = userUrl
    ? await openUserRedis(userUrl, "pipeline:", {
        option: args.redisUrl ? "--redis-url" : "REDIS_URL",
        cluster: args.cluster,
      })
    : undefined;
  // Python workers are an extra: without python3 and redis-py the run goes on without them.
  let pythonWorkers = args.pythonWorkers;
  const python = pythonWorkers > 0 ? findPython() : undefined;
  const pythonMissing = python && "missing" in python ? python.missing : undefined;
  if (pythonWorkers > 0 && pythonMissing) {
    out.write(kleur.yellow(`Skipping --python-workers: ${pythonMissing}.\n`));
    pythonWorkers = 0;
  }
  if (user && args.chaos) {
    out.write(
      kleur.yellow(
        args.cluster
          ? `Chaos on your cluster (${user.display}): workers are killed; no node is killed, restarted or failed over.\n`
          : `Chaos on your server (${user.display}): workers are killed, Redis is not restarted.\n`,
      ),
    );
  }
  // A cluster run starts no single server to announce: say here where its keys go.
  if (user && args.cluster)
    out.write(kleur.dim(`Keys under ${user.prefix} (removed at the end)\n`));
  if (!args.json) {
    const mode = batch ? `batches of ${batch.count}` : "one at a time";
    const file = batch ? args.batchParts : args.parts;
    const parts = `${file ? `your parts (${file})` : "the reference parts"}, ${mode}`;
    console.log(
      kleur.bold(
        `Document pipeline: ${args.docs} documents, ${args.cluster && !user ? Math.max(args.workers, PARTITIONS) : args.workers} worker processes x 4 stages${pythonWorkers > 0 ? ` + ${pythonWorkers} Python NER` : ""}${args.chaos ? ", chaos" : ""}${args.cluster ? (user ? `, on your cluster (${user.display}), one partition per primary` : `, on a local six-node cluster${args.tls ? " over TLS" : ""}`) : ""}, ${parts}`,
      ),
    );
  }
  try {
    const options: PipelineOptions = {
      ...DEFAULTS,
      docs: args.docs,
      workers: args.workers,
      latencyMs: args.latencyMs,
      failureRate: args.failureRate,
      chaos: args.chaos,
      pythonWorkers,
      poison: poisonCount(args),
      parts: args.parts ? resolve(args.parts) : SOLUTION_PARTS,
      batch,
      bulk,
      maxBacklog: (args.maxBacklog ?? 5000) || undefined,
      claimIdleMs,
      maxDeliveries: args.maxDeliveries ?? DEFAULTS.maxDeliveries,
      redisUrl: user?.url,
      tls: args.tls,
      prefix: user?.prefix ?? "pipeline:",
      signal: stop.signal,
      view: { tty, intervalMs: tty ? 250 : 2000, write: (text) => out.write(text) },
      log: tty ? undefined : (line) => out.write(`${redact(line)}\n`),
      dashboard: args.dashboard ? { port: args.dashboardPort ?? 0 } : undefined,
      onStart: ({ redisUrl, apiUrl, dashboardUrl, caFile }) => {
        out.write(kleur.dim(`Redis ${redact(redisUrl)}   API ${apiUrl}/documents\n`));
        if (caFile) out.write(kleur.dim(`TLS only, verified with the CA in ${caFile}\n`));
        if (user) out.write(kleur.dim(`Keys under ${user.prefix} (removed at the end)\n`));
        if (dashboardUrl) out.write(`Dashboard ${dashboardUrl}  (open it in a browser)\n`);
      },
    };
    const cluster = args.cluster
      ? await runClusterPipeline({
          ...options,
          wait: !args.noWait,
          clusterUrl: user?.url,
          onDashboard: (url) => out.write(`Dashboard ${url}  (open it in a browser)\n`),
          onTls: (caFile) =>
            out.write(kleur.dim(`TLS only on every node, verified with the CA in ${caFile}\n`)),
        })
      : undefined;
    const report = cluster ?? (await runPipeline(options));
    const { audit } = report;
    if (!audit.ok && report.workerLog.length > 0) {
      process.stderr.write(
        redact(`Last worker messages:\n${report.workerLog.slice(-10).join("\n")}\n`),
      );
    }
    if (args.json) {
      // How the run was shaped, after the audit's own fields (which keep their names).
      const shape = {
        batch: batch?.count ?? 1,
        inFlight: batch?.inFlight ?? 1,
        bulk,
        redis: user
          ? args.cluster
            ? "your cluster"
            : "yours"
          : args.cluster
            ? args.tls
              ? "tls cluster"
              : "cluster"
            : args.tls
              ? "tls"
              : "private",
        ...(cluster ? { cluster: clusterShape(cluster, !args.noWait) } : {}),
        ...(report.plainPort === undefined ? {} : { plainPort: report.plainPort }),
        python: { workers: pythonWorkers, nerDone: report.pythonNerDone },
      };
      const e2e = { endToEndMs: endToEnd(report.events) };
      process.stdout.write(`${JSON.stringify({ ...audit, ...shape, ...e2e })}\n`);
    } else {
      console.log(`\n${renderAudit(audit)}`);
      if (cluster) console.log(`\n${renderCluster(cluster, !args.noWait)}`);
    }
    return audit.ok ? 0 : 1;
  } catch (error) {
    if (stop.signal.aborted) {
      process.stderr.write("Stopped. Nothing is left running.\n");
      return 130;
    }
    throw error;
  } finally {
    if (user) {
      const removed = await user.removeKeys().catch(() => undefined);
      out.write(
        removed === undefined
          ? kleur.yellow(`Could not remove the keys under ${user.prefix}: delete them yourself.\n`)
          : kleur.dim(`Removed the run's ${removed} keys under ${user.prefix}.\n`),
      );
    }
  }
}

// A reader that went away (`| head`): stop the run as Ctrl+C would, without a stack trace.
guardOutput(() => process.kill(process.pid, "SIGTERM"));

main(process.argv.slice(2)).then(
  // Everything was stopped on the way out; exit even if a straggling request is still pending.
  (code) => process.exit(code),
  (error: Error) => {
    if (error instanceof PipelineUsageError) {
      console.error(`${redact(error.message)}\nRun \`npm run pipeline -- --help\` for its usage.`);
    } else {
      console.error(kleur.red(redact(error.message)));
    }
    process.exit(2);
  },
);
