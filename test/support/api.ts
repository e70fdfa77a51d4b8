/**
 * The intake API on a private Redis, for the tests that talk to it over HTTP: the reference
 * broadcast, the given limits, and one close() for everything it started.
 */
import { createClient } from "redis";
import { type Api, startApi } from "../../src/pipeline/api.ts";
import type { PipelineKeys } from "../../src/pipeline/keys.ts";
import { loadParts, type Redis, SOLUTION_PARTS } from "../../src/pipeline/parts.ts";
import { startPrivateServer } from "../../src/redis/server.ts";

export interface TestApi {
  api: Api;
  /** A connection of the test's own, to look at what the API wrote. */
  client: Redis;
  close(): Promise<void>;
}

export async function startTestApi(
  keys: PipelineKeys,
  limits: { maxBytes: number; maxBacklog?: number },
  /** Run before the API starts, e.g. to create the OCR stream's group. */
  prepare?: (client: Redis) => Promise<unknown>,
): Promise<TestApi> {
  const redis = await startPrivateServer();
  const client: Redis = createClient({ url: redis.url });
  try {
    await client.connect();
    await prepare?.(client);
    const parts = await loadParts(SOLUTION_PARTS);
    const api = await startApi({ client, keys, broadcast: parts.broadcast, ...limits });
    return {
      api,
      client,
      close: async () => {
        await api.close();
        client.destroy();
        await redis.stop();
      },
    };
  } catch (error) {
    client.destroy();
    await redis.stop();
    throw error;
  }
}
