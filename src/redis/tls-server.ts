/**
 * A local stand-in for Azure's TLS endpoint: a private redis-server that also listens with TLS
 * on loopback, with a certificate authority and a server certificate made for it with openssl.
 * Its plain port stays open on 127.0.0.1 for the harness (readiness, refresh), unless `tlsOnly`
 * closes it once the server is up (the pipeline's --tls: then every connection is TLS); learners
 * and tests connect to the TLS port. stop() removes the server, its data and the certificates; the
 * exit hook and the scratch sweep back that up when a process dies before calling it.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { connect as connectTls } from "node:tls";
import { removeOnExit } from "../check/cleanup.ts";
import { makeScratch } from "../scratch.ts";
import { connectRaw } from "./raw.ts";
import { freePort, startPrivateServer } from "./server.ts";

export interface Certificate {
  /** PEM text. */
  cert: string;
  key: string;
  certFile: string;
  keyFile: string;
}

export interface CertificateAuthority extends Certificate {
  /**
   * Issues a server certificate for `names` (DNS names; IP addresses become IP entries); with
   * `clientAuth` it also serves as a client certificate (a cluster node's, on the TLS bus).
   */
  issue(label: string, names: string[], options?: { clientAuth?: boolean }): Certificate;
}

export interface TlsServer {
  host: "127.0.0.1";
  /** The TLS port. */
  port: number;
  /** rediss:// URL of the TLS port, with the admin password: never print it. */
  url: string;
  /** The PEM text of the CA that signed the server's certificate. */
  ca: string;
  caFile: string;
  /** Names on the server's certificate. */
  names: string[];
  /** The password of the `default` user, which can run every command. */
  adminPassword: string;
  /** Where extra certificates (an impostor CA's) may go; removed by stop(). */
  dir: string;
  /**
   * SHUTDOWN (which writes the append-only file with `aof`) and start again on the same ports
   * and directory; with `tlsOnly` the plain port is closed again before it returns.
   */
  restart(): Promise<void>;
  /** Issues another certificate from the server's CA: an impostor with the right CA, a wrong name. */
  issue(label: string, names: string[]): Certificate;
  stop(): Promise<void>;
}

export interface TlsServerOptions {
  /** Names on the certificate; default localhost and 127.0.0.1. */
  names?: string[];
  /** Close the plain port once the server answers: no connection but a TLS one gets in. */
  tlsOnly?: boolean;
  /** Append-only persistence, so restart() keeps every write. */
  aof?: boolean;
}

/** Whether openssl is installed: TLS tests skip with this reason when it is not. */
export function opensslMissing(): string | undefined {
  const result = spawnSync("openssl", ["version"], { encoding: "utf8" });
  return result.error || result.status !== 0
    ? "openssl is not installed (Debian: apt-get install -y openssl)"
    : undefined;
}

function openssl(dir: string, args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

/** P-256 keys: made in milliseconds, where RSA keys would slow every run down. */
const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** A new certificate authority in `dir`, its files named after `label`. */
export function makeAuthority(dir: string, label: string): CertificateAuthority {
  const certFile = join(dir, `${label}-ca.crt`);
  const keyFile = join(dir, `${label}-ca.key`);
  openssl(dir, [
    "req",
    "-x509",
    ...EC_KEY,
    "-keyout",
    keyFile,
    "-out",
    certFile,
    "-days",
    "2",
    "-subj",
    `/CN=workbook ${label} CA`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  const authority: CertificateAuthority = {
    cert: readFileSync(certFile, "utf8"),
    key: readFileSync(keyFile, "utf8"),
    certFile,
    keyFile,
    issue(serverLabel, names, options) {
      const base = join(dir, `${label}-${serverLabel}`);
      const san = names
        .map((name) => (/^[\d.]+$|:/.test(name) ? `IP:${name}` : `DNS:${name}`))
        .join(",");
      const usage = options?.clientAuth ? "serverAuth,clientAuth" : "serverAuth";
      writeFileSync(`${base}.ext`, `subjectAltName=${san}\nextendedKeyUsage=${usage}\n`);
      openssl(dir, [
        "req",
        "-new",
        ...EC_KEY,
        "-keyout",
        `${base}.key`,
        "-out",
        `${base}.csr`,
        "-subj",
        `/CN=${names[0] ?? serverLabel}`,
      ]);
      openssl(dir, [
        "x509",
        "-req",
        "-in",
        `${base}.csr`,
        "-CA",
        certFile,
        "-CAkey",
        keyFile,
        "-CAcreateserial",
        "-out",
        `${base}.crt`,
        "-days",
        "2",
        "-extfile",
        `${base}.ext`,
      ]);
      return {
        cert: readFileSync(`${base}.crt`, "utf8"),
        key: readFileSync(`${base}.key`, "utf8"),
        certFile: `${base}.crt`,
        keyFile: `${base}.key`,
      };
    },
  };
  return authority;
}

/** Sends `command` on the plain port, after AUTH; throws on an error reply. */
async function plainCommand(port: number, password: string, command: string[]): Promise<void> {
  const conn = await connectRaw("127.0.0.1", port);
  try {
    for (const args of [["AUTH", password], command]) {
      const reply = await conn.command(args);
      if (reply instanceof Error) throw new Error(`${args[0]} ${args[1]}: ${reply.message}`);
    }
  } finally {
    conn.close();
  }
}

/** SHUTDOWN over TLS: the plain port may be closed, and a plain NOAUTH would leave it running. */
async function shutdownOverTls(
  port: number,
  password: string,
  ca: string,
  names: string[],
): Promise<void> {
  // Node checks an IP against the certificate's IP entries when no server name is given.
  const servername = names.find((name) => !/^[\d.]+$|:/.test(name));
  await new Promise<void>((resolve) => {
    const socket = connectTls({ host: "127.0.0.1", port, ca: [ca], servername });
    socket.setTimeout(5000, () => socket.destroy());
    socket.once("secureConnect", () => {
      socket.write(
        `*2\r\n$4\r\nAUTH\r\n$${password.length}\r\n${password}\r\n*1\r\n$8\r\nSHUTDOWN\r\n`,
      );
    });
    // SHUTDOWN never answers: the connection closes once the server has stopped.
    socket.once("close", () => resolve());
    socket.once("error", () => socket.destroy());
  });
}

/**
 * Starts redis-server with TLS on 127.0.0.1, its certificate naming `names` (default localhost
 * and 127.0.0.1), clients not asked for certificates of their own, and the `default` user behind
 * a password, as on Azure.
 */
export async function startTlsServer(options: TlsServerOptions = {}): Promise<TlsServer> {
  const missing = opensslMissing();
  if (missing) throw new Error(`Cannot start a TLS redis-server: ${missing}.`);
  const names = options.names ?? ["localhost", "127.0.0.1"];
  const dir = makeScratch("redis");
  const forget = removeOnExit(dir);
  const removeDir = () => {
    rmSync(dir, { recursive: true, force: true });
    forget();
  };
  try {
    const authority = makeAuthority(dir, "local");
    const server = authority.issue("server", names);
    const password = randomBytes(16).toString("hex");
    let lastError: unknown;
    // Another process may take the probed port before redis binds it: then try another.
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      const redis = await startPrivateServer(
        [
          "--tls-port",
          String(port),
          "--tls-cert-file",
          server.certFile,
          "--tls-key-file",
          server.keyFile,
          "--tls-ca-cert-file",
          authority.certFile,
          "--tls-auth-clients",
          "no",
          "--requirepass",
          password,
        ],
        { aof: options.aof },
      ).catch((error: unknown) => {
        lastError = error;
        return undefined;
      });
      if (!redis) continue;
      const closePlainPort = async () => {
        if (options.tlsOnly)
          await plainCommand(redis.port, password, ["CONFIG", "SET", "port", "0"]);
      };
      await closePlainPort().catch(async (error: unknown) => {
        await redis.stop();
        throw error;
      });
      return {
        host: "127.0.0.1",
        port,
        url: `rediss://default:${password}@127.0.0.1:${port}`,
        ca: authority.cert,
        caFile: authority.certFile,
        names,
        adminPassword: password,
        dir,
        restart: async () => {
          await shutdownOverTls(port, password, authority.cert, names);
          await redis.restart();
          await closePlainPort();
        },
        issue: (label, names) => authority.issue(label, names),
        stop: async () => {
          await redis.stop();
          removeDir();
        },
      };
    }
    throw lastError;
  } catch (error) {
    removeDir();
    throw error;
  }
}
