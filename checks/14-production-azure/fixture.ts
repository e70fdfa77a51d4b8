/**
 * Lesson 14's stand-in for Azure: a TLS redis-server on loopback with certificates made for
 * this run (for a fresh name only, no IP address, so a client must pass servername), ACL users
 * whose passwords the check rotates, and impostor TLS servers: one whose certificate comes from
 * another CA, one whose certificate the right CA issued for another name.
 */
import { randomBytes } from "node:crypto";
import type dnsModule from "node:dns";
import { createRequire } from "node:module";
import tls from "node:tls";
import { createClient } from "redis";
import { makeAuthority, startTlsServer, type TlsServer } from "../../src/redis/tls-server.ts";
import { ctx, fresh, type Redis } from "../kit.ts";

export interface StageConnection {
  host: string;
  port: number;
  ca: string;
  servername: string;
  username: string;
  password(): Promise<string>;
}

/** An ACL user the check made, with a password it can rotate. */
export interface RotatingUser {
  conn: StageConnection;
  /** How many times conn.password() was called. */
  calls(): number;
  /** New password (ACL SETUSER ... resetpass), then every connection of the user killed. */
  rotate(): Promise<void>;
}

export interface Fixture {
  server: TlsServer;
  servername: string;
  /** The check's own connection to the TLS server, as the default (admin) user. */
  admin: Redis;
  /** Creates user `username` with `rules` after `reset on >password`. */
  user(label: string, rules: string[]): Promise<RotatingUser>;
  /** A client of the check's own, connected as `user`: the check's probe of its rights. */
  probe(user: RotatingUser): Promise<Redis>;
  stop(): Promise<void>;
}

const secret = () => randomBytes(12).toString("hex");

/**
 * Makes `name` resolve to `address` in this process (the learner's code runs here), as Azure's
 * DNS makes <name>.redis.cache.windows.net resolve to the cache; the function returned undoes it.
 * node:net looks `dns.lookup` up on every connection, and node-redis 6.3 `dns/promises`'s
 * `lookup` on every handshake (to tell a private endpoint), so both are replaced. The modules are
 * required, not imported: vitest may hand an import a copy of their exports.
 */
function resolveHere(name: string, address: string): () => void {
  const require = createRequire(import.meta.url);
  const dns: typeof dnsModule = require("node:dns");
  const promises: typeof dnsModule.promises = require("node:dns/promises");
  const ours = (host: unknown) => typeof host === "string" && host.toLowerCase() === name;
  const answer = (options: unknown) =>
    typeof options === "object" && options !== null && "all" in options && options.all
      ? [[{ address, family: 4 }]]
      : [address, 4];
  const original = dns.lookup;
  const lookup = (host: string, options: unknown, callback?: unknown) => {
    if (!ours(host))
      return (original as (...a: unknown[]) => void).call(dns, host, options, callback);
    const done = (typeof options === "function" ? options : callback) as (...a: unknown[]) => void;
    process.nextTick(done, null, ...answer(options));
  };
  const originalPromise = promises.lookup;
  const lookupPromise = async (host: string, options?: unknown) => {
    if (!ours(host))
      return (originalPromise as (...a: unknown[]) => unknown).call(promises, host, options);
    const [found, family] = answer(options);
    return Array.isArray(found) ? found : { address: found, family };
  };
  dns.lookup = lookup as typeof dns.lookup;
  promises.lookup = lookupPromise as typeof promises.lookup;
  return () => {
    if (dns.lookup === lookup) dns.lookup = original;
    if (promises.lookup === lookupPromise) promises.lookup = originalPromise;
  };
}

export async function startFixture(): Promise<Fixture> {
  // A fresh name: a client that hard-codes "localhost" or the address fails verification.
  const servername = `${fresh("stage")}.redis.test`;
  const server = await startTlsServer({ names: [servername] });
  // The address to dial is a name of its own, as on Azure, and neither the certificate's name
  // nor the server's address: a client that dials a hard-coded 127.0.0.1 is told apart by
  // what it dialled, though the check's server, on this machine, answers it all the same.
  const host = `${fresh("cache")}.redis.test`;
  const unresolve = resolveHere(host, server.host);
  const opened: Redis[] = [];
  const connect = async (name: string, username: string, password: string) => {
    const client: Redis = createClient({
      name: `wb:check:${name}:${ctx.runId}`,
      username,
      password,
      socket: {
        tls: true,
        host: server.host,
        port: server.port,
        ca: server.ca,
        servername,
        reconnectStrategy: false,
      },
    });
    client.on("error", () => {});
    opened.push(client);
    await client.connect();
    return client;
  };
  try {
    const admin = await connect("tls-admin", "default", server.adminPassword);
    return {
      server,
      servername,
      admin,
      async user(label, rules) {
        const username = fresh(label);
        let password = secret();
        let calls = 0;
        await admin.sendCommand([
          "ACL",
          "SETUSER",
          username,
          "reset",
          "on",
          `>${password}`,
          ...rules,
        ]);
        return {
          conn: {
            host,
            port: server.port,
            ca: server.ca,
            servername,
            username,
            password: async () => {
              calls++;
              return password;
            },
          },
          calls: () => calls,
          async rotate() {
            password = secret();
            await admin.sendCommand(["ACL", "SETUSER", username, "resetpass", `>${password}`]);
            await admin.sendCommand(["CLIENT", "KILL", "USER", username]);
          },
        };
      },
      async probe(user) {
        return connect("acl-probe", user.conn.username, await user.conn.password());
      },
      async stop() {
        for (const client of opened) if (client.isOpen) client.destroy();
        unresolve();
        await server.stop();
      },
    };
  } catch (error) {
    for (const client of opened) if (client.isOpen) client.destroy();
    unresolve();
    await server.stop();
    throw error;
  }
}

/**
 * A TLS server whose certificate a client that verifies never accepts: by default one for
 * `servername` signed by an impostor's CA; with `wrongName`, one the server's own CA signed for
 * another host (what a client that checks the CA but not the name accepts). It records whether
 * a client completed the handshake.
 */
export async function startImpostor(
  real: TlsServer,
  servername: string,
  options: { wrongName?: boolean } = {},
): Promise<{ port: number; handshakes(): number; close(): Promise<void> }> {
  const { cert, key } = options.wrongName
    ? real.issue(fresh("elsewhere"), [`${fresh("elsewhere")}.redis.test`])
    : makeAuthority(real.dir, fresh("impostor")).issue("server", [servername]);
  let handshakes = 0;
  const sockets = new Set<tls.TLSSocket>();
  const server = tls.createServer({ cert, key }, (socket) => {
    handshakes++;
    sockets.add(socket);
    socket.on("error", () => {});
    socket.destroy();
  });
  server.on("tlsClientError", () => {});
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;
  return {
    port,
    handshakes: () => handshakes,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
