/**
 * The Redis a run starts for itself: a private redis-server, or with `tls` a TLS-only one (its
 * plain port closed once it is up) whose CA every process of the run trusts through REDIS_CA.
 * Workers inherit the environment when they start, and every connection of the pipeline takes
 * its TLS settings from it (src/redis/tls.ts), so one variable reaches them all.
 */
import { rememberSecret } from "../redis/redact.ts";
import { startPrivateServer } from "../redis/server.ts";
import { startTlsServer } from "../redis/tls-server.ts";

export interface LocalRedis {
  /** With the password on the TLS server: pass it to clients, print it redacted. */
  url: string;
  /** The CA file to verify the TLS server with (redis-cli --tls --cacert); undefined: plain. */
  caFile?: string;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

const TLS_ENV = ["REDIS_CA", "REDIS_TLS_SERVERNAME"] as const;

export async function startLocalRedis(options: {
  tls?: boolean;
  aof: boolean;
}): Promise<LocalRedis> {
  if (!options.tls) return startPrivateServer([], { aof: options.aof });
  const server = await startTlsServer({ tlsOnly: true, aof: options.aof });
  rememberSecret(server.adminPassword);
  // The URL's host, 127.0.0.1, is on the certificate: no other name to check it against.
  const untrust = trustForRun(server.caFile);
  return {
    url: server.url,
    caFile: server.caFile,
    restart: server.restart,
    async stop() {
      untrust();
      await server.stop();
    },
  };
}

/**
 * Makes every connection of the run (this process's, and the workers' that inherit its
 * environment) verify the run's own server with `caFile`, against `servername` when given.
 * Returns what puts the environment back as it was.
 */
export function trustForRun(caFile: string, servername?: string): () => void {
  const before = TLS_ENV.map((name) => process.env[name]);
  process.env.REDIS_CA = caFile;
  if (servername) process.env.REDIS_TLS_SERVERNAME = servername;
  else delete process.env.REDIS_TLS_SERVERNAME;
  return () => {
    TLS_ENV.forEach((name, i) => {
      const value = before[i];
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    });
  };
}
