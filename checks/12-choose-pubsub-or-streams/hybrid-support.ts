/**
 * What lesson 12's check needs around the learner's hybrid: the exercise's shape, fresh names,
 * a dashboard of the check's own on the progress channel, and the latest-state hash, parsed.
 */
import { checkClient, fresh, freshKey, parseJson, type Redis, sameValue, within } from "../kit.ts";

export type Choice = "pubsub" | "streams" | "both";

export interface HybridKeys {
  tasks: string;
  group: string;
  progress: string;
  state: string;
}

export interface Exercise {
  SCENARIOS: Record<string, string>;
  choose(scenario: string): Choice;
  createGroup(client: Redis, keys: HybridKeys): Promise<void>;
  submitTask(client: Redis, keys: HybridKeys, doc: string): Promise<string>;
  workOnce(
    client: Redis,
    keys: HybridKeys,
    consumer: string,
    ocr: (doc: string) => Promise<void>,
    blockMs: number,
  ): Promise<string | undefined>;
}

/** A progress event as the learner's code wrote it: checked field by field, never trusted. */
export interface Event {
  doc?: unknown;
  state?: unknown;
  version?: unknown;
  worker?: unknown;
}

/** Fresh names for every key, the group included: a hard-coded "ocr" finds nothing. */
export function hybridKeys(): HybridKeys {
  return {
    tasks: freshKey("ocr:tasks"),
    group: fresh("ocr"),
    progress: freshKey("ocr:progress"),
    state: freshKey("ocr:state"),
  };
}

export interface Dashboard {
  /** Every JSON object heard on the channel, in order of arrival. */
  events: Event[];
  /** Messages that were not a JSON object. */
  bad: string[];
  /** The events for `doc`, in order of arrival. */
  of(doc: string): Event[];
  /** Resolves once everything published before this call has arrived. */
  settle(): Promise<void>;
}

let connections: Promise<{ subscriber: Redis; publisher: Redis }> | undefined;

/** The check's two connections for its dashboards, opened once: connecting is slow on a busy machine. */
function dashboardConnections(): Promise<{ subscriber: Redis; publisher: Redis }> {
  connections ??= Promise.all([checkClient("progress"), checkClient("marker")]).then(
    ([subscriber, publisher]) => ({ subscriber, publisher }),
  );
  return connections;
}

/** Subscribes the check's own dashboard to `channel` from now on. */
export async function listen(channel: string): Promise<Dashboard> {
  const { subscriber, publisher } = await dashboardConnections();
  const marker = fresh("settled");
  const waiting: (() => void)[] = [];
  const events: Event[] = [];
  const bad: string[] = [];
  await subscriber.subscribe(channel, (message) => {
    if (message === marker) {
      for (const resolve of waiting.splice(0)) resolve();
      return;
    }
    const parsed = parseJson(message);
    if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) {
      events.push(parsed as Event);
    } else {
      bad.push(message);
    }
  });
  return {
    events,
    bad,
    of: (doc) => events.filter((e) => e.doc === doc),
    // Pub/sub keeps the order of one channel: once our marker is back, so is all before it.
    settle: async () => {
      const back = new Promise<void>((resolve) => waiting.push(resolve));
      await publisher.publish(channel, marker);
      await within(back, 3000, "the check's own marker on the progress channel");
    },
  };
}

/** The latest state of `doc` as the hash holds it: the parsed event, or the raw text. */
export async function latest(c: Redis, keys: HybridKeys, doc: string): Promise<unknown> {
  const raw = await c.hGet(keys.state, doc);
  if (raw === null || raw === undefined) return undefined;
  return parseJson(raw) ?? raw;
}

export function stateOf(value: unknown): unknown {
  return typeof value === "object" && value !== null ? (value as Event).state : value;
}

/** Whether the hash holds exactly the last event published for `doc` (key order free). */
export function holdsLastEvent(value: unknown, events: Event[]): boolean {
  return events.length > 0 && sameValue(value, events[events.length - 1]);
}

export function show(value: unknown): string {
  return value === undefined ? "nothing" : JSON.stringify(value);
}
