/** `npm run redis-cli`: the workbook's Redis, with the password never on a command line or shown. */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { parseArgs, UsageError } from "../src/args.ts";
import { type PrivateServer, startPrivateServer } from "../src/redis/server.ts";
import { redisCliConnection } from "../src/ui/redis-cli.ts";
import { cli } from "./support/cli.ts";
import { scratchDir } from "./support/sandbox.ts";

const PASSWORD = "s3cr:et-redis-cli";
const scratch = scratchDir("redis-cli");
let server: PrivateServer;
beforeAll(async () => {
  server = await startPrivateServer(["--requirepass", PASSWORD]);
});
afterAll(async () => {
  await server.stop();
  scratch.remove();
});

test("passes the arguments after its own options to redis-cli as they are", () => {
  expect(parseArgs(["redis-cli", "CLIENT", "LIST"]).rest).toEqual(["CLIENT", "LIST"]);
  expect(parseArgs(["redis-cli", "XRANGE", "k", "-", "+"]).rest).toEqual(["XRANGE", "k", "-", "+"]);
  expect(parseArgs(["redis-cli", "--", "--scan"]).rest).toEqual(["--scan"]);
  expect(parseArgs(["redis-cli", "--stop"]).flags.has("--stop")).toBe(true);
  expect(() => parseArgs(["redis-cli", "--stpo"])).toThrow(UsageError);
});

test("connects to a TLS REDIS_URL with the user as an option and the password only in REDISCLI_AUTH", () => {
  const { args, env } = redisCliConnection("rediss://alice:p%40ss@cache.example.net:6380/2");
  expect(args).toEqual([
    "-h",
    "cache.example.net",
    "-p",
    "6380",
    "--tls",
    "--sni",
    "cache.example.net",
    "--user",
    "alice",
    "-n",
    "2",
  ]);
  expect(env).toEqual({ REDISCLI_AUTH: "p@ss" });
});

test("runs one command on REDIS_URL without showing its password", () => {
  const url = `redis://:${encodeURIComponent(PASSWORD)}@127.0.0.1:${server.port}`;
  const workspace = join(scratch.dir, "ws");
  const run = cli(["redis-cli", "CLIENT", "LIST"], {
    REDIS_URL: url,
    WORKBOOK_WORKSPACE: workspace,
  });
  expect(run.code, run.err).toBe(0);
  expect(run.out).toContain("cmd=client|list");
  expect(run.out + run.err).not.toContain(PASSWORD);
});

test("says how to install redis-cli when it is missing", () => {
  const empty = mkdtempSync(join(tmpdir(), "no-redis-cli-"));
  const run = cli(["redis-cli", "PING"], { PATH: empty });
  expect(run.code).toBe(2);
  expect(run.err).toContain("sudo apt-get install -y redis-tools");
});
