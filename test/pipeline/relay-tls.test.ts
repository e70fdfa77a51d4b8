/**
 * On the user's cluster a partition's relay (127.0.0.1) stands between the clients and a node
 * whose certificate names the user's host: TLS and the password pass through the relay, and the
 * certificate is checked against the URL's host name (or REDIS_TLS_SERVERNAME), never skipped.
 */
import { createClient } from "redis";
import { expect, test } from "vitest";
import { startPartitionProxy } from "../../src/pipeline/partition-proxy.ts";
import { nodeUrl, relayServername } from "../../src/pipeline/user-cluster.ts";
import { tlsSocketOptions } from "../../src/redis/tls.ts";
import { opensslMissing, startTlsServer } from "../../src/redis/tls-server.ts";

const missing = opensslMissing();

test("the relays' certificate name: REDIS_TLS_SERVERNAME, else the URL's host name, never an IP", () => {
  const url = "rediss://:key@cache.example.test:6380";
  expect(relayServername(url, {})).toBe("cache.example.test");
  expect(relayServername(url, { REDIS_TLS_SERVERNAME: "other.example.test" })).toBe(
    "other.example.test",
  );
  expect(relayServername("rediss://:key@10.0.0.1:6380", {})).toBeUndefined();
  expect(relayServername("redis://:key@cache.example.test:6379", {})).toBeUndefined();
  expect(nodeUrl(url, { host: "127.0.0.1", port: 4000 })).toBe("rediss://:key@127.0.0.1:4000");
});

test.skipIf(missing)(
  `TLS and the password pass through a relay, checked against the user's host name${missing ? ` (skipped: ${missing})` : ""}`,
  async () => {
    const server = await startTlsServer({ names: ["cache.example.test"] });
    const proxy = await startPartitionProxy(server.port);
    try {
      const users = new URL(server.url);
      users.hostname = "cache.example.test";
      const relayed = nodeUrl(users.toString(), { host: "127.0.0.1", port: proxy.port });
      const ping = async (env: NodeJS.ProcessEnv) => {
        const client = createClient({
          url: relayed,
          socket: {
            connectTimeout: 5000,
            reconnectStrategy: false,
            ...tlsSocketOptions(relayed, env),
          },
        });
        client.on("error", () => {});
        try {
          await client.connect();
          return await client.ping();
        } finally {
          client.destroy();
        }
      };
      const servername = relayServername(users.toString(), {});
      expect(await ping({ REDIS_CA: server.caFile, REDIS_TLS_SERVERNAME: servername })).toBe(
        "PONG",
      );
      // Without the name the relay's 127.0.0.1 is checked, and the certificate does not have it.
      await expect(ping({ REDIS_CA: server.caFile })).rejects.toThrow(/127\.0\.0\.1|altnames/i);
    } finally {
      await proxy.close();
      await server.stop();
    }
  },
  30_000,
);
