/**
 * Lesson 02: Broadcast status with pub/sub (reference solution).
 */
import type { RedisClientType } from "redis";

/** What createClient() returns with the default options. */
export type Redis = RedisClientType<{}, {}, {}, 3, {}>;

/** Where a document is in the pipeline. */
export type Stage = "uploaded" | "ocr" | "ner" | "classification" | "embedding" | "done";

/** One status event: document `docId` reached `stage` at `at` (milliseconds since 1970). */
export interface StatusEvent {
  docId: string;
  stage: Stage;
  at: number;
}

export async function publishStatus(
  client: Redis,
  channel: string,
  event: StatusEvent,
): Promise<number> {
  // Pub/sub carries strings: the structure travels as JSON.
  return client.publish(channel, JSON.stringify(event));
}

/** Numbers this process's dashboards, so each connection has a name of its own. */
let dashboards = 0;

export async function openDashboard(
  client: Redis,
  channel: string,
  onEvent: (event: StatusEvent) => void,
): Promise<() => Promise<void>> {
  // PUBLISH counts connections, not listeners: each dashboard is its own subscriber only if it
  // has its own connection. duplicate() copies every option, the name too: without a name of
  // its own, every dashboard would show up in CLIENT LIST as the command connection.
  const name = `${client.options?.name ?? "app"}:dashboard-${++dashboards}`;
  const subscriber = client.duplicate({ name });
  // A dropped connection is reported here: without a listener, it would crash the process.
  subscriber.on("error", (error: Error) => console.error(`${name}: ${error.message}`));
  await subscriber.connect();
  const listener = (message: string) => {
    // Caught here, not left to the error listener: node-redis 6.3 drops the rest of a read when
    // a listener throws, so one failing render would also lose the events that came with it.
    try {
      onEvent(JSON.parse(message) as StatusEvent);
    } catch (error) {
      console.error(`${name}: could not show ${message}: ${(error as Error).message}`);
    }
  };
  // subscribe() resolves when Redis has confirmed the subscription: from then on, nothing
  // published on the channel can pass this dashboard by.
  try {
    await subscriber.subscribe(channel, listener);
  } catch (error) {
    // Refused (an account without this channel, say): the caller gets no stop() to close it.
    subscriber.destroy();
    throw error;
  }
  return async () => {
    await subscriber.unsubscribe(channel, listener);
    await subscriber.close();
  };
}
