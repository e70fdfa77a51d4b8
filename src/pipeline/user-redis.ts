/**
 * A run on the user's own server (--redis-url or REDIS_URL): every key under a prefix of the
 * run's own, so two runs, or a run and the user's data, never meet; no global command (no
 * FLUSHALL, no CONFIG SET, no restart); the run's keys removed (SCAN + UNLINK) when it ends.
 */
import { randomBytes } from "node:crypto";
import { redact } from "../redis/redact.ts";
import { deletePrefixedKeys, redisUrlFrom, serverVersion } from "../redis/target.ts";

export interface UserRedis {
  /** With its password: pass it to clients only. */
  url: string;
  display: string;
  prefix: string;
  /** Removes the run's keys; gives up after a while on a server that does not answer. */
  removeKeys(): Promise<number>;
}

/** `raw` as given (a URL or the Azure portal's connection string); its secrets never print. */
export async function openUserRedis(raw: string, base: string): Promise<UserRedis> {
  const url = redisUrlFrom(raw);
  // Connects once, without retrying: a wrong URL or CA fails now and says why.
  await serverVersion(url);
  const prefix = `${base}${randomBytes(4).toString("hex")}:`;
  return {
    url,
    display: redact(url),
    prefix,
    removeKeys: () => deletePrefixedKeys(url, prefix, 10_000),
  };
}
