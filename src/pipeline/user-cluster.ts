/**
 * `--cluster` with --redis-url / REDIS_URL: the user's own Redis Cluster. Only read-only
 * CLUSTER SLOTS finds out which primary serves which slot; the run's keys
 * live under its own prefix; at the end they are removed from every primary with SCAN + UNLINK.
 * Nothing here fails a node over, restarts or configures one.
 */
import { isIP } from "node:net";
import { createClient } from "redis";
import { redact } from "../redis/redact.ts";
import { deletePrefixedKeys } from "../redis/target.ts";
import { tlsSocketOptions } from "../redis/tls.ts";

export interface NodeAddress {
  host: string;
  port: number;
}

export interface SlotRange {
  start: number;
  end: number;
  primary: NodeAddress;
  replicas: NodeAddress[];
}

/** The URL is a plain server, not a cluster: what happened, and what to do instead. */
export class NotAClusterError extends Error {
  override name = "NotAClusterError";
}

/** `url` with the node's host and port, keeping its scheme, user and password. */
export function nodeUrl(url: string, node: NodeAddress): string {
  const parsed = new URL(url);
  parsed.hostname = node.host.includes(":") ? `[${node.host}]` : node.host;
  parsed.port = String(node.port);
  return parsed.toString();
}

/** A client for a question or two: it gives up, rather than retry, when the node is gone. */
export function oneShot(url: string, name = "pipeline:cluster-map") {
  const client = createClient({
    url,
    name,
    socket: { connectTimeout: 5000, reconnectStrategy: false, ...tlsSocketOptions(url) },
  });
  client.on("error", () => {});
  return client;
}

/** A CLUSTER SLOTS node entry: [host, port, id, ...]; an empty host means the one asked. */
function address(entry: unknown, asked: string): NodeAddress {
  const [host, port] = entry as [string, number];
  return { host: host && host !== "?" ? String(host) : asked, port: Number(port) };
}

/** The slot map as the node at `url` sees it (CLUSTER SLOTS, read-only). */
export async function slotMap(url: string): Promise<SlotRange[]> {
  const client = oneShot(url);
  try {
    await client.connect();
    const reply = (await client.sendCommand(["CLUSTER", "SLOTS"]).catch((error: Error) => {
      if (/cluster support disabled|unknown command/i.test(error.message)) {
        throw new NotAClusterError(
          `--cluster: ${redact(url)} is not a Redis Cluster (CLUSTER SLOTS: ${error.message}). Leave out --cluster to run on it as one server (with Azure Managed Redis's Enterprise clustering policy the endpoint is one proxy: no --cluster needed).`,
        );
      }
      throw error;
    })) as unknown as unknown[][];
    const asked = new URL(url).hostname.replace(/^\[|\]$/g, "");
    return reply.map(([start, end, primary, ...replicas]) => ({
      start: Number(start),
      end: Number(end),
      primary: address(primary, asked),
      replicas: replicas.map((r) => address(r, asked)),
    }));
  } finally {
    client.destroy();
  }
}

export function ownerOf(map: SlotRange[], slot: number): SlotRange | undefined {
  return map.find((range) => range.start <= slot && slot <= range.end);
}

/** The slot map from the first of `urls` that answers: after a failover the seed may be down. */
export async function slotMapFromAny(urls: string[]): Promise<SlotRange[]> {
  let last: unknown;
  for (const url of urls) {
    try {
      return await slotMap(url);
    } catch (error) {
      if (error instanceof NotAClusterError) throw error;
      last = error;
    }
  }
  throw last;
}

/** The distinct primaries of a slot map. */
export function primaries(map: SlotRange[]): NodeAddress[] {
  const seen = new Map<string, NodeAddress>();
  for (const { primary } of map) seen.set(`${primary.host}:${primary.port}`, primary);
  return [...seen.values()];
}

/** Removes the run's keys from every primary (each holds only its own slots' keys). */
export async function removeClusterKeys(
  url: string,
  prefix: string,
  timeoutMs: number,
): Promise<number> {
  const map = await slotMapFromAny([url]);
  const removed = await Promise.all(
    primaries(map).map((node) => deletePrefixedKeys(nodeUrl(url, node), prefix, timeoutMs)),
  );
  return removed.reduce((a, b) => a + b, 0);
}

/**
 * Names the certificate for the whole run (the CLI's process, and the workers that inherit its
 * environment): the relays, and the end's SCAN + UNLINK on each node's announced address.
 */
export function nameRelayedCertificate(url: string): void {
  const servername = relayServername(url, process.env);
  if (servername) process.env.REDIS_TLS_SERVERNAME = servername;
}

/**
 * The certificate name for relayed TLS connections: the relay is on 127.0.0.1, the certificate
 * names the user's host. REDIS_TLS_SERVERNAME when set, else the URL's host when it is a name.
 */
export function relayServername(url: string, env: NodeJS.ProcessEnv): string | undefined {
  if (!/^rediss:/i.test(url)) return undefined;
  const given = env.REDIS_TLS_SERVERNAME?.trim();
  if (given) return given;
  const host = new URL(url).hostname;
  return isIP(host.replace(/^\[|\]$/g, "")) ? undefined : host;
}
