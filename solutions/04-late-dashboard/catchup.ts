/**
 * Lesson 04: What pub/sub does not promise (reference solution).
 */
import type { RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

export type Stage = "uploaded" | "ocr" | "ner" | "classification" | "embedding" | "done";

/**
 * A document's status. `version` goes up by one with every change to that document, so of two
 * statuses for the same document the higher version is the newer one.
 */
export interface DocStatus {
  docId: string;
  stage: Stage;
  version: number;
  at: number;
}

/** Where statuses live: the live channel, and the hash of each document's latest status. */
export interface StatusKeys {
  channel: string;
  latest: string;
}

export async function publishStatus(
  client: Redis,
  keys: StatusKeys,
  status: DocStatus,
): Promise<void> {
  const json = JSON.stringify(status);
  // MULTI/EXEC runs the HSET and the PUBLISH back to back, no other client's command in between:
  // nobody can read the hash after the status went out and before it was recorded. It is no
  // rollback: a command that fails as it runs (WRONGTYPE) does not stop the other one, and
  // exec() then rejects with the error in that command's place.
  await client.multi().hSet(keys.latest, status.docId, json).publish(keys.channel, json).exec();
}

export async function openDashboard(
  client: Redis,
  keys: StatusKeys,
  onChange: (status: DocStatus) => void,
): Promise<() => Promise<void>> {
  const shownVersion = new Map<string, number>();
  // The snapshot and the live events overlap; the version decides which one is news.
  const show = (status: DocStatus) => {
    if (status.version <= (shownVersion.get(status.docId) ?? 0)) return;
    shownVersion.set(status.docId, status.version);
    onChange(status);
  };

  // Subscribe first, and hold live events back until the snapshot is in.
  let buffered: DocStatus[] | undefined = [];
  const subscriber = client.duplicate();
  // A dropped connection is reported here: without a listener, it would crash the process.
  subscriber.on("error", (error: Error) => console.error(`dashboard: ${error.message}`));
  await subscriber.connect();
  const listener = (message: string) => {
    // Caught here, not left to the error listener: node-redis 6.3 drops the rest of a read when
    // a listener throws, so one failing render would also lose the statuses that came with it.
    try {
      const status = JSON.parse(message) as DocStatus;
      if (buffered) buffered.push(status);
      else show(status);
    } catch (error) {
      console.error(`dashboard: could not show ${message}: ${(error as Error).message}`);
    }
  };

  try {
    await subscriber.subscribe(keys.channel, listener);
    // Anything published before the subscription became active is in the snapshot; anything
    // after it is in the buffer; some statuses are in both.
    const snapshot = await client.hGetAll(keys.latest);
    for (const json of Object.values(snapshot)) show(JSON.parse(json) as DocStatus);
    for (const status of buffered) show(status);
  } catch (error) {
    // A refused subscription, a failed read or a throwing onChange rejects openDashboard():
    // the caller gets no stop(), so nobody else could ever close this subscriber.
    await subscriber.close();
    throw error;
  }
  buffered = undefined;

  return async () => {
    await subscriber.unsubscribe(keys.channel, listener);
    await subscriber.close();
  };
}
