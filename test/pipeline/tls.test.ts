/**
 * `npm run pipeline -- --tls`: the run starts a local TLS-only redis-server, and every process
 * of it (API, workers, audit) connects over rediss:// verifying the local CA. The plain port is
 * closed before any of them starts and again after chaos restarts the server, so a run that ends
 * with the port still 0 and its audit whole connected by TLS only. Nothing is left behind: processes, ports, the server's directory and certificates.
 */
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { dirname } from "node:path";
import { expect, test } from "vitest";
import { opensslMissing } from "../../src/redis/tls-server.ts";
import { ended, expectNothingLeft, pythonWorkers, runPipeline } from "./run-cli.ts";

const missing = opensslMissing();

test.skipIf(missing)(
  `--tls --chaos: 100 documents over TLS only, through a Redis restart, none lost, none twice${missing ? ` (skipped: ${missing})` : ""}`,
  async () => {
    const mark = randomUUID();
    const python = pythonWorkers(1, "with --tls");
    const run = runPipeline(
      ["--tls", "--chaos", "--docs", "100", "--workers", "2", ...python, "--json"],
      mark,
    );
    const { code, audit, context } = await ended(run);
    expect(code, context).toBe(0);
    expect(audit, context).toMatchObject({
      ok: true,
      accepted: 100,
      lost: 0,
      duplicated: 0,
      redisRestarts: 1,
      redis: "tls",
      plainPort: 0,
      python: { workers: python.length > 0 ? 1 : 0 },
    });
    expect(run.output.stderr).toMatch(/Redis rediss:\/\/default:\*\*\*@127\.0\.0\.1:\d+/);
    const ca = /verified with the CA in (\S+)/.exec(run.output.stderr)?.[1];
    expect(ca, context).toBeDefined();
    await expectNothingLeft(mark, run.output.stderr);
    expect(existsSync(dirname(ca as string)), "the server's directory").toBe(false);
  },
  120_000,
);
