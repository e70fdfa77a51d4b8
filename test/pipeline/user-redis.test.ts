/**
 * The pipeline on the user's server (REDIS_URL, or --redis-url): here a TLS redis-server with a
 * password whose CA only REDIS_CA names. The run keeps to a prefix of its own and removes its
 * keys at the end, sends no global command (chaos kills workers but does not restart the user's
 * Redis, and says so), and never prints the password.
 */
import { randomUUID } from "node:crypto";
import { createClient } from "redis";
import { afterAll, beforeAll, expect, test } from "vitest";
import { opensslMissing, startTlsServer, type TlsServer } from "../../src/redis/tls-server.ts";
import {
  commandLinesWithPython,
  ended,
  expectNothingLeft,
  pythonWorkers,
  runPipeline,
} from "./run-cli.ts";

const missing = opensslMissing();
let server: TlsServer;
let admin: ReturnType<typeof createClient>;

/** Commands a run on someone else's server must never send (the test's own RESETSTAT aside). */
const GLOBAL =
  /^cmdstat_(flushall|flushdb|config\|(?!resetstat)|shutdown|debug|keys|client\|kill|client\|pause|monitor|script\|flush|function\|flush)\b/;

beforeAll(async () => {
  if (missing) return;
  server = await startTlsServer();
  admin = createClient({ url: server.url, socket: { tls: true, ca: [server.ca] } });
  await admin.connect();
}, 30_000);
afterAll(async () => {
  admin?.destroy();
  await server?.stop();
});

test.skipIf(missing)(
  `REDIS_URL=rediss://... with REDIS_CA: the run stays under its prefix, no global command, no password printed${missing ? ` (skipped: ${missing})` : ""}`,
  async () => {
    await admin.set("users-own-key", "untouched");
    await admin.configResetStat();
    const mark = randomUUID();
    const python = pythonWorkers(1, "on a user's rediss:// URL");
    const run = runPipeline(
      ["--docs", "100", "--workers", "2", "--chaos", ...python, "--json"],
      mark,
      { REDIS_URL: server.url, REDIS_CA: server.caFile },
    );
    // The Python worker's URL, password and all, is in its environment, not on its command line.
    const commandLines = python.length > 0 ? await commandLinesWithPython(mark, 30_000) : [];
    expect(commandLines.length > 0 || python.length === 0, "no Python worker came up").toBe(true);
    expect(commandLines.filter((line) => line.includes(server.adminPassword))).toEqual([]);
    const { code, audit, all, context } = await ended(run);
    expect(code, context).toBe(0);
    expect(audit, context).toMatchObject({
      ok: true,
      lost: 0,
      duplicated: 0,
      redisRestarts: 0,
      redis: "yours",
      python: { workers: python.length > 0 ? 1 : 0 },
    });
    expect(all).toContain("Redis is not restarted");
    expect(all).not.toContain(server.adminPassword);
    // Under one hash tag: a sharding proxy runs the hand-off's MULTI only within one slot.
    const prefix = /Keys under (pipeline:\{[0-9a-f]{8}\}:)/.exec(all)?.[1];
    expect(prefix, context).toBeDefined();
    // Read first: the KEYS below is the test's own.
    const stats = (await admin.info("commandstats")).split("\r\n");
    expect(stats.filter((line) => GLOBAL.test(line))).toEqual([]);
    expect(
      stats.some((line) => line.startsWith("cmdstat_xadd:")),
      "the run used this server",
    ).toBe(true);
    // The run's keys are gone; the user's are as they were.
    expect(await admin.keys("pipeline:*")).toEqual([]);
    expect(await admin.get("users-own-key")).toBe("untouched");
    await expectNothingLeft(mark, run.output.stderr, true);
  },
  120_000,
);
