/**
 * A run on the user's own server (--redis-url or REDIS_URL): every key under a prefix of the
 * run's own, so two runs, or a run and the user's data, never meet; no global command (no
 * FLUSHALL, no CONFIG SET, no restart); the run's keys removed (SCAN + UNLINK) when it ends, on
 * every primary of a cluster.
 */
import { randomBytes } from "node:crypto";
import { redact } from "../redis/redact.ts";
import { deletePrefixedKeys, redisUrlFrom, serverVersion } from "../redis/target.ts";
import { nameRelayedCertificate, removeClusterKeys, slotMap } from "./user-cluster.ts";

export interface UserRedis {
  /** With its password: pass it to clients only. */
  url: string;
  display: string;
  prefix: string;
  /** Removes the run's keys; gives up after a while on a server that does not answer. */
  removeKeys(): Promise<number>;
}

/**
 * The shared URL errors speak of REDIS_URL; a user who gave --redis-url reads the option's
 * name instead.
 */
function naming(error: unknown, option: "--redis-url" | "REDIS_URL"): unknown {
  if (option === "REDIS_URL" || !(error instanceof Error)) return error;
  error.message = error.message
    .replace(/unset REDIS_URL/g, "leave out --redis-url")
    .replace(/REDIS_URL/g, "--redis-url");
  return error;
}

/**
 * `raw` as given (a URL or the Azure portal's connection string) by `option`; its secrets never
 * print. With `cluster`, the server must be a Redis Cluster, and the keys go from every primary.
 */
export async function openUserRedis(
  raw: string,
  base: string,
  options: { option: "--redis-url" | "REDIS_URL"; cluster?: boolean },
): Promise<UserRedis> {
  let url: string;
  try {
    url = redisUrlFrom(raw);
    // Connects once, without retrying: a wrong URL or CA fails now and says why.
    await serverVersion(url);
    if (options.cluster) {
      await slotMap(url);
      nameRelayedCertificate(url);
    }
  } catch (error) {
    throw naming(error, options.option);
  }
  const run = randomBytes(4).toString("hex");
  // One hash tag for the whole run on a single endpoint: behind a sharding proxy (Azure Managed
  // Redis's Enterprise policy) a MULTI runs only when its keys share a slot. A cluster run puts
  // each partition under a tag of its own instead, which must be the key's first one.
  const prefix = options.cluster ? `${base}${run}:` : `${base}{${run}}:`;
  return {
    url,
    display: redact(url),
    prefix,
    removeKeys: () =>
      options.cluster
        ? removeClusterKeys(url, prefix, 10_000)
        : deletePrefixedKeys(url, prefix, 10_000),
  };
}
