/**
 * Lesson 14's stand-in for Azure: a TLS redis-server on loopback with certificates made for
 * this run (for a fresh name only, no IP address, so a client must pass servername), ACL users
 * whose passwords the check rotates, and impostor TLS servers: one whose certificate comes from
 * another CA, one whose certificate the right CA issued for another name.
 */
import { randomBytes } from "node:crypto";
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

export async function startFixture(): Promise<Fixture> {
  // A fresh name: a client that hard-codes "localhost" or the address fails verification.
  const servername = `${fresh("stage")}.redis.test`;
  const server = await startTlsServer({ names: [servername] });
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
            host: server.host,
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
        await server.stop();
      },
    };
  } catch (error) {
    for (const client of opened) if (client.isOpen) client.destroy();
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
