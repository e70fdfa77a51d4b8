/**
 * A rediss:// REDIS_URL works everywhere the workbook connects (doctor, checks, pipeline,
 * redis-cli), against a local TLS redis-server whose certificate a CA made at test time signed,
 * for a host name only: so REDIS_CA and REDIS_TLS_SERVERNAME are both needed, and the password
 * is never printed. The server, its certificates and its directory are gone afterwards.
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { findLesson, loadCatalog } from "../src/catalog.ts";
import { runCheck } from "../src/check/run.ts";
import { checkRedisUrl } from "../src/doctor.ts";
import { connectClient } from "../src/pipeline/parts.ts";
import { openRedisTarget } from "../src/redis/target.ts";
import { opensslMissing, startTlsServer, type TlsServer } from "../src/redis/tls-server.ts";
import { redisCliConnection } from "../src/ui/redis-cli.ts";

const NAME = "redis.workbook.test";
const missing = opensslMissing();
let server: TlsServer;
let dir: string;

function setEnv(vars: Record<string, string | undefined>): void {
  for (const [name, value] of Object.entries(vars)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
}

describe.skipIf(missing)(`rediss:// REDIS_URL${missing ? ` (skipped: ${missing})` : ""}`, () => {
  beforeAll(async () => {
    server = await startTlsServer({ names: [NAME] });
    dir = server.dir;
  }, 30_000);
  afterEach(() => setEnv({ REDIS_CA: undefined, REDIS_TLS_SERVERNAME: undefined }));
  afterAll(async () => {
    await server?.stop();
    // The certificates and the server's directory go with it.
    if (dir) expect(existsSync(dir)).toBe(false);
  });

  test("doctor names REDIS_CA, then REDIS_TLS_SERVERNAME, then answers; never the password", async () => {
    const untrusted = await checkRedisUrl(server.url);
    expect(untrusted?.status).toBe("fail");
    expect(untrusted?.fix).toContain("REDIS_CA");

    setEnv({ REDIS_CA: server.caFile });
    const otherName = await checkRedisUrl(server.url);
    expect(otherName?.status).toBe("fail");
    expect(otherName?.fix).toContain("REDIS_TLS_SERVERNAME");

    setEnv({ REDIS_TLS_SERVERNAME: NAME });
    const ok = await checkRedisUrl(server.url);
    expect(ok?.status, ok?.detail).toBe("ok");
    expect(ok?.detail).toContain("TLS on (with the CA in REDIS_CA)");

    setEnv({ REDIS_CA: `${server.dir}/missing.pem` });
    const unreadable = await checkRedisUrl(server.url);
    expect(unreadable?.status).toBe("fail");
    expect(unreadable?.detail).toContain("cannot be read");

    for (const finding of [untrusted, otherName, ok, unreadable]) {
      expect(JSON.stringify(finding)).not.toContain(server.adminPassword);
    }
  });

  test("redis-cli and the pipeline's connections use the CA and the name", async () => {
    setEnv({ REDIS_CA: server.caFile, REDIS_TLS_SERVERNAME: NAME });
    const { args, env } = redisCliConnection(server.url);
    expect(args.join(" ")).not.toContain(server.adminPassword);
    const cli = spawnSync("redis-cli", [...args, "PING"], {
      encoding: "utf8",
      env: { ...process.env, ...env },
      timeout: 10_000,
    });
    expect(cli.stdout.trim(), cli.stderr).toBe("PONG");

    const client = await connectClient(server.url, "wb:test:pipeline");
    try {
      expect(await client.ping()).toBe("PONG");
    } finally {
      client.destroy();
    }
  });

  test("a lesson's check passes over TLS", async () => {
    setEnv({ REDIS_CA: server.caFile, REDIS_TLS_SERVERNAME: NAME });
    const lesson = findLesson(loadCatalog(), "08");
    if (!lesson) throw new Error("lesson 08 is missing");
    const redis = await openRedisTarget({ REDIS_URL: server.url });
    try {
      expect(redis.kind).toBe("external");
      const verdict = await runCheck(
        lesson,
        { kind: "solution", file: lesson.solution, label: "the solution" },
        redis,
      );
      expect(verdict.status, verdict.reason ?? JSON.stringify(verdict.tests)).toBe("passed");
      expect(JSON.stringify(verdict)).not.toContain(server.adminPassword);
    } finally {
      await redis.release();
    }
  }, 120_000);
});
